"""Time `mfpipe fit` on 100k cells' rows (goal: seconds, not minutes).

A synthetic training table shaped like a large study: 4 keep rates × 31 σ_w² × 40 depths ×
20 seeds = 99,200 cells, each with 4 checkpoints (396,800 rows), accuracies from the rule
"trainable iff depth ≤ 6 ξ_c" plus noise.  Prints the time of each stage and the recovered n.

    .venv/bin/python benchmarks/fit.py [--bootstrap 400] [--seeds 20]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", type=int, default=400)
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
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
    panels = result.fits["panel"].nunique()
    xi_c = result.fits[result.fits["form"] == "n*xi_c"]
    print(f"read parquet: {t_read:.2f} s")
    print(f"fit_table ({panels} panels × {result.fits['form'].nunique()} forms, "
          f"{args.bootstrap} bootstrap replicates): {t_fit:.2f} s")
    print(f"total for {cells:,} cells' rows: {t_read + t_fit:.2f} s  (goal: seconds)")
    print(f"whole `mfpipe fit` command in-process (read, fit, write 5 outputs, print summary): {t_cli:.2f} s")
    print(f"n for ξ_c over the panels (truth 6): median {xi_c['n'].median():.3f}, "
          f"range {xi_c['n'].min():.3f}–{xi_c['n'].max():.3f}")
    return code


if __name__ == "__main__":
    sys.exit(main())
