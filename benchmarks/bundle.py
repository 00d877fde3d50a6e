"""What training cells as bundles (stacked ensembles, mfpipe.train) buys, measured side by side.

    .venv/bin/python benchmarks/bundle.py                    # CPU, default + preset shapes
    .venv/bin/python benchmarks/bundle.py --device cuda      # the same on a GPU
    .venv/bin/python benchmarks/bundle.py --quick            # fewer shapes and steps

1. Per shape (the default config's: width 64, batch 64, depth 4–128; the presets': width
   300–1000, batch 128–1000, depth 40–100) and bundle size K = 1, 4, 16, 64 (as far as the
   memory and time budgets allow): time per cell-step of the engine's own training step
   (``train._Bundle.step``: process CPU time on the CPU, wall time on a GPU; the fastest of
   ``--repeats`` windows, taken in turn across K so that the K compare side by side), and the
   operations it dispatches per cell-step, counted with a ``TorchDispatchMode`` — all of them,
   and those that are not views (a GPU kernel-launch proxy).  Goal: at K ≥ 16 at most 1/16 of
   K = 1 (the per-member operations left are the members' own random draws: one noise block
   per member every ``noise_block_steps`` steps and one ``randperm`` per member per epoch).
2. Per preset (config/schoenholz2017.yaml, huang2019.yaml, pretorius2018.yaml): estimated
   GPU-hours with one cell per GPU and with bundles (cells grouped by ``cells.bundle_key``
   across the preset's training studies, chunked by a GPU-memory cap from
   ``cells.estimated_cost``), from a model whose constants are printed: a bundle's time is
   max(steps × launches per step × launch time, K × FLOPs / (peak FLOP/s × efficiency)), with
   launches per step counted from the engine at each preset's optimizer and noise (at a tiny
   width: the count does not depend on width or batch) and fitted as a + b·depth + c·K.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from mfpipe import cells, grid  # noqa: E402
from mfpipe.train import _Bundle, noise_block_steps  # noqa: E402

VIEW_OPS = {"view", "_unsafe_view", "reshape", "alias", "detach", "t", "transpose", "permute", "expand",
            "unsqueeze", "squeeze", "select", "slice", "unbind", "as_strided", "lift_fresh", "split"}
N_IN, N_CLASSES = 784, 10


class CountOps(TorchDispatchMode):
    """Counts dispatched aten operations: all, and those that are not views."""

    def __init__(self):
        super().__init__()
        self.all = self.launches = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.all += 1
        if func.overloadpacket.__name__ not in VIEW_OPS:
            self.launches += 1
        return func(*args, **(kwargs or {}))


def synthetic_data(n_train: int, n_in: int, dev) -> dict:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n_train, n_in, generator=gen).to(dev)
    y = torch.randint(0, N_CLASSES, (n_train,), generator=gen).to(dev)
    return {"x_train": x, "y_train": y, "x_eval": x[:256], "y_eval": y[:256], "x_test": x[:256],
            "y_test": y[:256], "n_classes": N_CLASSES, "n_features": n_in}


def members(K: int, shape: dict) -> list[dict]:
    """K cells of one shape that differ in member parameters (σ_w², ρ, lr, seed)."""
    out = []
    for k in range(K):
        p = {"dataset": "mnist", "width": shape["width"], "depth": shape["depth"],
             "batch_size": shape["batch"], "optimizer": shape["optimizer"], "steps": 1000,
             "sigma_w2": 1.0 + 0.05 * (k % 40), "lr": shape["lr"] * (1 + 0.1 * (k % 3)), "seed": k,
             "keep_rate": shape.get("keep_rate", 1.0), "dropout_input": shape.get("dropout_input", False)}
        out.append(cells.complete_params("train", p))
    return out


def member_bytes(shape: dict) -> int:
    """Rough memory of one member: weights and optimizer state, saved activations, noise blocks."""
    L, N, B = shape["depth"], shape["width"], shape["batch"]
    weights = N_IN * N + (L - 2) * N * N + N * N_CLASSES
    state = {"sgd": 3, "rmsprop": 5, "adam": 6}[shape["optimizer"]]
    T = noise_block_steps(L, B, N, N_IN, shape.get("dropout_input", False))
    return 4 * (weights * state + B * (N_IN + 5 * L * N) + 2 * T * L * B * N)


def sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class Measured:
    """One bundle of K members of ``shape``, ready to time: its dispatched operations per
    cell-step are counted once (one steady step), its time per cell-step in ``window`` calls."""

    def __init__(self, shape: dict, K: int, steps: int, repeats: int, dev):
        self.K, self.steps, self.dev = K, steps, dev
        n_train = max(shape["batch"] * (steps * repeats + 4), 1024)
        self.bundle = _Bundle(members(K, shape), synthetic_data(n_train, N_IN, dev), dev)
        self.bundle.step()  # warm-up: first-use costs, and the epoch's randperms
        sync(dev)
        counter = CountOps()
        with counter:
            self.bundle.step()
        sync(dev)
        self.ops, self.launches = counter.all / K, counter.launches / K
        self.cpu_ms, self.wall_ms = [], []

    def window(self) -> None:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(self.steps):
            self.bundle.step()
        sync(self.dev)
        self.cpu_ms.append(1e3 * (time.process_time() - cpu0) / (self.steps * self.K))
        self.wall_ms.append(1e3 * (time.perf_counter() - wall0) / (self.steps * self.K))


def shapes(quick: bool) -> list[dict]:
    default = [{"name": f"default L={L}", "width": 64, "depth": L, "batch": 64, "optimizer": "sgd", "lr": 0.01,
                "keep_rate": 0.98, "steps": 10 if quick else 20, "cell_steps": 1000}
               for L in ((4, 32) if quick else (4, 32, 128))]
    presets = [
        {"name": "schoenholz (N300 L100 B128, rmsprop)", "width": 300, "depth": 100, "batch": 128,
         "optimizer": "rmsprop", "lr": 1e-3, "keep_rate": 0.99, "steps": 2, "cell_steps": 13780},
        {"name": "huang (N400 L100 B1000, sgd)", "width": 400, "depth": 100, "batch": 1000,
         "optimizer": "sgd", "lr": 1e-3, "keep_rate": 0.9, "steps": 1, "cell_steps": 10000},
        {"name": "pretorius (N1000 L40 B128, input dropout)", "width": 1000, "depth": 40, "batch": 128,
         "optimizer": "sgd", "lr": 1e-3, "keep_rate": 0.8, "dropout_input": True, "steps": 2,
         "cell_steps": 93750},
    ]
    return default + (presets[:1] if quick else presets)


def benchmark_steps(args, dev) -> None:
    """Per shape, the bundles of every K side by side: ``--repeats`` rounds, each timing one
    window of every K in turn, and the fastest window of each K (this machine's neighbours slow
    single windows down by up to 1.5×; the fastest is the least disturbed)."""
    timing = "CPU ms" if dev.type == "cpu" else "wall ms"
    print(f"\n== per cell-step, device {dev}, torch threads {torch.get_num_threads()}, memory budget "
          f"{args.mem_gb:g} GB, time budget {args.max_seconds:g} s per bundle; {timing}: the fastest of "
          f"{args.repeats} windows, taken in turn across K (and the slowest); cells/h: cells of the "
          f"preset's steps trained per {'core' if dev.type == 'cpu' else 'GPU'}-hour, training steps only ==")
    print(f"{'shape':44s} {'K':>3s} {timing + '/cell-step':>17s} {'(slowest)':>9s} {'speed-up':>8s} "
          f"{'ops/cell-step':>13s} {'launches/cell-step':>18s} {'vs K=1':>7s} {'cells/h':>8s}")
    key = "cpu_ms" if dev.type == "cpu" else "wall_ms"
    for shape in shapes(args.quick):
        steps = shape["steps"] * (1 if dev.type == "cpu" else 10)  # a GPU step is short: longer windows
        runs: list[Measured] = []
        for K in args.k:
            need = K * member_bytes(shape)
            if need > args.mem_gb * 2**30:
                print(f"{shape['name']:44s} {K:3d}   skipped: ~{need / 2**30:.1f} GB > memory budget")
                continue
            if runs:
                projected = min(getattr(runs[0], key)) * 1e-3 * K * steps * (args.repeats + 2)
                if projected > args.max_seconds:
                    print(f"{shape['name']:44s} {K:3d}   skipped: ~{projected:.0f} s > time budget")
                    continue
            try:
                run = Measured(shape, K, steps, args.repeats, dev)
                if not runs:
                    run.window()  # K = 1 first: the time budget's projection
                runs.append(run)
            except (RuntimeError, MemoryError) as err:  # out of memory on the device
                print(f"{shape['name']:44s} {K:3d}   failed: {str(err).splitlines()[0][:60]}")
        for _ in range(args.repeats):
            for run in runs:
                if len(getattr(run, key)) < args.repeats:
                    run.window()
        for run in runs:
            t, slowest, t1 = min(getattr(run, key)), max(getattr(run, key)), min(getattr(runs[0], key))
            print(f"{shape['name']:44s} {run.K:3d} {t:17.3f} {slowest:9.3f} {t1 / t:7.2f}× {run.ops:13.1f} "
                  f"{run.launches:18.2f} {run.launches / runs[0].launches:7.4f} "
                  f"{3.6e6 / (t * shape['cell_steps']):8.1f}", flush=True)
        del runs
        if dev.type == "cuda":
            torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- GPU-hour model

def count_launches(depth: int, optimizer: str, noisy: bool, dropout_input: bool, K: int, window: int = 16) -> int:
    """Non-view operations of steps [window, 2·window) at a tiny width/batch (the count does not
    depend on them): one noise block per member (tiny shapes draw 16 steps at once), no randperm."""
    shape = {"width": 8, "depth": depth, "batch": 8, "optimizer": optimizer, "lr": 1e-3,
             "keep_rate": 0.9 if noisy else 1.0, "dropout_input": dropout_input}
    assert noise_block_steps(depth, 8, 8, 16, dropout_input) == window
    data = synthetic_data(8 * 4 * window, 16, torch.device("cpu"))
    bundle = _Bundle(members(K, shape), data, torch.device("cpu"))
    for _ in range(window):
        bundle.step()
    counter = CountOps()
    with counter:
        for _ in range(window):
            bundle.step()
    return counter.launches


class LaunchModel:
    """launches per step = a + b·depth + c·K, per (optimizer, noise, input noise); a and b from
    counts at two depths, c from the members' own draws at the real shape."""

    def __init__(self):
        self.fits = {}

    def per_step(self, p: dict, K: int, n_train: int) -> float:
        noisy = p["keep_rate"] < 1.0 or p["noise_var"] > 0.0
        key = (p["optimizer"], noisy, p["dropout_input"])
        if key not in self.fits:
            w = 16
            # K = 2 and 3: both copy the minibatch indices (a view at K = 1)
            c10, c40 = (count_launches(d, *key, K=2) for d in (10, 40))
            per_member = count_launches(10, *key, K=3) - c10  # draws per member per noise block
            b = (c40 - c10) / (30 * w)
            a = (c10 - 2 * per_member) / w - 10 * b
            self.fits[key] = (a, b, per_member)
        a, b, per_member = self.fits[key]
        n_in = cells.INPUT_FEATURES[p["dataset"]]
        T = noise_block_steps(p["depth"], p["batch_size"], p["width"], n_in, p["dropout_input"]) if noisy else 1
        c = per_member / T + 1.0 / max(1, n_train // p["batch_size"])  # noise draws + randperm per epoch
        return a + b * p["depth"] + c * K


def preset_cells(path: str) -> list[dict]:
    studies = grid.build_studies(grid.load_config(ROOT / path))
    return [cells.complete_params("train", c.params) for s in studies.values() if s.kind == "train"
            for c in s.cells]


def gpu_hours(args) -> None:
    model = LaunchModel()
    print(f"\n== estimated GPU-hours per preset: launch {args.launch_us:g} µs/op, peak {args.peak_flops:.3g} "
          f"FLOP/s × efficiency {args.efficiency:g}, GPU memory {args.gpu_mem_gb:g} GB, K ≤ {args.k_cap} ==")
    print("   bundle time = max(steps × launches/step × launch, K × cell FLOPs / (peak × efficiency));"
          " one cell per GPU is K = 1")
    for preset in ("config/schoenholz2017.yaml", "config/huang2019.yaml", "config/pretorius2018.yaml"):
        plist = preset_cells(preset)
        groups: dict[str, list] = {}
        for p in plist:
            groups.setdefault(cells.bundle_key("train", p), []).append(p)
        single = bundled = 0.0
        n_bundles, sizes, launch_bound = 0, [], 0
        for group in groups.values():
            cost = [cells.estimated_cost("train", p) for p in group]
            k_mem = max(1, int(args.gpu_mem_gb * 2**30 // max(c["peak_bytes"] for c in cost)))
            size = min(args.k_cap, k_mem)
            p0 = group[0]
            n_train = cells.EVAL_SPLIT_SIZES[p0["dataset"]][0]
            for p, c in zip(group, cost):
                launch = p["steps"] * model.per_step(p, 1, n_train) * args.launch_us * 1e-6
                single += max(launch, c["flops"] / (args.peak_flops * args.efficiency))
            for start in range(0, len(group), size):
                chunk, chunk_cost = group[start:start + size], cost[start:start + size]
                K = len(chunk)
                launch = p0["steps"] * model.per_step(p0, K, n_train) * args.launch_us * 1e-6
                compute = sum(c["flops"] for c in chunk_cost) / (args.peak_flops * args.efficiency)
                bundled += max(launch, compute)
                launch_bound += launch > compute
                n_bundles += 1
                sizes.append(K)
        print(f"{preset:30s} {len(plist):6d} cells  one cell per GPU {single / 3600:8.0f} GPU-h   "
              f"bundles {bundled / 3600:7.0f} GPU-h ({single / bundled:5.1f}×)   {n_bundles} bundles of "
              f"{min(sizes)}–{max(sizes)}, {launch_bound} launch-bound", flush=True)
    for key, (a, b, m) in model.fits.items():
        print(f"   launches/step fit {key}: {a:.1f} + {b:.2f}·depth + ({m} per member per noise block)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--k", type=lambda s: [int(v) for v in s.split(",")], default=[1, 4, 16, 64])
    parser.add_argument("--mem-gb", type=float, default=None,
                        help="memory budget of one measurement (default: 6 on the CPU, 80%% of the GPU's free memory)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="skip a K whose projected time exceeds this (default 60 on the CPU, 120 on a GPU)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed windows per bundle, taken in turn across K (default 3)")
    parser.add_argument("--launch-us", type=float, default=6.0)
    parser.add_argument("--peak-flops", type=float, default=50e12)
    parser.add_argument("--efficiency", type=float, default=0.3)
    parser.add_argument("--gpu-mem-gb", type=float, default=80.0)
    parser.add_argument("--k-cap", type=int, default=256)
    parser.add_argument("--skip-model", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dev = cells.resolve_device(args.device)
    if args.mem_gb is None:
        args.mem_gb = 6.0 if dev.type == "cpu" else 0.8 * torch.cuda.mem_get_info(dev)[0] / 2**30
    if args.max_seconds is None:
        args.max_seconds = 60.0 if dev.type == "cpu" else 120.0
    t0 = time.perf_counter()
    benchmark_steps(args, dev)
    if not args.skip_model:
        gpu_hours(args)
    print(f"\n(total {time.perf_counter() - t0:.0f} s; host {os.uname().nodename})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
