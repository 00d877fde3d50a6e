"""Time `mfpipe fit` on 100k cells' rows (goal: seconds, not minutes).

A synthetic training table shaped like a large study: 4 keep rates × 31 σ_w² × 40 depths ×
20 seeds = 99,200 cells, each with 4 checkpoints (396,800 rows), accuracies from the rule
"trainable iff depth ≤ 6 ξ_c" plus noise.  Prints the time of each stage and the recovered n.

    .venv/bin/python benchmarks/fit.py [--bootstrap 400] [--seeds 20] [--aggregate-files 100000]

``--aggregate-files N`` also writes N one-cell parquet files (4 checkpoint rows each, the
training-cell columns) and times ``mfpipe aggregate`` merging them (100k: about a minute to
write them first).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import pandas as pd

from mfpipe import fit


def build(seeds: int, rng) -> pd.DataFrame:
    sigma = np.round(np.linspace(1.0, 4.0, 31), 2)
    depths = np.arange(10, 410, 10)
    keep = np.array([1.0, 0.99, 0.98, 0.94])
    checkpoints = np.array([45, 304, 2048, 13780])
    K, S, D, R, C = np.meshgrid(keep, sigma, depths, np.arange(seeds), checkpoints, indexing="ij")
    frame = pd.DataFrame({"keep_rate": K.ravel(), "sigma_w2": S.ravel(), "depth": D.ravel(),
                          "seed": R.ravel(), "step": C.ravel()})
    xi = fit.xi_columns(frame.assign(activation="tanh", sigma_b2=0.05)[
        ["activation", "sigma_w2", "sigma_b2", "keep_rate"]])["xi_c"].to_numpy()
    trainable = frame["depth"].to_numpy() <= 6 * xi
    frame["train_accuracy"] = np.where(trainable, 0.95, 0.1) + rng.normal(0, 0.03, len(frame))
    return frame.assign(dataset="mnist", optimizer="sgd", sigma_b2=0.05, activation="tanh")


def time_aggregate(n_files: int) -> None:
    import resource

    import pyarrow as pa
    import pyarrow.parquet as pq

    from mfpipe.aggregate import aggregate, collect_inputs

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        steps = pa.array([45, 304, 2048, 13780], pa.int64())
        for i in range(n_files):
            folder = os.path.join(tmp, "cells", str(i // 1000))
            os.makedirs(folder, exist_ok=True)
            const = {"cell_id": f"{i:016x}", "dataset": "mnist", "optimizer": "sgd", "activation": "tanh",
                     "keep_rate": 1.0, "sigma_w2": 1.0 + (i % 31) * 0.1, "sigma_b2": 0.05,
                     "depth": 10 + 10 * ((i // 31) % 25), "width": 400, "seed": i // 775}
            table = pa.table({**{k: [v] * 4 for k, v in const.items()}, "step": steps,
                              "train_accuracy": [0.5] * 4, "diverged": [False] * 4})
            pq.write_table(table, os.path.join(folder, f"{i}.parquet"))
        print(f"aggregate: wrote {n_files:,} cell files in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        summary = aggregate(collect_inputs([os.path.join(tmp, "cells")]), os.path.join(tmp, "training.parquet"))
        elapsed = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"aggregate: {summary['files']:,} files, {summary['rows']:,} rows -> one parquet in "
              f"{elapsed:.1f} s ({1e3 * elapsed / n_files:.2f} ms per file); peak RSS of this process "
              f"{peak:.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", type=int, default=400)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--aggregate-files", type=int, default=0,
                        help="also time mfpipe aggregate on this many cell files (0: skip)")
    args = parser.parse_args()
    if args.aggregate_files:
        time_aggregate(args.aggregate_files)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    frame = build(args.seeds, rng)
    cells = frame.drop_duplicates(["keep_rate", "sigma_w2", "depth", "seed"]).shape[0]
    print(f"table: {cells:,} cells, {len(frame):,} rows (built in {time.perf_counter() - t0:.1f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "training.parquet")
        frame.to_parquet(path, index=False)
        out = os.path.join(tmp, "fit.parquet")
        t_read = time.perf_counter()
        table = pd.read_parquet(path)
        t_read = time.perf_counter() - t_read
        t_fit = time.perf_counter()
        result = fit.fit_table(table, n_boot=args.bootstrap)
        t_fit = time.perf_counter() - t_fit
        from mfpipe.cli import main as cli
        t_cli = time.perf_counter()
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):  # the summary it prints
            code = cli(["fit", path, "-o", out, "--bootstrap", str(args.bootstrap)])
        t_cli = time.perf_counter() - t_cli
    per_panel = result.fits[~result.fits["pooled"]]
    panels = per_panel["panel"].nunique()
    xi_c = per_panel[per_panel["form"] == "n*xi_c"]
    pooled = result.fits[result.fits["pooled"] & (result.fits["form"] == "n*xi_c")].iloc[0]
    print(f"read parquet: {t_read:.2f} s")
    print(f"fit_table ({panels} panels × {result.fits['form'].nunique()} forms, "
          f"{args.bootstrap} bootstrap replicates): {t_fit:.2f} s")
    print(f"total for {cells:,} cells' rows: {t_read + t_fit:.2f} s  (goal: seconds)")
    print(f"whole `mfpipe fit` command in-process (read, fit, write 5 outputs, print summary): {t_cli:.2f} s")
    print(f"n for ξ_c over the panels (truth 6): median {xi_c['n'].median():.3f}, "
          f"range {xi_c['n'].min():.3f}–{xi_c['n'].max():.3f}; pooled {pooled['n']:.3f} "
          f"[{pooled['n_low']:.3f}, {pooled['n_high']:.3f}]")
    return code


if __name__ == "__main__":
    sys.exit(main())
