"""Depth scales measured from iterates: exponential fits of residuals |x^l − x*| ~ e^{−l/ξ}."""

from __future__ import annotations

import numpy as np


def fit_depth_scale(values, fixed_point, *, floor: float = 1e-11, transient: float = 0.1,
                    min_points: int = 3) -> float:
    """Signed depth scale ξ from a least-squares line through ln|x^l − x*| against l.

    ``values``: the iterates x^0..x^L (1-D).  Layers whose residual is below ``floor`` (relative to
    max(1, |x*|); round-off) are dropped, as is the initial transient: the fit starts at the first
    layer whose residual is ≤ ``transient`` × the first residual (or at 0 if that leaves fewer than
    ``min_points`` layers).  Returns ξ = −1/slope (> 0 for converging iterates, < 0 diverging; inf
    for a flat residual) or NaN when fewer than ``min_points`` usable layers remain.
    """
    x = np.asarray(values, dtype=float).ravel()
    fp = float(fixed_point)
    if not np.isfinite(fp):
        return float("nan")
    r = np.abs(x - fp)
    layers = np.arange(x.size, dtype=float)
    usable = np.isfinite(r) & (r > floor * max(1.0, abs(fp)))
    if usable.sum() < min_points:
        return float("nan")
    first = r[np.flatnonzero(usable)[0]]
    start_candidates = np.flatnonzero(usable & (r <= transient * first))
    keep = usable.copy()
    if start_candidates.size:
        late = usable & (layers >= start_candidates[0])
        if late.sum() >= min_points:
            keep = late
    slope = np.polyfit(layers[keep], np.log(r[keep]), 1)[0]
    if slope == 0:
        return float("inf")
    return float(-1.0 / slope)
