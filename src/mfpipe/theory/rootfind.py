"""Vectorised safeguarded root finding (bracketing + Newton) over arrays of independent problems.

Every grid point is its own 1-D root problem; they are solved together, one array operation per
iteration (the loop runs over iterations, never over grid points).  Each point keeps a bracket
``[a, b]`` with ``f(a) >= 0 > f(b)`` (either may be the larger); a Newton step is taken when it lands
strictly inside the bracket and shrinks the step, otherwise the bracket is bisected.  This converges
quadratically at simple roots and never diverges or hangs at double roots (exact criticality), where
it degrades to bisection.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# fun(x, idx) -> (f, df) evaluated at x for the points idx (flat indices into the problem arrays)
Function = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def bracketed_newton(
    fun: Function,
    a: np.ndarray,
    b: np.ndarray,
    x0: np.ndarray | None = None,
    *,
    xtol: float = 1e-15,
    rtol: float = 4e-16,
    maxiter: int = 200,
) -> np.ndarray:
    """Roots of ``fun`` for every point, given brackets with ``f(a) >= 0 > f(b)`` (flat arrays).

    ``x0`` (default: ``b``) is the first Newton iterate and must lie in the closed bracket.
    Points whose bracket is NaN stay NaN.  Returns a flat float array.
    """
    a = np.array(a, dtype=float).ravel()
    b = np.array(b, dtype=float).ravel()
    x = (b.copy() if x0 is None else np.array(x0, dtype=float).ravel().copy())
    out = np.full(a.shape, np.nan)
    active = np.flatnonzero(np.isfinite(a) & np.isfinite(b) & np.isfinite(x))
    step_old = np.abs(b - a)  # size of the step before last (rtsafe's dxold)
    for _ in range(maxiter):
        if active.size == 0:
            break
        xa = x[active]
        f, df = fun(xa, active)
        aa, bb = a[active], b[active]
        pos = f >= 0
        aa = np.where(pos, xa, aa)
        bb = np.where(pos, bb, xa)
        a[active], b[active] = aa, bb
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = xa - f / df
        lo, hi = np.minimum(aa, bb), np.maximum(aa, bb)
        step = np.abs(newton - xa)
        ok = np.isfinite(newton) & (newton > lo) & (newton < hi) & (step <= step_old[active])
        xn = np.where(ok, newton, 0.5 * (aa + bb))
        step_new = np.abs(xn - xa)
        step_old[active] = np.where(ok, step, 0.5 * np.abs(bb - aa))
        tol = xtol + rtol * np.abs(xa)
        # converged: exact zero, a Newton correction at round-off level, or a collapsed bracket
        tiny = np.isfinite(newton) & (step <= tol)
        done = (f == 0) | tiny | (step_new <= tol) | (np.abs(bb - aa) <= 2 * tol)
        x[active] = np.where(f == 0, xa, np.where(tiny, newton, xn))
        fin = active[done]
        out[fin] = x[fin]
        active = active[~done]
    if active.size:  # maxiter reached: best bracket midpoint (only pathological inputs)
        out[active] = x[active]
    return out
