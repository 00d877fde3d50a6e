"""Where the wall time of a training cell goes, and how fast its training steps are.

    .venv/bin/python benchmarks/cell.py                       # L=20, N=128 and N=256, 500 steps, mnist5k
    .venv/bin/python benchmarks/cell.py --width 256 --depth 20 --steps 500 --cells 8

For each configuration it runs `mfpipe train-cell` in a fresh process (exactly the CLI code path)
and splits the wall time measured from outside into: process start (interpreter up to the first
line), imports (torch + mfpipe), data loading, training steps, evaluation at checkpoints,
writing the parquet, and interpreter exit.  Then it times, in this same run and with the same
thread count, plain matmuls of exactly the shapes of a training step (forward X·Wᵀ, backward G·W
and Gᵀ·X per layer) and reports the training steps' achieved FLOP/s against them.

``--cells K`` also runs K cells through one process (``--cells-file``) to show how start-up is
amortised when the workflow batches cells.
Goals (issue #3): training ≥ 80% of a ~10-second cell's wall time; step FLOP/s ≥ 50% of the
matmul figure for N ≥ 256, L ≥ 20.
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

CHILD = r"""
import sys, time, json
t_first = time.time()
from mfpipe.cli import main
import mfpipe.train  # what `mfpipe train-cell` imports (torch, data, nets)
import mfpipe.cells as cells
t_imported = time.time()
# `mfpipe` ends its process with os._exit right after writing (mfpipe.cells.fast_exit_if_entry_point,
# forced here by MFPIPE_FAST_EXIT=1): stamp the moment main() reaches it, then let it exit
fast_exit = cells.fast_exit_if_entry_point
def stamp_then_exit():
    print(json.dumps({"t_first": t_first, "t_imported": t_imported, "t_done": time.time()}), file=sys.stderr)
    fast_exit()
cells.fast_exit_if_entry_point = stamp_then_exit
sys.exit(main(sys.argv[1:]))
"""


def cell_args(a, out: Path, data_dir: Path, steps: int | None = None) -> list[str]:
    return ["train-cell", "--dataset", a.dataset, "--depth", str(a.depth), "--width", str(a.width),
            "--sigma-w2", "1.76", "--batch-size", str(a.batch_size), "--steps", str(steps or a.steps),
            "--checkpoints", a.checkpoints, "--lr", "0.01", "--device", "cpu", "--data-dir", str(data_dir),
            "--threads", str(a.threads), "-o", str(out)]


def run_child(argv: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MFPIPE_FAST_EXIT": "1"}
    t_launch = time.time()
    proc = subprocess.run([sys.executable, "-c", CHILD, *argv], env=env, capture_output=True, text=True)
    t_exit = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"cell failed:\n{proc.stderr}")
    stamps = json.loads(proc.stderr.strip().splitlines()[-1])
    return {"t_launch": t_launch, "t_exit": t_exit, **stamps}


def step_flops(in_features: int, width: int, depth: int, out_features: int, batch: int) -> float:
    dims = [in_features] + [width] * (depth - 1) + [out_features]
    flops = 0.0
    for l in range(depth):
        mm = 2.0 * batch * dims[l] * dims[l + 1]
        flops += mm * (2 if l == 0 else 3)  # forward, grad W, grad input (not for the data)
    return flops


def matmul_flops_per_s(in_features: int, width: int, depth: int, out_features: int, batch: int,
                       threads: int, seconds: float = 2.0) -> float:
    """The same matmuls as one training step, nothing else, float32."""
    import torch

    torch.set_num_threads(threads)
    dims = [in_features] + [width] * (depth - 1) + [out_features]
    xs = [torch.randn(batch, dims[l]) for l in range(depth)]
    ws = [torch.randn(dims[l + 1], dims[l]) for l in range(depth)]
    gs = [torch.randn(batch, dims[l + 1]) for l in range(depth)]

    def one_step():
        for l in range(depth):
            torch.mm(xs[l], ws[l].t())
            torch.mm(gs[l].t(), xs[l])
            if l:
                torch.mm(gs[l], ws[l])

    for _ in range(3):
        one_step()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        one_step()
        n += 1
    return n * step_flops(in_features, width, depth, out_features, batch) / (time.perf_counter() - start)


def report_single(a, data_dir: Path, tmp: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp / f"cell-{a.width}-{a.depth}.parquet"
    n_in = 784 if "mnist" in a.dataset else 64
    # the matmul reference is timed right before and right after the cell (the machine may be
    # shared); the better of the two is used, so the ratio is conservative
    reference_before = matmul_flops_per_s(n_in, a.width, a.depth, 10, a.batch_size, a.threads)
    stamps = run_child(cell_args(a, out, data_dir), a.threads)
    reference_after = matmul_flops_per_s(n_in, a.width, a.depth, 10, a.batch_size, a.threads)
    row = pq.read_table(out).to_pylist()[-1]
    wall = stamps["t_exit"] - stamps["t_launch"]
    inside = stamps["t_done"] - stamps["t_imported"]  # main(): parse, cell, write
    cell_other = row["wall_time_s"] - row["data_time_s"] - row["train_time_s"] - row["eval_time_s"]
    parts = {
        "process start": stamps["t_first"] - stamps["t_launch"],
        "imports": stamps["t_imported"] - stamps["t_first"],
        "data loading": row["data_time_s"],
        "training steps": row["train_time_s"],
        "evaluation": row["eval_time_s"],
        "cell setup (net, init)": cell_other,
        "writing + CLI": inside - row["wall_time_s"],
        "interpreter exit": stamps["t_exit"] - stamps["t_done"],
    }
    print(f"\n== train cell: {a.dataset}, L={a.depth}, N={a.width}, batch {a.batch_size}, {a.steps} steps, "
          f"checkpoints {a.checkpoints}, {a.threads} thread(s)")
    print(f"wall time {wall:.2f} s")
    for name, seconds in parts.items():
        print(f"  {name:<24s} {seconds:7.3f} s  {100 * seconds / wall:5.1f} %")
    train_share = parts["training steps"] / wall
    flops_step = step_flops(n_in, a.width, a.depth, 10, a.batch_size)
    achieved = flops_step * a.steps / row["train_time_s"]
    reference = max(reference_before, reference_after)
    print(f"training share of wall time: {100 * train_share:.1f} %  (goal ≥ 80 % for a ~10 s cell)")
    print(f"training steps: {a.steps / row['train_time_s']:.1f} steps/s, {achieved / 1e9:.2f} GFLOP/s; "
          f"plain matmuls of the same shapes: {reference / 1e9:.2f} GFLOP/s (before {reference_before / 1e9:.2f}, "
          f"after {reference_after / 1e9:.2f}); "
          f"ratio {100 * achieved / reference:.1f} %  (goal ≥ 50 % for N ≥ 256, L ≥ 20)")


def report_batch(a, data_dir: Path, tmp: Path) -> None:
    import pyarrow.parquet as pq

    cells_file = tmp / "cells.jsonl"
    outs = [tmp / f"batch-{i}.parquet" for i in range(a.cells)]
    cells_file.write_text("\n".join(json.dumps({"seed": i, "output": str(o)}) for i, o in enumerate(outs)))
    argv = cell_args(a, tmp / "unused.parquet", data_dir)
    argv = argv[: argv.index("-o")] + ["--cells-file", str(cells_file)]
    stamps = run_child(argv, a.threads)
    wall = stamps["t_exit"] - stamps["t_launch"]
    rows = [pq.read_table(o).to_pylist()[-1] for o in outs]
    train = sum(r["train_time_s"] for r in rows)
    evals = sum(r["eval_time_s"] for r in rows)
    print(f"\n== {a.cells} cells in one process (--cells-file): wall {wall:.2f} s, training steps "
          f"{train:.2f} s = {100 * train / wall:.1f} %, evaluation {100 * evals / wall:.1f} %, "
          f"training + evaluation {100 * (train + evals) / wall:.1f} %")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--width", type=int, nargs="*", default=[128, 256])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--checkpoints", default="45,304")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is robust on a shared machine; CI runners are noisy)")
    parser.add_argument("--cells", type=int, default=0, help="also run this many cells in one process")
    parser.add_argument("--data-dir", default=None, help="default: a temporary directory (cache built first)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        data_dir = Path(args.data_dir) if args.data_dir else tmp / "data"
        subprocess.run([sys.executable, "-m", "mfpipe", "prepare-data", "--dataset", args.dataset,
                        "--no-download", "--data-dir", str(data_dir)], check=True, capture_output=True)
        for width in args.width:
            single = argparse.Namespace(**{**vars(args), "width": width})
            report_single(single, data_dir, tmp)
            if args.cells:
                report_batch(single, data_dir, tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
