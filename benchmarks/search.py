"""Boundary search vs full grid, measured side by side in one run:

1. ``presets`` — each preset's searchable training studies (config/*.yaml, depth an axis),
   searched with a synthetic trainability oracle through the real planner (mfpipe.search):
   trainable iff depth ≤ n·ξ_c (n = 6, times a log-normal factor per column), seeds flipping
   near the boundary and a few columns with a hole (non-monotone); cells and rounds of the
   search against the full grid, and how many columns get the full grid's bracket;
2. ``cpu`` — a CPU-sized study trained for real here (mnist5k, 12 σ_w², 22 depths 2–64 spaced
   ~1.15× apart, ρ ∈ {1, 0.98}, 2 seeds): the full grid, then the search in rounds, each in one process (`mfpipe train-cell
   --cells-file` stacks a round's cells into bundles by depth); cells trained, wall time,
   columns with the same bracket (goal ≥ 90%), the fitted n of n·ξ_c with its interval per ρ
   (goal: overlapping), and the ratio of cells (goal ≥ 5×).

    .venv/bin/python benchmarks/search.py                   # both (~10 min here)
    .venv/bin/python benchmarks/search.py --only presets    # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mfpipe import search  # noqa: E402
from mfpipe.grid import build_studies, key_without, load_config  # noqa: E402

MFPIPE = str(Path(sys.executable).parent / "mfpipe")


def brackets(plan) -> dict:
    return {c.key: (c.state, c.bracket) for c in plan.columns}


def full_grid_plan(study, results):
    """The columns as the full grid sees them: every cell known."""
    columns = search.columns_of(study, study.search["n0"])
    return search.plan_round(study, columns, results, study.search, search.fit_options({}), 0)


# ----------------------------------------------------------------------------- presets

def synthetic_oracle(study, rng, n=6.0, spread=0.15, flip_near=0.1, holes=0.03):
    """cell -> rows: trainable iff depth ≤ n·ξ_c·exp(N(0, spread)) of its column; within 10%
    of that boundary a seed flips with probability 0.3; a ``holes`` fraction of columns fails
    at one depth well below its boundary."""
    columns = search.columns_of(study, study.search["n0"])
    limit = {c.key: n * min(c.xi_c, 1e9) * float(np.exp(rng.normal(0, spread))) for c in columns}
    hole = {}
    for c in columns:
        inside = [d for d in c.depths if d < 0.7 * limit[c.key]]
        if len(inside) > 2 and rng.random() < holes:
            hole[c.key] = inside[len(inside) // 2]
    truth_rng = np.random.default_rng(rng.integers(2**32))
    fixed = {}

    def oracle(cell):
        if cell.key not in fixed:
            key = key_without(cell.key, ("depth", "seed"))
            depth = cell.params["depth"]
            ok = depth <= limit[key] and depth != hole.get(key)
            if abs(np.log(depth / limit[key])) < flip_near and truth_rng.random() < 0.3:
                ok = not ok
            fixed[cell.key] = search.oracle_rows(cell, ok, truth_rng)
        return fixed[cell.key]

    return oracle


def bench_presets(seed: int) -> None:
    print("== presets: synthetic oracle (trainable iff L ≤ 6·ξ_c·noise, seed flips near the "
          "boundary, ~3% of columns with a hole), real planner")
    print(f"{'preset':<22} {'study':<18} {'grid cells':>10} {'searched':>9} {'ratio':>6} "
          f"{'rounds':>6} {'same bracket':>13} {'non-mono':>8} {'disagree':>8}")
    for path in sorted((REPO / "config").glob("*.yaml")):
        if path.name == "config.yaml":
            continue
        config = load_config(path)
        for name, spec in config["studies"].items():
            if spec.get("kind") != "train" or spec.get("extra_cells"):
                continue
            spec["search"] = True
            study = build_studies({"studies": {name: spec}})[name]
            if study.search is None or "depth" not in study.axes:
                continue
            oracle = synthetic_oracle(study, np.random.default_rng(seed))
            start = time.perf_counter()
            trained = {}
            plans = search.simulate(study, study.search, search.fit_options({}), oracle, trained)
            seconds = time.perf_counter() - start
            full = full_grid_plan(study, {c.key: oracle(c) for c in study.cells})
            got, want = brackets(plans[-1]), brackets(full)
            same = sum(got[k] == want[k] for k in want)
            s = plans[-1].summary()
            print(f"{path.stem:<22} {name:<18} {len(study.cells):>10,} {len(trained):>9,} "
                  f"{len(study.cells) / max(len(trained), 1):>5.1f}× {len(plans) - 1:>6} "
                  f"{same:>6}/{len(want):<6} {s['non_monotone']:>8} {s['seeds_disagree']:>8}"
                  f"   (planner {seconds:.1f} s)")


# ----------------------------------------------------------------------------- real CPU

CPU_STUDY = {
    "kind": "train", "search": True,
    "grid": {"dataset": "mnist5k", "activation": "tanh", "width": 32,
             "depth": [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 20, 23, 26, 30, 35, 40, 46,
                       53, 64],
             "sigma_w2": [0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.76, 2.0, 2.4, 3.0, 4.0, 6.0],
             "sigma_b2": 0.05, "keep_rate": [1, 0.98], "seed": [0, 1]},
    "settings": {"optimizer": "sgd", "lr": 0.01, "batch_size": 64, "steps": 200,
                 "eval_size": 500},
}


def train_cells(cells, workdir: Path, data_dir: str) -> float:
    """Train ``cells`` in one process (`train-cell --cells-file` stacks them into bundles by
    depth), as one round or the whole grid; seconds."""
    start = time.perf_counter()
    cells_file = workdir / "cells.json"
    cells_file.write_text(json.dumps([{**c.params, "output": c.path} for c in cells]))
    subprocess.run([MFPIPE, "train-cell", "--cells-file", str(cells_file), "--data-dir",
                    data_dir, "--device", "cpu", "--threads", "1"], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def fitted_n(study, results) -> pd.DataFrame:
    from mfpipe.fit import fit_table

    rows = pd.concat(list(results.values()), ignore_index=True)
    fits = fit_table(rows, step="last", forms=["n*xi_c"], n_boot=200).fits
    fits = fits[~fits["pooled"]]
    return fits.set_index("keep_rate")[["n", "n_low", "n_high", "n_observed"]]


def bench_cpu(data_dir: str) -> None:
    print("\n== cpu: a CPU-sized study trained here, full grid then search (1 process at a time)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        study = build_studies({"studies": {"cpu": CPU_STUDY}})["cpu"]
        columns = search.columns_of(study, study.search["n0"])
        full_seconds = train_cells(study.cells, work, data_dir)
        full = search.load_results(study, columns, str(work))
        assert len(full) == len(study.cells)
        full_plan = full_grid_plan(study, full)
        # the search, in a fresh directory: rounds of the real planner on real results
        search_dir = work / "search"
        search_dir.mkdir()
        searched, rounds, search_seconds = [], 0, 0.0
        while True:
            found = search.load_results(study, columns, str(search_dir))
            start = time.perf_counter()
            plan = search.plan_round(study, columns, found, study.search,
                                     search.fit_options({}), rounds)
            search_seconds += time.perf_counter() - start
            if not plan.cells:
                break
            search_seconds += train_cells(plan.cells, search_dir, data_dir)
            searched += plan.cells
            rounds += 1
        got, want = brackets(plan), brackets(full_plan)
        same = sum(got[k] == want[k] for k in want)
        per_column = pd.Series([key_without(c.key, ("depth", "seed")) for c in searched])
        spent = per_column.value_counts()
        print(f"search cells per column: median {spent.median():.0f}, min {spent.min()}, "
              f"max {spent.max()}; flagged: {plan.summary()['seeds_disagree']} seeds disagree, "
              f"{plan.summary()['non_monotone']} non-monotone")
        print(f"cells trained   full grid {len(study.cells):>4}   search {len(searched):>4}   "
              f"ratio {len(study.cells) / len(searched):.1f}× (goal ≥ 5×), {rounds} rounds")
        print(f"wall time       full grid {full_seconds:6.1f} s   search {search_seconds:6.1f} s"
              f"   ratio {full_seconds / search_seconds:.1f}×")
        print(f"same bracket    {same}/{len(want)} columns ({100 * same / len(want):.0f}%, "
              f"goal ≥ 90%)")
        for key in want:
            if got[key] != want[key]:
                print(f"    differs: {key}: full {want[key]}, search {got[key]}")
        fits_full, fits_search = fitted_n(study, full), fitted_n(study, found)
        for rho in fits_full.index:
            a, b = fits_full.loc[rho], fits_search.loc[rho]
            overlap = max(a.n_low, b.n_low) <= min(a.n_high, b.n_high)
            print(f"n·ξ_c, ρ = {rho:g}: full n = {a.n:.2f} [{a.n_low:.2f}, {a.n_high:.2f}] "
                  f"({int(a.n_observed)} columns)   search n = {b.n:.2f} [{b.n_low:.2f}, "
                  f"{b.n_high:.2f}] ({int(b.n_observed)} columns)   "
                  f"{'overlapping' if overlap else 'NOT overlapping'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("presets", "cpu"), default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=str(REPO / "data"))
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if args.only in (None, "presets"):
        bench_presets(args.seed)
    if args.only in (None, "cpu"):
        bench_cpu(os.path.abspath(args.data_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
