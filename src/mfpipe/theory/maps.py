"""Mean-field maps, fixed points, slopes, depth scales and critical lines (THEORY.md §2–3).

All functions broadcast their array arguments (σ_w², σ_b², ρ, noise variance, starting values)
against each other and work on the flattened grid at once; loops run over iterations, series
orders or layers, never over grid points.

Noise enters through ``μ2 = E ε²`` of a multiplicative noise (dropout: 1/ρ; Gaussian N(1, σ_ε²):
1 + σ_ε²) and ``ν``, the variance of an additive noise on the activations:

    length map       q' = σ_w² (μ2 M0(q) + ν) + σ_b²
    covariance map   q_ab' = σ_w² A(q, c) + σ_b²          (independent noise: no μ2, no ν)
    correlation map  c' = q_ab' / q'   with both inputs at q = q*
    χ1 = σ_w² μ2 M1(q*),  χ_c = σ_w² B(q*, c*),  slope of the length map σ_w² μ2 (M1 + M2)
    ξ = −1 / ln(slope)  for ξ_q (length-map slope), ξ_c (χ_c), ξ_grad (χ1)

Meaning of non-finite results (never a hang):

- ``q_star = inf``: no finite length fixed point, q^l grows without bound (relu/linear with
  χ1 ≥ 1 and a positive offset σ_b² + σ_w² ν, or χ1 > 1).  c*, χ_c, ξ_c are then those of the
  limiting correlation map as q → ∞ (bias and additive noise negligible): relu
  c' = 2κ(c)/μ2, linear c' = c/μ2.
- ``q_star = nan``: every q is a fixed point (relu/linear exactly at χ1 = 1 with zero offset);
  the correlation quantities are those of the same scale-free map.
- ``q_star = 0``: no bias and no additive noise in the ordered phase: q^l → 0.  Bounded φ
  (tanh, erf, hard_tanh): correlations follow the linearised map c' = c/μ2 (c* = 0,
  χ_c = 1/μ2; without noise every c is fixed: c* = nan, χ_c = 1, ξ_c = inf).  relu/linear:
  the scale-free maps above.
- ``c_star = 1`` exactly in the ordered phase without noise (χ1 ≤ 1, μ2 = 1, ν = 0), where
  χ_c = χ1; with noise c = 1 is not a fixed point and c* < 1 (THEORY.md §2).
- ξ = −1/ln(slope) is signed: > 0 when the slope is < 1 (convergence / vanishing gradients),
  < 0 when > 1 (divergence / exploding gradients); +inf exactly at slope 1.
"""

from __future__ import annotations

import numpy as np

from mfpipe.errors import InputError
from mfpipe.theory.activations import Activation, get_activation, relu_kappa, relu_kappa_prime
from mfpipe.theory.quadrature import PairIntegrals, moments
from mfpipe.theory.rootfind import bracketed_newton

NOISES = ("dropout", "gaussian", "additive", "none")
#: Largest σ_b² + σ_w²(μ2 + ν) (the scale of the lengths q; for dropout μ2 = 1/ρ, so ρ ≥ ~σ_w²·1e-12).
#: The cost no longer grows with q (quadrature.Q_SAT), but the length map's slope dM0/dq of
#: a bounded φ is O(q^-3/2) next to O(q^-1/2) terms: its relative error is ~1e-16·q (2.6e-5 at
#: q = 1e12), and overflow follows at larger q.
Q_LIMIT = 1e12
METHODS = ("auto", "closed", "quadrature")
KEYS = ("q_star", "c_star", "chi_1", "chi_c", "xi_q", "xi_c", "xi_grad")


# ------------------------------------------------------------------ inputs


def _array(x, field):
    try:
        arr = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise InputError(field, x, "numbers (scalars or arrays)") from None
    return arr


class Setting:
    """Validated, broadcast and flattened parameters of a grid (internal)."""

    def __init__(self, activation, sigma_w2, sigma_b2, keep_rate=1.0, noise="dropout",
                 noise_var=0.0, method="auto", need_sigma_w2=True):
        self.act: Activation = get_activation(activation)
        noise = str(noise).strip().lower()
        if noise not in NOISES:
            raise InputError("noise", noise, ", ".join(NOISES))
        if method not in METHODS:
            raise InputError("method", method, ", ".join(METHODS))
        if method == "closed" and self.act.closed_moments is None:
            raise InputError("method", method, f"auto or quadrature for {self.act.name} (no closed form)")
        self.noise, self.method = noise, method
        arrays = [_array(sigma_w2 if need_sigma_w2 else 1.0, "sigma_w2"), _array(sigma_b2, "sigma_b2"),
                  _array(keep_rate, "keep_rate"), _array(noise_var, "noise_var")]
        sw, sb, rho, nv = np.broadcast_arrays(*arrays)
        self.shape = sw.shape
        self.sw, self.sb, self.rho, self.nv = (a.ravel().astype(float) for a in (sw, sb, rho, nv))
        if need_sigma_w2 and not np.all(np.isfinite(self.sw) & (self.sw > 0)):
            raise InputError("sigma_w2", _first_bad(sigma_w2, lambda v: np.isfinite(v) & (v > 0)),
                             "finite numbers > 0")
        if not np.all(np.isfinite(self.sb) & (self.sb >= 0)):
            raise InputError("sigma_b2", _first_bad(sigma_b2, lambda v: np.isfinite(v) & (v >= 0)),
                             "finite numbers ≥ 0")
        if not np.all((self.rho > 0) & (self.rho <= 1)):
            raise InputError("keep_rate", _first_bad(keep_rate, lambda v: (v > 0) & (v <= 1)),
                             "numbers in (0, 1] (the keep probability ρ; 1 = no dropout)")
        if not np.all(np.isfinite(self.nv) & (self.nv >= 0)):
            raise InputError("noise_var", _first_bad(noise_var, lambda v: np.isfinite(v) & (v >= 0)),
                             "finite numbers ≥ 0")
        if noise != "dropout" and np.any(self.rho != 1):
            raise InputError("keep_rate", _first_bad(keep_rate, lambda v: v == 1),
                             f"1 with noise={noise} (keep_rate < 1 needs noise=dropout)")
        if noise in ("dropout", "none") and np.any(self.nv != 0):
            raise InputError("noise_var", _first_bad(noise_var, lambda v: v == 0),
                             f"0 with noise={noise} (noise_var is for noise=gaussian or additive)")
        if noise == "dropout":
            self.mu2 = 1.0 / self.rho
            self.inv_mu2 = self.rho
        elif noise == "gaussian":
            self.mu2 = 1.0 + self.nv
        else:
            self.mu2 = np.ones_like(self.sw)
        if noise != "dropout":
            self.inv_mu2 = 1.0 / self.mu2
        self.nu = self.nv if noise == "additive" else np.zeros_like(self.sw)
        self._check_scale(sigma_w2, sigma_b2, keep_rate, noise_var, need_sigma_w2)

    def _check_scale(self, sigma_w2, sigma_b2, keep_rate, noise_var, need_sigma_w2):
        """Refuse grids whose lengths exceed Q_LIMIT (see there), naming the field that does it."""
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            bound = self.sb + self.sw * (self.mu2 + self.nu)  # ≥ q* for bounded φ; the scale of q^l
        bad = ~(bound <= Q_LIMIT)
        if not bad.any():
            return
        i = int(np.flatnonzero(bad)[0])
        if self.noise == "dropout" and self.rho[i] < 1.0:
            field, value = "keep_rate", float(self.rho[i])
        elif self.noise in ("gaussian", "additive") and self.nv[i] > 0.0:
            field, value = "noise_var", float(self.nv[i])
        elif need_sigma_w2 and self.sw[i] * self.mu2[i] >= self.sb[i]:
            field, value = "sigma_w2", float(self.sw[i])
        else:
            field, value = "sigma_b2", float(self.sb[i])
        raise InputError(field, value, f"values with σ_b² + σ_w²(μ2 + ν) ≤ {Q_LIMIT:.0e} (μ2 = E ε² = 1/ρ "
                         f"for dropout): here it is {bound[i]:.3g} (σ_w² = {self.sw[i]:.6g}, "
                         f"σ_b² = {self.sb[i]:.6g}, ρ = {self.rho[i]:.6g}, noise variance "
                         f"{self.nv[i]:.6g}); beyond, lengths q ~ 1e12 leave the slopes of the maps "
                         f"fewer than 5 correct digits in double precision")

    def block(self, sl: slice) -> "Setting":
        """The same setting restricted to a slice of the flat grid."""
        part = object.__new__(Setting)
        part.__dict__.update(self.__dict__)
        for name in ("sw", "sb", "rho", "nv", "mu2", "inv_mu2", "nu"):
            setattr(part, name, getattr(self, name)[sl])
        part.shape = part.sw.shape
        return part

    def reshape(self, flat):
        return np.asarray(flat, dtype=float).reshape(self.shape)


def _first_bad(value, good):
    arr = np.atleast_1d(np.asarray(value, dtype=float)) if not isinstance(value, str) else None
    if arr is None:
        return value
    bad = arr[~good(arr)]
    return float(bad.ravel()[0]) if bad.size else value


def depth_scale(slope):
    """Signed depth scale −1/ln(slope): > 0 for slope < 1, < 0 for slope > 1, +inf at slope 1."""
    slope = np.asarray(slope, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = -1.0 / np.log(slope)
    return np.where(slope == 1.0, np.inf, xi)


# ------------------------------------------------------------------ length fixed point


def _q_star(s: Setting) -> np.ndarray:
    act, sw, sb, mu2, nu = s.act, s.sw, s.sb, s.mu2, s.nu
    offset = sw * nu + sb
    if act.homogeneous:  # q' = σ_w² μ2 M0(1) q + offset
        m0_unit = moments(act, np.ones(1), s.method)[0][0]
        slope = sw * mu2 * m0_unit
        with np.errstate(divide="ignore", invalid="ignore"):
            q = offset / (1.0 - slope)
        q = np.where(slope < 1.0, q, np.where((slope == 1.0) & (offset == 0.0), np.nan, np.inf))
        return q
    # bounded φ: g(q) = σ_w²(μ2 M0(q) + ν) + σ_b² − q,  g(lo) ≥ 0 > g(hi)
    lo = offset.copy()
    hi = offset + sw * mu2 * 1.0  # sup φ² = 1 for tanh, erf, hard_tanh
    # φ² ≤ slope0² u² for tanh/erf/hard_tanh: below the linear regime's fixed point when it exists
    lin = sw * mu2 * act.slope0 ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        hi = np.where(lin < 1.0, np.minimum(hi, offset / (1.0 - lin)), hi)
    q = np.full(sw.shape, np.nan)
    trivial = (offset == 0.0) & (lin <= 1.0)
    q[trivial] = 0.0
    todo = np.flatnonzero(~trivial)
    if todo.size:
        def fun(x, idx):
            gi = todo[idx]
            m0, m1, m2, _ = moments(act, x, s.method)
            g = sw[gi] * (mu2[gi] * m0 + nu[gi]) + sb[gi] - x
            dg = sw[gi] * mu2[gi] * (m1 + m2) - 1.0
            return g, dg
        q[todo] = bracketed_newton(fun, lo[todo], hi[todo], x0=hi[todo], maxiter=100)
    return q


# ------------------------------------------------------------------ correlation fixed point


def _correlation(s: Setting, q: np.ndarray, m0: np.ndarray, m1: np.ndarray, chi1: np.ndarray):
    """c*, χ_c for every point given q* and the one-input moments at q*."""
    act, sw, sb, mu2, nu = s.act, s.sw, s.sb, s.mu2, s.nu
    n = sw.size
    c_star = np.full(n, np.nan)
    chi_c = np.full(n, np.nan)
    noiseless = (mu2 == 1.0) & (nu == 0.0)

    # scale-free cases (q* ∈ {0, nan, inf}): limiting correlation maps
    # bounded φ with q* = 0: linearised map c' = c/μ2.  relu/linear: the correlation map is
    # scale-free (q-independent ratio form) whenever the offset vanishes or q* is not finite
    free = ~np.isfinite(q) | ((q == 0.0) & act.homogeneous)
    zero = (q == 0.0) & ~free
    c_star[zero] = np.where(noiseless[zero], np.nan, 0.0)
    chi_c[zero] = 1.0 / mu2[zero]
    if np.any(free):
        fi = np.flatnonzero(free)
        if act.name == "relu":  # c' = 2κ(c)/μ2
            scale = 2.0 / mu2[fi]
            fun = lambda x, idx: (scale[idx] * relu_kappa(x) - x, scale[idx] * relu_kappa_prime(x) - 1.0)
            # bias and additive noise vanish from this limit: c = 1 is fixed iff μ2 = 1
            c = np.where(mu2[fi] == 1.0, 1.0, bracketed_newton(fun, np.zeros(fi.size), np.ones(fi.size),
                                                                x0=np.full(fi.size, 0.5)))
            c_star[fi] = c
            chi_c[fi] = scale * relu_kappa_prime(c)
        else:  # linear: c' = c/μ2
            c_star[fi] = np.where(mu2[fi] == 1.0, np.nan, 0.0)
            chi_c[fi] = 1.0 / mu2[fi]

    # finite q* > 0; in the ordered phase without noise c* = 1 and χ_c = χ1 (no series needed)
    known = np.isfinite(q) & (q > 0) & noiseless & (chi1 <= 1.0)
    c_star[known], chi_c[known] = 1.0, chi1[known]
    gen = np.flatnonzero(np.isfinite(q) & (q > 0) & ~known & ~free)
    if gen.size == 0:
        return c_star, chi_c
    qg = q[gen]
    pairs = PairIntegrals(act, qg, s.method, m0=m0[gen], m1=m1[gen])
    q_next = sw[gen] * (mu2[gen] * m0[gen] + nu[gen]) + sb[gen]  # = q*, consistent with A(1) = M0
    scale = sw[gen] / q_next
    offset = sb[gen] / q_next
    ordered = noiseless[gen] & (chi1[gen] <= 1.0)  # c = 1 is the stable fixed point
    cg = np.ones(gen.size)
    # odd φ without bias: c = 0 is a fixed point, the stable one when the slope there is ≤ 1
    zero_fixed = np.zeros(gen.size, dtype=bool)
    if act.odd:
        cand = np.flatnonzero((offset == 0.0) & ~ordered)
        if cand.size:
            (da0,) = pairs.evaluate(np.zeros(cand.size), cand, want=("dA",))
            zero_fixed[cand] = scale[cand] * da0 <= 1.0
    cg[zero_fixed] = 0.0
    todo = np.flatnonzero(~ordered & ~zero_fixed)
    if todo.size:
        def fun(x, idx, max_order=None):
            pi = todo[idx]
            a, da = pairs.evaluate(x, pi, want=("A", "dA"), max_order=max_order)
            return scale[pi] * a + offset[pi] - x, scale[pi] * da - 1.0
        zeros, ones = np.zeros(todo.size), np.ones(todo.size)
        # σ_b² = 0 with an unstable c = 0: start inside, away from it.  First approach with the
        # first 16 odd orders (+ remainder, exact at c = 1), then polish with the full series.
        x0 = bracketed_newton(lambda x, i: fun(x, i, 16), zeros, ones, x0=np.full(todo.size, 0.5),
                              xtol=1e-7, rtol=1e-7, maxiter=100)
        x0 = np.where(np.isfinite(x0), x0, 0.5)
        cg[todo] = bracketed_newton(fun, zeros, ones, x0=x0, maxiter=100)
    (b,) = pairs.evaluate(cg, np.arange(gen.size), want=("B",))
    chi = scale * qg * b
    chi = np.where(ordered, chi1[gen], chi)
    c_star[gen], chi_c[gen] = cg, chi
    return c_star, chi_c


# ------------------------------------------------------------------ public API


def depth_scales(activation, sigma_w2, sigma_b2, keep_rate=1.0, noise="dropout", noise_var=0.0,
                 *, method="auto"):
    """Mean-field fixed points, slopes and depth scales over a broadcast grid.

    Returns a dict of arrays (shape of the broadcast inputs) with keys q_star, c_star, chi_1,
    chi_c, xi_q, xi_c, xi_grad (signed; > 0 ordered, < 0 chaotic).  See the module docstring
    for the meaning of inf/nan.  ``method``: "auto" (closed forms where they exist, quadrature
    otherwise), "closed", or "quadrature" (forces quadrature, for cross-checks).
    """
    s = Setting(activation, sigma_w2, sigma_b2, keep_rate, noise, noise_var, method)
    return _depth_scales(s)


BLOCK = 200_000  # grid points solved together; bounds memory (series are orders × points)


def _depth_scales(s: Setting) -> dict:
    n = s.sw.size
    if n <= BLOCK:
        flat = _depth_scales_flat(s)
    else:  # loop over blocks of points (each block fully vectorised)
        flat = {k: np.empty(n) for k in KEYS}
        for start in range(0, n, BLOCK):
            part = _depth_scales_flat(s.block(slice(start, start + BLOCK)))
            for k in KEYS:
                flat[k][start:start + BLOCK] = part[k]
    return {k: s.reshape(v) for k, v in flat.items()}


def _depth_scales_flat(s: Setting) -> dict:
    q = _q_star(s)
    q_eval = np.where(np.isfinite(q), q, 1.0)
    m0, m1, m2, _ = moments(s.act, q_eval, s.method)
    chi1 = s.sw * s.mu2 * m1
    slope_q = s.sw * s.mu2 * (m1 + m2)
    if s.act.homogeneous:  # affine length map: slope χ1 everywhere, defined for q* ∈ {nan, inf}
        slope_q = chi1
    c_star, chi_c = _correlation(s, q, m0, m1, chi1)
    return {
        "q_star": q, "c_star": c_star, "chi_1": chi1, "chi_c": chi_c,
        "xi_q": depth_scale(slope_q), "xi_c": depth_scale(chi_c), "xi_grad": depth_scale(chi1),
    }


def critical_sigma_w2(activation, sigma_b2, keep_rate=1.0, noise="dropout", noise_var=0.0,
                      *, method="auto"):
    """σ_w² on the line χ1 = 1 for each σ_b² (and noise), as an array of the broadcast shape.

    Bounded φ: solved in q, where χ1 = 1 and the length fixed point give
    G(q) = (μ2 M0(q) + ν)/(μ2 M1(q)) + σ_b² − q = 0, then σ_w² = 1/(μ2 M1(q)).  relu / linear:
    χ1 does not depend on q, σ_w² = 1/(μ2 M1) (2ρ and ρ for dropout); there q* is unbounded
    unless σ_b² = ν = 0.  NaN where no critical point exists.
    """
    s = Setting(activation, 1.0, sigma_b2, keep_rate, noise, noise_var, method, need_sigma_w2=False)
    act, sb, mu2, nu = s.act, s.sb, s.mu2, s.nu
    if act.homogeneous:
        m1 = moments(act, np.ones(1), s.method)[1][0]
        return s.reshape(s.inv_mu2 / m1)  # 2ρ (relu), ρ (linear) exactly for dropout

    def G(x, idx):
        m0, m1, m2, dm1 = moments(act, x, s.method)
        num = mu2[idx] * m0 + nu[idx]
        den = mu2[idx] * m1
        g = num / den + sb[idx] - x
        dg = (mu2[idx] * (m1 + m2) * den - num * mu2[idx] * dm1) / (den * den) - 1.0
        return g, dg

    n = sb.size
    lo = np.zeros(n)
    q = np.full(n, np.nan)
    trivial = (sb == 0.0) & (nu == 0.0)
    q[trivial] = 0.0
    idx = np.flatnonzero(~trivial)
    if idx.size:
        hi = np.maximum(1.0, 2.0 * sb[idx])
        for _ in range(60):  # expand the bracket (loop over doublings, all points at once)
            g, _ = G(hi, idx)
            grow = g >= 0
            if not grow.any():
                break
            hi = np.where(grow, 2.0 * hi, hi)
        g, _ = G(hi, idx)
        ok = g < 0
        sub = idx[ok]

        def fun(x, j):
            return G(x, sub[j])

        q[sub] = bracketed_newton(fun, lo[sub], hi[ok], x0=hi[ok])
    m1 = moments(act, np.where(np.isfinite(q), q, 0.0), s.method)[1]
    return s.reshape(np.where(np.isfinite(q), 1.0 / (mu2 * m1), np.nan))


def iterate_q(activation, sigma_w2, sigma_b2, q0, depth, keep_rate=1.0, noise="dropout",
              noise_var=0.0, *, method="auto"):
    """Length iterates q^0 = q0, q^{l+1} = σ_w²(μ2 M0(q^l) + ν) + σ_b²; shape (depth+1, *grid)."""
    depth = _depth(depth)
    sigma_w2 = _grid_with(sigma_w2, sigma_b2, keep_rate, noise_var, _array(q0, "q0"))
    s = Setting(activation, sigma_w2, sigma_b2, keep_rate, noise, noise_var, method)
    q0 = np.broadcast_to(_array(q0, "q0"), s.shape).ravel()
    if not np.all(np.isfinite(q0) & (q0 >= 0)):
        raise InputError("q0", q0, "finite numbers ≥ 0")
    _check_iterates(depth, s.sw.size)
    out = np.empty((depth + 1, s.sw.size))
    out[0] = q0
    for layer in range(depth):
        m0 = moments(s.act, out[layer], s.method)[0]
        out[layer + 1] = s.sw * (s.mu2 * m0 + s.nu) + s.sb
    return out.reshape((depth + 1,) + s.shape)


def iterate_c(activation, sigma_w2, sigma_b2, c0, depth, keep_rate=1.0, q=None, noise="dropout",
              noise_var=0.0, *, method="auto"):
    """Correlation iterates from c0; shape (depth+1, *grid).

    ``q=None``: both inputs at the length fixed point q* (THEORY.md §2; for q* ∈ {0, inf, nan}
    the limiting scale-free maps of the module docstring).  ``q`` given: both inputs start at
    length q and the lengths are iterated alongside, c^{l+1} = (σ_w² A(q^l, c^l) + σ_b²)/q^{l+1}.
    """
    depth = _depth(depth)
    extra = [_array(c0, "c0")] + ([] if q is None else [_array(q, "q")])
    sigma_w2 = _grid_with(sigma_w2, sigma_b2, keep_rate, noise_var, *extra)
    s = Setting(activation, sigma_w2, sigma_b2, keep_rate, noise, noise_var, method)
    c0 = np.broadcast_to(_array(c0, "c0"), s.shape).ravel()
    if not np.all((c0 >= -1) & (c0 <= 1)):
        raise InputError("c0", c0, "correlations in [-1, 1]")
    _check_iterates(depth, s.sw.size)
    out = np.empty((depth + 1, s.sw.size))
    out[0] = c0
    idx = np.arange(s.sw.size)
    if q is None:
        qs = _q_star(s)
        fin = np.isfinite(qs) & (qs > 0)
        qe = np.where(fin, qs, 1.0)
        m0 = moments(s.act, qe, s.method)[0]
        pairs = PairIntegrals(s.act, qe, s.method, m0=m0, m1=moments(s.act, qe, s.method)[1])
        q_next = s.sw * (s.mu2 * m0 + s.nu) + s.sb
        for layer in range(depth):
            c = out[layer]
            (a,) = pairs.evaluate(c, idx, want=("A",))
            nxt = (s.sw * a + s.sb) / q_next
            if s.act.name == "relu":
                free = 2.0 * relu_kappa(c) / s.mu2
            else:
                free = c / s.mu2
            out[layer + 1] = np.where(fin, nxt, free)
        return out.reshape((depth + 1,) + s.shape)
    ql = np.broadcast_to(_array(q, "q"), s.shape).ravel().astype(float)
    if not np.all(np.isfinite(ql) & (ql > 0)):
        raise InputError("q", q, "finite numbers > 0 (or None for q*)")
    for layer in range(depth):
        m0 = moments(s.act, ql, s.method)[0]
        pairs = PairIntegrals(s.act, ql, s.method, m0=m0, m1=moments(s.act, ql, s.method)[1])
        (a,) = pairs.evaluate(out[layer], idx, want=("A",))
        q_new = s.sw * (s.mu2 * m0 + s.nu) + s.sb
        out[layer + 1] = (s.sw * a + s.sb) / q_new
        ql = q_new
    return out.reshape((depth + 1,) + s.shape)


def _grid_with(sigma_w2, *others):
    """σ_w² broadcast to the joint shape of all grid arguments (so starting values broadcast too)."""
    arrays = [_array(sigma_w2, "sigma_w2")] + [np.asarray(o, dtype=float) for o in others]
    try:
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        raise InputError("sigma_w2", sigma_w2, "arrays broadcastable against the other grid arguments") from None
    return np.broadcast_to(arrays[0], shape)


MAX_ITERATE_VALUES = 50_000_000  # (depth + 1) × points of one iterate array: 400 MB


def _check_iterates(depth: int, points: int) -> None:
    n = (depth + 1) * points
    if n > MAX_ITERATE_VALUES:
        raise InputError("depth", depth, f"(depth + 1) × grid points ≤ {MAX_ITERATE_VALUES:,} values "
                         f"(here {depth + 1:,} × {points:,} = {n:,})")


def _depth(depth):
    try:
        d = int(depth)
    except (TypeError, ValueError):
        raise InputError("depth", depth, "an integer ≥ 0") from None
    if d != depth or d < 0:
        raise InputError("depth", depth, "an integer ≥ 0")
    return d
