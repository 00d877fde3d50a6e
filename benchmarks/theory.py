"""Speed of the vectorised mean-field engine against per-point loops, measured side by side.

Grid: 100 σ_w² (1..4) × 100 σ_b² (0..0.3) × 4 ρ (1, .99, .98, .94) = 40,000 points, tanh, dropout.

Baselines, timed on a random sample of grid points and extrapolated to the full grid:

1. ``scipy loop``: the straightforward per-point computation at the same accuracy — brentq for
   q* and c*, one-input integrals by the trapezoidal rule in z (step min(0.5, 0.25/√q), the same
   rule and accuracy the engine's tables are built from, ~1e-13), two-input integrals by the
   product trapezoidal rule, χ_c from the same 2-D rule.  The sample's results are compared
   with the engine's (max relative difference printed).
2. ``engine per point``: mfpipe.theory.depth_scales called once per point (the same algorithm
   without the vectorisation over points).

Both sides run single-threaded by default (BLAS threads = 1, set before numpy is imported): the
loop is single-threaded by nature, so this compares algorithms per core, and it keeps the numbers
stable on a shared machine.  ``--threads N`` lets BLAS use N threads in both.

Run: .venv/bin/python benchmarks/theory.py [--sample 40] [--repeat 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time


def _threads_from_argv(default: str = "1") -> str:
    argv = sys.argv[1:]
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return default


THREADS = _threads_from_argv()
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = THREADS  # before numpy loads its BLAS

import numpy as np  # noqa: E402
from scipy import optimize  # noqa: E402

from mfpipe.theory import depth_scales  # noqa: E402

KEYS = ("q_star", "c_star", "chi_1", "chi_c", "xi_q", "xi_c", "xi_grad")


def grid():
    sw = np.linspace(1.0, 4.0, 100)[:, None, None]
    sb = np.linspace(0.0, 0.3, 100)[None, :, None]
    rho = np.array([1.0, 0.99, 0.98, 0.94])[None, None, :]
    return np.broadcast_arrays(sw, sb, rho)


def _rule(q):
    h = min(0.5, 0.25 / math.sqrt(max(q, 1e-300)))
    n = math.ceil(10.5 / h)
    z = np.arange(-n, n + 1) * h
    return z, h * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)


def loop_point(sw, sb, rho):
    """Straightforward per-point computation (brentq + trapezoid rules)."""
    mu2 = 1.0 / rho

    def e1(f, q):
        z, w = _rule(q)
        return float(w @ f(math.sqrt(q) * z))

    def e2(f, q, c):
        z, w = _rule(q)
        s = math.sqrt(q)
        u1 = s * z[:, None]
        u2 = s * (c * z[:, None] + math.sqrt(max(0.0, 1 - c * c)) * z[None, :])
        return float(w @ (f(u1) * f(u2)) @ w)

    sech2 = lambda u: 1 / np.cosh(u) ** 2
    if sb == 0 and sw * mu2 <= 1:
        q = 0.0
    else:
        lo = 1e-12 if sb == 0 else sb
        q = optimize.brentq(lambda q: sw * mu2 * e1(lambda u: np.tanh(u) ** 2, q) + sb - q, lo, sb + sw * mu2,
                            xtol=1e-15, rtol=1e-15)
    chi1 = sw * mu2 * e1(lambda u: sech2(u) ** 2, q)
    slope_q = chi1 + sw * mu2 * e1(lambda u: -2 * np.tanh(u) ** 2 * sech2(u), q)
    if q == 0.0:
        c, chi_c = (math.nan, 1.0) if rho == 1 else (0.0, rho)
    else:
        cmap = lambda c: (sw * e2(np.tanh, q, c) + sb) / q - c
        if rho == 1 and chi1 <= 1:
            c = 1.0
        elif sb == 0 and sw * e2(sech2, q, 0.0) <= 1:
            c = 0.0
        else:
            top = 1.0 if rho < 1 else 1.0 - 1e-10
            c = optimize.brentq(cmap, 1e-12 if sb == 0 else 0.0, top, xtol=1e-15, rtol=1e-15)
        chi_c = sw * e2(sech2, q, c)
    xi = lambda s: math.inf if s == 1 else -1 / math.log(s)
    return {"q_star": q, "c_star": c, "chi_1": chi1, "chi_c": chi_c,
            "xi_q": xi(slope_q), "xi_c": xi(chi_c), "xi_grad": xi(chi1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", type=int, default=40, help="grid points timed in the scipy loop")
    ap.add_argument("--engine-sample", type=int, default=400, help="grid points timed in the engine loop")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", default="1", help="BLAS threads for both sides (default 1)")
    args = ap.parse_args()
    sw, sb, rho = grid()
    n = sw.size
    t = time.perf_counter()
    depth_scales("tanh", sw, sb, rho)  # first call builds the Chebyshev tables (cached per process)
    t_first = time.perf_counter() - t

    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        res = depth_scales("tanh", sw, sb, rho)
        times.append(time.perf_counter() - t)
    t_vec = min(times)
    print(f"BLAS threads: {THREADS}; load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"vectorised: {n} points (100 σ_w² × 100 σ_b² × 4 ρ, tanh, dropout) in {t_vec:.3f} s "
          f"(best of {args.repeat}; median {float(np.median(times)):.3f} s; first call in a fresh process, "
          f"incl. building the tables: {t_first:.3f} s)")

    rng = np.random.default_rng(0)
    flat = [a.ravel() for a in (sw, sb, rho)]
    pick = rng.choice(n, size=args.sample, replace=False)
    t = time.perf_counter()
    loop = [loop_point(flat[0][i], flat[1][i], flat[2][i]) for i in pick]
    t_loop = (time.perf_counter() - t) / args.sample * n
    worst = 0.0
    for i, r in zip(pick, loop):
        for k in KEYS:
            a, b = float(res[k].ravel()[i]), r[k]
            if math.isfinite(a) and math.isfinite(b) and b != 0:
                worst = max(worst, abs(a - b) / abs(b))
            elif not (a == b or (math.isnan(a) and math.isnan(b))):
                worst = math.inf
    print(f"scipy loop: {t_loop:.1f} s extrapolated from {args.sample} points; "
          f"max relative difference to the engine on them: {worst:.1e}")
    print(f"speed-up vs scipy loop: {t_loop / t_vec:.0f}x (median-based {t_loop / float(np.median(times)):.0f}x, "
          f"first-call-based {t_loop / t_first:.0f}x)")

    pick = rng.choice(n, size=args.engine_sample, replace=False)
    t = time.perf_counter()
    for i in pick:
        depth_scales("tanh", flat[0][i], flat[1][i], flat[2][i])
    t_eng = (time.perf_counter() - t) / args.engine_sample * n
    print(f"engine per point: {t_eng:.1f} s extrapolated from {args.engine_sample} points; "
          f"speed-up from vectorisation alone: {t_eng / t_vec:.0f}x")


if __name__ == "__main__":
    main()
