"""What training cells as bundles (stacked ensembles, mfpipe.train) buys, measured side by side.

    .venv/bin/python benchmarks/bundle.py                    # CPU, default + preset shapes
    .venv/bin/python benchmarks/bundle.py --device cuda      # the same on a GPU
    .venv/bin/python benchmarks/bundle.py --quick            # fewer shapes and steps

1. Per shape (the default config's: width 64, batch 64, depth 4–128; the presets': width
   300–1000, batch 128–1000, depth 40–100) and bundle size K = 1, 4, 16, 64 (as far as the
   memory and time budgets allow): time per cell-step of the engine's own training step
   (``train._Bundle.step``: process CPU time on the CPU, wall time on a GPU), and the
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


def measure(shape: dict, K: int, steps: int, dev) -> dict:
    n_train = max(shape["batch"] * (steps + 4), 1024)
    data = synthetic_data(n_train, N_IN, dev)
    bundle = _Bundle(members(K, shape), data, dev)
    bundle.step()  # warm-up: first-use costs, and the epoch's randperms
    sync(dev)
    counter = CountOps()
    with counter:
        bundle.step()
    sync(dev)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        bundle.step()
    sync(dev)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"cpu_ms": 1e3 * cpu / (steps * K), "wall_ms": 1e3 * wall / (steps * K),
            "ops": counter.all / K, "launches": counter.launches / K}


def shapes(quick: bool) -> list[dict]:
    default = [{"name": f"default L={L}", "width": 64, "depth": L, "batch": 64, "optimizer": "sgd", "lr": 0.01,
                "keep_rate": 0.98, "steps": 10 if quick else 20} for L in ((4, 32) if quick else (4, 32, 128))]
    presets = [
        {"name": "schoenholz (N300 L100 B128, rmsprop)", "width": 300, "depth": 100, "batch": 128,
         "optimizer": "rmsprop", "lr": 1e-3, "keep_rate": 0.99, "steps": 2},
        {"name": "huang (N400 L100 B1000, sgd)", "width": 400, "depth": 100, "batch": 1000,
         "optimizer": "sgd", "lr": 1e-3, "keep_rate": 0.9, "steps": 1},
        {"name": "pretorius (N1000 L40 B128, input dropout)", "width": 1000, "depth": 40, "batch": 128,
         "optimizer": "sgd", "lr": 1e-3, "keep_rate": 0.8, "dropout_input": True, "steps": 2},
    ]
    return default + (presets[:1] if quick else presets)


def benchmark_steps(args, dev) -> None:
    print(f"\n== per cell-step, device {dev}, torch threads {torch.get_num_threads()}, memory budget "
          f"{args.mem_gb:g} GB, time budget {args.max_seconds:g} s per measurement ==")
    timing = "CPU ms" if dev.type == "cpu" else "wall ms"
    print(f"{'shape':44s} {'K':>3s} {timing + '/cell-step':>17s} {'speed-up':>8s} {'ops/cell-step':>13s} "
          f"{'launches/cell-step':>18s} {'vs K=1':>7s}")
    for shape in shapes(args.quick):
        base = None
        for K in args.k:
            need = K * member_bytes(shape)
            if need > args.mem_gb * 2**30:
                print(f"{shape['name']:44s} {K:3d}   skipped: ~{need / 2**30:.1f} GB > memory budget")
                continue
            if base is not None:
                projected = base["cpu_ms" if dev.type == "cpu" else "wall_ms"] * 1e-3 * K * (shape["steps"] + 2)
                if projected > args.max_seconds:
                    print(f"{shape['name']:44s} {K:3d}   skipped: ~{projected:.0f} s > time budget")
                    continue
            try:
                r = measure(shape, K, shape["steps"], dev)
            except (RuntimeError, MemoryError) as err:  # out of memory on the device
                print(f"{shape['name']:44s} {K:3d}   failed: {str(err).splitlines()[0][:60]}")
                continue
            base = base or r
            t = r["cpu_ms"] if dev.type == "cpu" else r["wall_ms"]
            t1 = base["cpu_ms"] if dev.type == "cpu" else base["wall_ms"]
            print(f"{shape['name']:44s} {K:3d} {t:17.3f} {t1 / t:7.2f}× {r['ops']:13.1f} {r['launches']:18.2f} "
                  f"{r['launches'] / base['launches']:7.4f}", flush=True)
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
