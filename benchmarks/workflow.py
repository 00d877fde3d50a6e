"""Workflow benchmarks, measured side by side in one run:

1. DAG / dry-run time of a ~100k-cell grid (`snakemake -n`) with bundles (the default), with
   bundles but without common.smk's signature cache (what that patch of Snakemake internals
   still buys), and with one job per cell (`resources.bundle_size: 1`), next to an empty
   one-rule Snakefile with one job per cell (goal: bundles ≤ 10 s here), with peak memory;
2. no-op rerun time (`snakemake` with everything up to date) of a finished 10k-cell grid (fake
   outputs) against the one-rule Snakefile with 10k finished outputs;
3. pipeline efficiency of the default run (config/config.yaml, profiles/local, from nothing):
   time inside training steps (Σ train_time_s of the cells) / (wall time × cores), for the
   whole run (cells → aggregate → fit → figures) and for its cell phase, next to the per-cell
   overhead with and without the warm worker pool;
4. the default pipeline from nothing with one job per cell vs bundles (goal ≥ 1.5× faster).

    .venv/bin/python benchmarks/workflow.py                 # everything (~25 min here)
    .venv/bin/python benchmarks/workflow.py --only bundles
    .venv/bin/python benchmarks/workflow.py --only dag --cells 30000
    .venv/bin/python benchmarks/workflow.py --only efficiency --no-pool-sample 12

Everything runs in a temporary copy of the workflow; the checkout's results are not touched.
Other jobs on the machine slow every number; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = str(BIN / "snakemake")
MFPIPE = str(BIN / "mfpipe")


def copy_workflow(dest: Path, config: dict | None = None) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("workflow", "config"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    if config is not None:
        (dest / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB of that command, output tail) of one command."""
    with tempfile.TemporaryFile(mode="w+") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{text[-4000:]}")
    return seconds, usage.ru_maxrss / 1024.0, text


def job_count(text: str) -> int:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            return int(parts[1])
    return 0


def baseline_snakefile(directory: Path, n_jobs: int) -> Path:
    """An 'empty' workflow: one rule, `n_jobs - 1` cells plus the target rule."""
    directory.mkdir(parents=True, exist_ok=True)
    snakefile = directory / "Snakefile"
    snakefile.write_text(
        f"N = {n_jobs - 1}\n"
        "rule all:\n"
        "    input: expand('cells/{i}.txt', i=range(N))\n"
        "rule cell:\n"
        "    output: 'cells/{i}.txt'\n"
        "    wildcard_constraints: i=r'\\d+'\n"
        "    shell: 'touch {output}'\n")
    return snakefile


def big_config() -> dict:
    """99,200 training cells: 25 depths × 31 σ_w² × 4 ρ × 2 datasets × 4 seeds × 2 optimizers
    × 2 inits (Huang et al.'s grid, times seeds)."""
    return {
        "studies": {"big": {"kind": "train",
                            "grid": {"dataset": ["mnist", "cifar10"], "activation": "tanh",
                                     "init": ["gaussian", "orthogonal"], "optimizer": ["sgd", "rmsprop"],
                                     "width": 400, "depth": "10:250:25", "sigma_w2": "1:4:31",
                                     "sigma_b2": 0.05, "keep_rate": [1, 0.99, 0.98, 0.95],
                                     "seed": [0, 1, 2, 3]},
                            "settings": {"lr": 0.003, "batch_size": 1000, "steps": 10000,
                                         "checkpoints": [1000, 10000]}}},
    }


def sized_config(n_target: int) -> dict:
    """The big grid, or (below 99,200 cells) 25 depths × 25 σ_w² × 4 ρ × k seeds on one dataset."""
    config = big_config()
    if n_target >= 99_200:
        return config
    grid = config["studies"]["big"]["grid"]
    grid.update(dataset="mnist", init="gaussian", optimizer="sgd", sigma_w2="1:4:25",
                seed=list(range(max(1, round(n_target / 2500)))))
    return config


# ----------------------------------------------------------------------------- 1. DAG

def bench_dag(n_cells: int, tmp: Path) -> None:
    """`snakemake -n` of the grid with bundles (the default) and with one job per cell
    (resources.bundle_size: 1), and of a one-rule Snakefile with as many jobs as the latter."""
    rows = []
    for label, size, cache in (("bundles (default)", None, True),
                               ("bundles, no sig. cache", None, False),
                               ("one job per cell", 1, True)):
        config = sized_config(n_cells)
        if size is not None:
            config["resources"] = {"bundle_size": size}
        work = copy_workflow(tmp / f"dag-{size}-{cache}", config)
        if not cache:  # what common.smk's patch of Snakemake's signature look-ups buys
            common = work / "workflow" / "rules" / "common.smk"
            text = common.read_text()
            assert "\n_remember_function_params()\n" in text
            common.write_text(text.replace("\n_remember_function_params()\n", "\n"))
        cmd = [SNAKEMAKE, "-n", "--cores", "2", "--quiet", "rules", "-s", str(work / "Snakefile"),
               "-d", str(work)]
        seconds, peak_mb, text = timed(cmd, work)
        rows.append((label, seconds, peak_mb, job_count(text), training_jobs(text)))
    base_dir = tmp / "dag-baseline"
    baseline_snakefile(base_dir, rows[2][3])
    base, base_mb, base_text = timed([SNAKEMAKE, "-n", "--cores", "2", "--quiet", "rules", "-d",
                                      str(base_dir)], base_dir)
    cells = sum(len(s.cells) for s in _studies(sized_config(n_cells)).values())
    print(f"1. dry-run DAG of {cells:,} training cells:")
    for label, seconds, peak_mb, jobs, train_jobs in rows:
        print(f"   {label:22s} {seconds:7.1f} s   peak RSS {peak_mb:7.0f} MB   {jobs:,} jobs "
              f"({train_jobs:,} training)")
    print(f"   one-rule Snakefile     {base:7.1f} s   peak RSS {base_mb:7.0f} MB   "
          f"({job_count(base_text):,} jobs)")
    print(f"   bundles vs one job per cell: {rows[2][1] / rows[0][1]:.1f}× faster "
          f"(goal: bundles ≤ 10 s here); the signature cache saves "
          f"{rows[1][1] - rows[0][1]:.1f} s")


def training_jobs(text: str) -> int:
    """Training jobs in a `snakemake -n --quiet rules` table (train_bundle and train_cell)."""
    total = 0
    for line in text[text.index("Job stats:"):].splitlines():
        parts = line.split()
        if parts[:1] == ["total"]:
            break  # the table may be printed twice
        if len(parts) == 2 and parts[1].isdigit() and (
                parts[0] in ("train_cell", "train_bundle")):
            total += int(parts[1])
    return total


def _studies(config: dict) -> dict:
    from mfpipe.grid import build_studies

    return build_studies(config)


# ----------------------------------------------------------------------------- 2. no-op

def bench_noop(n_cells: int, tmp: Path) -> None:
    config = sized_config(n_cells)
    config.update({"theory": {"enabled": False, "map": {"enabled": False},
                              "iterates": {"enabled": False}},
                   "fit": {"enabled": False}, "figures": {"enabled": False}})
    work = copy_workflow(tmp / "noop", config)
    listing = subprocess.run([MFPIPE, "cells", "--configfile", str(work / "config" / "config.yaml")],
                             capture_output=True, text=True, check=True, cwd=work).stdout.split()
    # fake finished outputs, oldest first: data, cells, the cell list, the aggregate
    for dataset in ("mnist", "cifar10"):
        fake = work / "data" / "mfpipe-cache" / f"{dataset}-v1.npz"
        fake.parent.mkdir(parents=True, exist_ok=True)
        fake.write_bytes(b"")
    time.sleep(0.05)
    for path in listing:
        target = work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
    for study in _studies(config).values():  # bundle stamps, newer than their members
        for bundle in study.bundles:
            stamp = work / bundle.stamp
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_bytes(b"")
    time.sleep(0.05)
    (work / "results" / "cells" / "big.cells.txt").write_text("\n".join(listing) + "\n")
    time.sleep(0.05)
    (work / "results" / "training.parquet").write_bytes(b"")
    cmd = [SNAKEMAKE, "--profile", str(REPO / "profiles" / "local"), "-s", str(work / "Snakefile"),
           "-d", str(work)]
    ours, ours_mb, text = timed(cmd, work)
    assert "Nothing to be done" in text, text
    base_dir = tmp / "noop-baseline"
    baseline_snakefile(base_dir, len(listing) + 1)
    (base_dir / "cells").mkdir(exist_ok=True)
    for i in range(len(listing)):
        (base_dir / "cells" / f"{i}.txt").write_bytes(b"")
    base, base_mb, base_text = timed([SNAKEMAKE, "--cores", "2", "-d", str(base_dir)], base_dir)
    assert "Nothing to be done" in base_text, base_text
    print(f"2. no-op rerun of a finished {len(listing):,}-cell grid (fake outputs):")
    print(f"   mfpipe workflow        {ours:7.1f} s   peak RSS {ours_mb:7.0f} MB")
    print(f"   one-rule Snakefile     {base:7.1f} s   peak RSS {base_mb:7.0f} MB")
    print(f"   ratio                  {ours / base:7.2f}×")


# ----------------------------------------------------------------------------- 3. efficiency

def bench_efficiency(tmp: Path, no_pool_sample: int) -> None:
    import pyarrow.parquet as pq

    work = copy_workflow(tmp / "default")
    env = dict(os.environ, MFPIPE_POOL_DIR=str(tmp / "pool"), MFPIPE_POOL_IDLE="20")
    cmd = [SNAKEMAKE, "--profile", str(REPO / "profiles" / "local"), "-s", str(work / "Snakefile"),
           "-d", str(work)]
    cores = len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    wall, _, _ = timed(cmd, work, env)
    training = pq.read_table(work / "results" / "training.parquet").to_pandas()
    per_cell = training.drop_duplicates("cell_id")
    train_s = float(per_cell["train_time_s"].sum())
    inside_cell_s = float(per_cell["wall_time_s"].sum())
    gradients = pq.read_table(work / "results" / "gradients.parquet").to_pandas()
    grad_s = float(gradients.drop_duplicates("cell_id")["wall_time_s"].sum())
    # the cell phase: from the first cell's start to the last cell's end (log file times)
    logs = sorted([*(work / "logs" / "cells").rglob("*.log"), *(work / "logs" / "bundles").rglob("*.log")],
                  key=lambda p: p.stat().st_mtime)
    starts = [p.stat().st_mtime for p in logs]
    first_start = min(_started(work, per_cell))
    cell_phase = max(starts) - first_start
    n = len(per_cell)
    print(f"3. pipeline efficiency of the default run ({n} training + "
          f"{gradients['cell_id'].nunique()} gradient cells, {cores} cores, load avg at start "
          f"{load:.1f}):")
    print(f"   wall time of `snakemake --profile profiles/local` from nothing: {wall:7.1f} s")
    print(f"   time inside training steps (Σ train_time_s):                 {train_s:7.1f} s")
    print(f"   inside the cells (Σ wall_time_s: data, init, eval, writing):  {inside_cell_s:7.1f} s")
    print(f"   gradient cells (Σ wall_time_s):                               {grad_s:7.1f} s")
    print(f"   efficiency, whole run   = Σ train / (wall × {cores})        = "
          f"{train_s / (wall * cores):.3f}   (goal ≥ 0.9)")
    print(f"   efficiency, cell phase  = Σ train / (cell phase × {cores})  = "
          f"{train_s / (cell_phase * cores):.3f}   (cell phase {cell_phase:.1f} s)")
    print(f"   outside the cell phase (Snakemake start, data, pool start, theory, aggregate, fit, "
          f"figures): {wall - cell_phase:.1f} s of wall time")
    print(f"   per-cell overhead in the warm pool: "
          f"{(cell_phase * cores - train_s) / n:.2f} s per training cell "
          f"(start-up, data, eval, write, Snakemake)")
    if no_pool_sample:
        sample = per_cell.head(no_pool_sample)
        overheads = []
        for _, row in sample.iterrows():
            args = ["train-cell", "--device", "cpu", "--data-dir", str(work / "data"),
                    "-o", str(tmp / "nopool.parquet")]
            for name in ("dataset", "activation", "width", "depth", "sigma_w2", "sigma_b2",
                         "keep_rate", "optimizer", "lr", "batch_size", "steps", "seed",
                         "eval_size"):
                args += [f"--{name.replace('_', '-')}", str(row[name])]
            args += ["--checkpoints", str(row["checkpoints"])]
            start = time.perf_counter()
            subprocess.run([MFPIPE, *args], check=True, capture_output=True,
                           env=dict(env, OMP_NUM_THREADS="1"))
            seconds = time.perf_counter() - start
            got = pq.read_table(tmp / "nopool.parquet").to_pandas()
            overheads.append(seconds - float(got["train_time_s"].iloc[0]))
        mean = sum(overheads) / len(overheads)
        print(f"   same cells as one process each (no pool), {len(overheads)} sampled: "
              f"{mean:.2f} s overhead per cell → whole-run efficiency would be ≈ "
              f"{train_s / (train_s + n * mean / 1.0 + (wall * cores - cell_phase * cores)) :.3f}")


def bench_bundles(tmp: Path) -> None:
    """The default pipeline from nothing, one job per cell (bundle_size 1) vs bundles."""
    import yaml

    rows = []
    for label, size in (("one job per cell", 1), ("bundles (default)", None)):
        config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
        if size is not None:
            config.setdefault("resources", {})["bundle_size"] = size
        work = copy_workflow(tmp / f"run-{size}", config)
        env = dict(os.environ, MFPIPE_POOL_DIR=str(tmp / f"pool-{size}"), MFPIPE_POOL_IDLE="20")
        cmd = [SNAKEMAKE, "--profile", str(REPO / "profiles" / "local"), "-s",
               str(work / "Snakefile"), "-d", str(work)]
        wall, _, text = timed(cmd, work, env)
        rows.append((label, wall, job_count(text)))
        print(f"   {label:22s} {wall:7.1f} s", flush=True)
    print(f"4. default pipeline (`snakemake --profile profiles/local` from nothing): one job per "
          f"cell {rows[0][1]:.1f} s, bundles {rows[1][1]:.1f} s: {rows[0][1] / rows[1][1]:.2f}× "
          f"faster (goal ≥ 1.5×)")


def _started(work: Path, per_cell) -> list[float]:
    import datetime as dt

    out = []
    for text in per_cell["started_at"]:
        out.append(dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
                   .replace(tzinfo=dt.timezone.utc).timestamp())
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("dag", "noop", "efficiency", "bundles"), action="append")
    parser.add_argument("--cells", type=int, default=100_000, help="cells of the DAG benchmark")
    parser.add_argument("--noop-cells", type=int, default=10_000)
    parser.add_argument("--no-pool-sample", type=int, default=8,
                        help="cells rerun as one process each for the comparison (0: skip)")
    args = parser.parse_args(argv)
    parts = args.only or ["dag", "noop", "efficiency", "bundles"]
    print(f"snakemake {subprocess.run([SNAKEMAKE, '--version'], capture_output=True, text=True).stdout.strip()}, "
          f"{len(os.sched_getaffinity(0))} cores, load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mfpipe-bench-workflow-") as tmp:
        tmp = Path(tmp)
        if "dag" in parts:
            bench_dag(args.cells, tmp)
            sys.stdout.flush()
        if "noop" in parts:
            bench_noop(args.noop_cells, tmp)
            sys.stdout.flush()
        if "efficiency" in parts:
            bench_efficiency(tmp, args.no_pool_sample)
            sys.stdout.flush()
        if "bundles" in parts:
            bench_bundles(tmp)
        from mfpipe.pool import server_pids

        for pid in server_pids(tmp / "pool") if (tmp / "pool").is_dir() else []:
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
