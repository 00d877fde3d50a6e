"""Gaussian integrals of activations, vectorised over arrays of variances q.

One-input moments (``moments``): for smooth φ a trapezoidal rule in z = u/√q with step
``min(0.5, 0.25/√q)`` over |z| ≤ 10.5.  For integrands analytic in a strip (tanh has poles at
u = ±iπ/2) the trapezoidal rule on ℝ converges geometrically, error ~ exp(−π²/(h√q)) ≈ 1e-17 here,
for every q (plain Gauss–Hermite with a fixed node count loses accuracy as q grows: 1e-8 at q=3
with 256 nodes).  Kinked φ: Gauss–Legendre panels split at the kinks.

Two-input integrals (``PairIntegrals``): closed forms where they exist; hard_tanh by 1-D integrals
with closed-form conditional expectations; otherwise Mehler's formula (THEORY.md §3):
``A(c) = E φ(u1) φ(u2) = Σ_k a_k² c^k`` with ``φ(√q z) = Σ_k a_k He_k(z)/√k!``, and
``B(c) = E φ'(u1) φ'(u2) = A'(c)/q`` (Price's theorem; b_{k−1} = √(k/q) a_k).  The Hermite
coefficients come from a trapezoidal rule (odd φ: half line) fine enough for both φ and the
order-K Hermite functions.  The series is truncated at order K ≈ 80 q + 40 (coefficients beyond
are ≲ 1e-7, squared ≲ 1e-14) and the exact remainder at c = 1, ``M0 − Σ a_k²``, is added as a
single c^(K+1) term, so ``A(1) = M0`` holds to rounding (c = 1 stays an exact fixed point without
noise) and the truncation error is at most that remainder anywhere in [−1, 1].

Speed: for smooth odd φ (tanh) the moments and the Hermite coefficients are analytic in s = √q
for s > 0, so they are tabulated once per process as degree-16 Chebyshev interpolants in s per
octave q ∈ [2^j, 2^(j+1)), j = −10..5 (agreement with the direct rules ≤ 1e-14, tested); a grid
point then costs a 16-term interpolation instead of a quadrature.  Outside that range (q < 2^-10
or q ≥ 64) the direct rules are used, with K capped at its q = 64 value (accuracy degrades slowly
beyond q ≈ 64, i.e. σ_w² μ2 ≳ 60).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from mfpipe.theory.activations import INV_SQRT_2PI, Activation, erf

Z_MAX = 10.5  # one-input integrals: Gaussian weight at 10.5 is 1.4e-24
CHUNK = 1 << 21  # elements per temporary array (points × nodes)

# ------------------------------------------------------------------ one-input moments


def _normal_pdf(z):
    return INV_SQRT_2PI * np.exp(-0.5 * np.square(z))


# Saturating φ (smooth, odd, |φ| → 1: tanh, erf) at large q: φ(u) = ±1 to rounding for
# |u| ≥ U_SAT, so every integral splits into a closed part (φ = sign) and a part localised at
# |u| ≤ U_SAT whatever q is.  The direct rules need nodes ∝ √q (q ≈ σ_w² μ2 grows like 1/ρ for
# dropout: 45 s for one point at ρ = 1e-6, GBs at 1e-10); the split costs the same for every q.
Q_SAT = 64.0  # from here on (the end of the Chebyshev tables); the tables use the direct rules
U_SAT = 40.0  # 1 − tanh²(40) = 7e-35, 1 − erf(40) < 1e-690
H_SAT = 0.25  # trapezoid step in u, as the direct rule's 0.25/√q in z


def saturates(act: Activation) -> bool:
    """Whether ``act`` is smooth, odd and equals ±1 to rounding beyond ±U_SAT."""
    return bool(act.smooth and act.odd and act.bounded
                and float(np.asarray(act.phi(np.array([U_SAT])))[0]) == 1.0)


def _saturated_moments(act: Activation, q: np.ndarray) -> np.ndarray:
    """M0, M1, M2, dM1 (4 × points) for saturating φ and q ≥ Q_SAT, at a cost independent of q.

    M0 = 1 − E(1 − φ²); 1 − φ², φ'², φφ'' and φ''² + φ'φ‴ vanish beyond |u| = U_SAT, so the
    trapezoidal rule in u with step H_SAT over [0, U_SAT] (even integrands, folded) is as
    accurate as the direct rule (integrands analytic in a strip: geometric convergence).
    """
    u = np.arange(0.0, U_SAT + 0.5 * H_SAT, H_SAT)
    w = np.full(u.size, 2.0 * H_SAT)
    w[0] = H_SAT
    f0, f1, f2, f3 = act.phi(u), act.dphi(u), act.d2phi(u), act.d3phi(u)
    # M1 + M2 = dM0/dq = E[u φ φ']/q (Stein): a positive integrand, where φ'² + φφ'' nearly
    # cancels (its integral is O(q^-3/2)); M2 is taken as the difference so M1 + M2 keeps it
    g = np.stack([(1.0 - f0) * (1.0 + f0), f1 * f1, u * f0 * f1, f2 * f2 + f1 * f3], axis=1)
    out = np.empty((4, q.size))
    step = max(1, CHUNK // u.size)
    for start in range(0, q.size, step):
        qs = q[start:start + step]
        sq = np.sqrt(qs)[:, None]
        dens = w[None, :] * _normal_pdf(u[None, :] / sq) / sq
        part = (dens @ g).T
        part[2] = part[2] / qs - part[1]
        out[:, start:start + step] = part
    out[0] = 1.0 - out[0]
    return out


def _trapezoid_moments(act: Activation, q: np.ndarray):
    """M0, M1, M2, dM1 for smooth φ by the trapezoidal rule (q flat, ≥ 0); saturating φ at
    q ≥ Q_SAT by ``_saturated_moments``."""
    out = np.empty((4, q.size))
    if q.size == 0:
        return out
    large = q >= Q_SAT
    if large.any() and saturates(act):
        out[:, large] = _saturated_moments(act, q[large])
        small = np.flatnonzero(~large)
        if small.size:
            out[:, small] = _trapezoid_moments(act, q[small])
        return out
    h = np.minimum(0.5, 0.25 / np.sqrt(np.maximum(q, 1e-300)))
    n_half = int(math.ceil(Z_MAX / h.min()))
    j = np.arange(-n_half, n_half + 1, dtype=float) if not act.odd else np.arange(0, n_half + 1, dtype=float)
    step = max(1, CHUNK // j.size)
    for start in range(0, q.size, step):
        sl = slice(start, start + step)
        hp = h[sl, None]
        z = j[None, :] * hp
        w = hp * _normal_pdf(z)
        if act.odd:  # even integrands: fold the half line, centre node counted once
            w[:, 1:] *= 2.0
        z = np.where(np.abs(z) <= Z_MAX + 1.0, z, 0.0)  # nodes beyond the range carry no weight
        w = np.where(np.abs(j[None, :] * hp) <= Z_MAX + 1.0, w, 0.0)
        u = z * np.sqrt(q[sl, None])
        f0, f1, f2, f3 = act.phi(u), act.dphi(u), act.d2phi(u), act.d3phi(u)
        out[0, sl] = np.sum(w * f0 * f0, axis=1)
        out[1, sl] = np.sum(w * f1 * f1, axis=1)
        out[2, sl] = np.sum(w * f0 * f2, axis=1)
        out[3, sl] = np.sum(w * (f2 * f2 + f1 * f3), axis=1)
    return out


@functools.lru_cache(maxsize=None)
def _legendre(m: int):
    return np.polynomial.legendre.leggauss(m)


def _panel_rule(breaks: np.ndarray, m: int):
    """Gauss–Legendre nodes/weights on consecutive panels; breaks (P, nb) sorted → (P, (nb−1)·m)."""
    x, w = _legendre(m)
    lo, hi = breaks[:, :-1, None], breaks[:, 1:, None]
    half = 0.5 * (hi - lo)
    nodes = (lo + hi) * 0.5 + half * x
    weights = half * w
    return nodes.reshape(breaks.shape[0], -1), weights.reshape(breaks.shape[0], -1)


def _panel_moments(act: Activation, q: np.ndarray, m: int = 64):
    """M0, M1 for kinked φ by Gauss–Legendre panels in z split at the kinks."""
    out = np.full((4, q.size), np.nan)
    sq = np.sqrt(np.maximum(q, 1e-300))
    kinks = [np.clip(k / sq, -Z_MAX, Z_MAX) for k in act.kinks]
    breaks = np.sort(np.stack([np.full_like(q, -Z_MAX), *kinks, np.full_like(q, Z_MAX)], axis=1), axis=1)
    z, w = _panel_rule(breaks, m)
    w = w * _normal_pdf(z)
    u = z * sq[:, None]
    f0, f1 = act.phi(u), act.dphi(u)
    out[0] = np.sum(w * f0 * f0, axis=1)
    out[1] = np.sum(w * f1 * f1, axis=1)
    return out


def moments(act: Activation, q, method: str = "auto"):
    """(M0, M1, M2, dM1) arrays of the shape of q (see activations for the notation).

    method: "auto" (closed form if available), "closed", "quadrature" (Chebyshev tables of the
    trapezoid rule for smooth odd φ), or "direct" (the trapezoid rule itself).  For kinked φ the
    distributional parts (M2, dM1) always come from the closed form.
    """
    q = np.asarray(q, dtype=float)
    shape = q.shape
    flat = q.ravel()
    if method == "closed" or (method == "auto" and act.closed_moments is not None):
        res = np.stack([np.asarray(r, dtype=float).ravel() for r in
                        np.broadcast_arrays(*act.closed_moments(flat))])
    elif act.smooth and act.odd and method != "direct":
        res = _tabulated_moments(act, flat)
    elif act.smooth:
        res = _trapezoid_moments(act, flat)
    else:
        res = _panel_moments(act, flat)
        if act.closed_moments is not None:
            closed = act.closed_moments(flat)
            res[2], res[3] = closed[2], closed[3]
    return tuple(r.reshape(shape) for r in res)


# ------------------------------------------------------------------ Mehler (Hermite) series

K_CAP_Q = 64.0  # series order stops growing beyond q = 64 (accuracy degrades slowly above)


def _order(q_max: float) -> int:
    return int(math.ceil(80.0 * min(q_max, K_CAP_Q) + 40.0))


def _hermite_coefficients(act: Activation, q: np.ndarray, k_max: int, h: float):
    """Signed Hermite coefficients of φ(√q z) (odd orders ≤ k_max) and φ'(√q z) (even orders).

    Half-line trapezoid with step h over z ≤ √(4K+2) + 8 (the support of He_K² ϕ); normalised
    Hermite functions by their stable three-term recurrence, one order at a time (memory: points ×
    nodes).  The step must resolve both φ(√q z) (h ≤ 0.15/√q) and He_K (h ≲ 1/√K).
    """
    z_end = math.sqrt(4.0 * k_max + 2.0) + 8.0
    z = np.arange(0.0, z_end + h, h)
    sqrt_pdf = np.sqrt(_normal_pdf(z))
    weight = np.full(z.shape, 2.0 * h)
    weight[0] = h
    u = np.sqrt(q)[:, None] * z[None, :]
    f0 = act.phi(u) * (weight * sqrt_pdf)
    f1 = act.dphi(u) * (weight * sqrt_pdf)
    a = np.empty((q.size, (k_max + 1) // 2))
    b = np.empty((q.size, k_max // 2 + 1))
    g_prev = np.zeros_like(z)
    g = sqrt_pdf.copy()  # g_k = He_k(z) √ϕ(z) / √k!
    for k in range(k_max + 1):
        if k % 2:
            a[:, k // 2] = f0 @ g
        else:
            b[:, k // 2] = f1 @ g
        g_prev, g = g, (z * g - math.sqrt(k) * g_prev) / math.sqrt(k + 1.0)
    return a, b


def _step(q_max: float) -> float:
    return min(0.25, 0.15 / math.sqrt(q_max))


# Chebyshev tables in s = √q, one per octave q ∈ [2^j, 2^(j+1)): the moments and the Hermite
# coefficients are analytic in s for s > 0, so degree 20 interpolates them to ~1e-15 (checked
# in tests against the direct rules).  Points outside the tabulated octaves use the direct rules.
TABLE_OCTAVES = (-10, 5)  # q ∈ [2^-10, 2^6)
CHEB_DEGREE = 16


def _cheb_nodes():
    return np.cos(np.pi * (np.arange(CHEB_DEGREE) + 0.5) / CHEB_DEGREE)


def _octave_s(j: int):
    return math.sqrt(2.0 ** j), math.sqrt(2.0 ** (j + 1))


def _cheb_fit(values: np.ndarray) -> np.ndarray:
    vander = np.polynomial.chebyshev.chebvander(_cheb_nodes(), CHEB_DEGREE - 1)
    return np.linalg.solve(vander, values)


def _cheb_basis(s: np.ndarray, j: int) -> np.ndarray:
    """Chebyshev polynomials T_0..T_{D−1} at s mapped from octave j, shape (D, points), contiguous."""
    lo, hi = _octave_s(j)
    x = (2.0 * s - (lo + hi)) / (hi - lo)
    out = np.empty((CHEB_DEGREE, x.size))
    out[0] = 1.0
    out[1] = x
    for d in range(2, CHEB_DEGREE):
        np.multiply(2.0 * x, out[d - 1], out=out[d])
        out[d] -= out[d - 2]
    return out


@functools.lru_cache(maxsize=None)
def _moment_table(act: Activation, j: int) -> np.ndarray:
    lo, hi = _octave_s(j)
    s = 0.5 * (lo + hi) + 0.5 * (hi - lo) * _cheb_nodes()
    return _cheb_fit(_trapezoid_moments(act, s * s).T)


@functools.lru_cache(maxsize=None)
def _coefficient_table(act: Activation, j: int):
    """Chebyshev coefficients (D × orders) of the odd Hermite coefficients of φ on octave j, and
    their transpose (orders × D, contiguous, for fast products with ``_cheb_basis``)."""
    lo, hi = _octave_s(j)
    s = 0.5 * (lo + hi) + 0.5 * (hi - lo) * _cheb_nodes()
    q_max = 2.0 ** (j + 1)
    a, _ = _hermite_coefficients(act, s * s, _order(q_max), _step(q_max))
    table = _cheb_fit(a)
    return table, np.ascontiguousarray(table.T)


def _octave(q: np.ndarray) -> np.ndarray:
    """Table octave of each q, or a sentinel below/above the tabulated range."""
    with np.errstate(divide="ignore"):
        j = np.floor(np.log2(np.where(q > 0, q, 1e-300))).astype(int)
    return np.clip(j, TABLE_OCTAVES[0] - 1, TABLE_OCTAVES[1] + 1)


def _tabulated_moments(act: Activation, q: np.ndarray) -> np.ndarray:
    out = np.empty((4, q.size))
    j = _octave(q)
    inside = (j >= TABLE_OCTAVES[0]) & (j <= TABLE_OCTAVES[1])
    outside = np.flatnonzero(~inside)
    if outside.size:
        out[:, outside] = _trapezoid_moments(act, q[outside])
    for jj in np.unique(j[inside]):
        sel = np.flatnonzero(j == jj)
        # einsum: BLAS is slow for this skinny (points × 20) @ (20 × 4) product
        out[:, sel] = np.einsum("dp,dk->kp", _cheb_basis(np.sqrt(q[sel]), int(jj)), _moment_table(act, int(jj)))
    return out


def _signed_coefficients(act: Activation, q: np.ndarray, key: int):
    """Odd Hermite coefficients of φ (orders × points) for one octave key (tabulated or direct).

    φ' needs no coefficients of its own: b_{k−1} = √(k/q) a_k (differentiate the expansion), i.e.
    B(c) = A'(c)/q (Price's theorem).
    """
    if TABLE_OCTAVES[0] <= key <= TABLE_OCTAVES[1]:
        _, ta_t = _coefficient_table(act, key)
        return ta_t @ _cheb_basis(np.sqrt(q), key)
    q_max = 2.0 ** TABLE_OCTAVES[0] if key < TABLE_OCTAVES[0] else float(q.max())
    if key > TABLE_OCTAVES[1] and saturates(act):  # q ≥ 64 = Q_SAT: cost independent of q
        return _saturated_coefficients(act, q, _order(q_max))
    a = np.empty((q.size, (_order(q_max) + 1) // 2))
    b = np.empty((q.size, _order(q_max) // 2 + 1))
    step = max(1, CHUNK // int((math.sqrt(4 * _order(q_max) + 2) + 8) / _step(q_max) + 1))
    for start in range(0, q.size, step):
        sl = slice(start, start + step)
        a[sl], b[sl] = _hermite_coefficients(act, q[sl], _order(q_max), _step(q_max))
    return a.T


def _saturated_coefficients(act: Activation, q: np.ndarray, k_max: int,
                            m: int = 16) -> np.ndarray:
    """Odd Hermite coefficients a_1, a_3, … ≤ k_max of φ(√q z) (orders × points) for saturating
    φ and q ≥ Q_SAT, at a cost that does not grow with q.

    φ(√q z) = sign(z) + d(z) with d = φ(√q z) − sign(z) zero beyond |z| = U_SAT/√q.  sign has
    closed-form coefficients 2 √ϕ(0) g_{k−1}(0)/√k (∫_0^∞ He_k ϕ = He_{k−1}(0) ϕ(0)); d, smooth on
    [0, U_SAT/√q], by Gauss–Legendre panels no wider than 1 in u (tanh's poles are π/2 off the
    axis) and 0.05 in z (He_K oscillates on 2π/√(2K) ≈ 0.06 at the largest K).
    """
    q = np.asarray(q, dtype=float).ravel()
    n_odd = (k_max + 1) // 2
    # sign(z): g_m(0) by the recurrence g_{m+1} = −√(m/(m+1)) g_{m−1}, g_0 = √ϕ(0)
    g0 = np.zeros(k_max + 1)
    g0[0] = math.sqrt(INV_SQRT_2PI)
    for mm in range(1, k_max):
        g0[mm + 1] = -math.sqrt(mm / (mm + 1.0)) * g0[mm - 1]
    ks = np.arange(1, k_max + 1, 2)
    out = np.empty((n_odd, q.size))
    out[:] = (2.0 * g0[0] * g0[ks - 1] / np.sqrt(ks))[:, None]
    sq = np.sqrt(q)
    z_end = U_SAT / sq
    width = np.minimum(1.0 / sq, 0.05)
    panels = int(np.ceil(np.max(z_end / width))) if q.size else 1
    x, wl = _legendre(m)
    step = max(1, CHUNK // (panels * m))
    for start in range(0, q.size, step):
        sl = slice(start, start + step)
        edges = np.linspace(0.0, 1.0, panels + 1)[None, :] * z_end[sl, None]  # points × panels+1
        lo, hi = edges[:, :-1, None], edges[:, 1:, None]
        half = 0.5 * (hi - lo)
        z = ((lo + hi) * 0.5 + half * x).reshape(edges.shape[0], -1)
        w = (half * wl).reshape(edges.shape[0], -1)
        sqrt_pdf = np.sqrt(_normal_pdf(z))
        f = 2.0 * w * sqrt_pdf * (act.phi(sq[sl, None] * z) - 1.0)
        g_prev = np.zeros_like(z)
        g = sqrt_pdf.copy()
        for k in range(k_max + 1):
            if k % 2:
                out[k // 2, sl] += np.einsum("pn,pn->p", f, g)
            g_prev, g = g, (z * g - math.sqrt(k) * g_prev) / math.sqrt(k + 1.0)
    return out


def _panel_coefficients(act: Activation, q: np.ndarray, k_max: int, panels: int = 48, m: int = 32):
    """Squared Hermite coefficients of φ(√q z) and φ'(√q z), orders 0..k_max, for any φ.

    Gauss–Legendre panels split at the kinks z = kink/√q, so kinked φ are integrated exactly
    piecewise; per-point nodes, Hermite recurrence over the order (cross-checks, small grids).
    """
    z_end = math.sqrt(4.0 * k_max + 2.0) + 8.0
    sq = np.sqrt(q)
    uniform = np.broadcast_to(np.linspace(-z_end, z_end, panels + 1), (q.size, panels + 1))
    kinks = [np.clip(k / sq, -z_end, z_end)[:, None] for k in act.kinks]
    breaks = np.sort(np.concatenate([uniform, *kinks], axis=1), axis=1)
    z, w = _panel_rule(breaks, m)
    sqrt_pdf = np.sqrt(_normal_pdf(z))
    u = z * sq[:, None]
    f0 = w * sqrt_pdf * act.phi(u)
    f1 = w * sqrt_pdf * act.dphi(u)
    g_prev = np.zeros_like(z)
    g = sqrt_pdf.copy()
    a = np.empty((q.size, k_max + 1))
    b = np.empty((q.size, k_max + 1))
    for k in range(k_max + 1):
        a[:, k] = np.sum(f0 * g, axis=1)
        b[:, k] = np.sum(f1 * g, axis=1)
        g_prev, g = g, (z * g - math.sqrt(k) * g_prev) / math.sqrt(k + 1.0)
    return a * a, b * b


class _Series:
    """Σ_m coef[m, :] x^m + tail x^M (M = number of orders; x = c² for the odd/even halves).

    Horner, vectorised over points.  Orders whose contribution is below 1e-18 for every evaluated
    point (x^m times the largest remaining coefficient sum) are skipped, so decorrelated points
    cost a few terms only.  ``tail`` is the exact remainder at x = 1 placed on the first omitted
    power, so the series is exact at c = ±1.
    """

    def __init__(self, coef: np.ndarray, tail: np.ndarray):
        self.coef = coef  # (orders, points), coefficients ≥ 0
        self.tail = tail
        # suffix[m] = Σ_{m' ≥ m} max over points coef_m'  (bounds every point's remainder)
        self.suffix = np.flip(np.cumsum(np.flip(coef.max(axis=1)))) + max(float(np.max(np.abs(tail), initial=0)), 0)

    def value_and_slope(self, x: np.ndarray, rows: np.ndarray):
        """Value and d/dx at x for the points ``rows``."""
        x_max = float(np.max(np.abs(x))) if x.size else 0.0
        n_orders = self.coef.shape[0]
        whole = rows.size == self.coef.shape[1]
        tail = self.tail if whole else self.tail[rows]
        order = n_orders
        if x_max < 1.0:
            with np.errstate(divide="ignore", under="ignore"):
                bound = self.suffix[:n_orders] * np.exp(np.arange(n_orders) * math.log(max(x_max, 1e-300)))
            small = np.flatnonzero(bound < 1e-18)
            if small.size:
                order = max(int(small[0]), 1)
        coef = self.coef[:order] if whole else self.coef[:order, rows]
        val = np.zeros_like(x)
        der = np.zeros_like(x)
        for m in range(order - 1, -1, -1):
            der *= x
            der += val
            val *= x
            val += coef[m]
        if order == n_orders:
            with np.errstate(under="ignore"):
                xm1 = x ** (n_orders - 1)
            val += tail * xm1 * x
            der += n_orders * tail * xm1
        return val, der


@functools.lru_cache(maxsize=None)
def _remainder_bound(act: Activation, key: int) -> np.ndarray:
    """bound[m] ≥ Σ_{m' ≥ m} α_{2m'+1}(q) (incl. the part beyond the series) for q in the octave.

    From the coefficients at the Chebyshev nodes, with a safety factor 4 (they vary smoothly).
    """
    ta, _ = _coefficient_table(act, key)
    vander = np.polynomial.chebyshev.chebvander(_cheb_nodes(), CHEB_DEGREE - 1)
    alpha = np.square(vander @ ta)  # (nodes, orders)
    m0 = (vander @ _moment_table(act, key))[:, 0]
    beyond = np.abs(m0 - alpha.sum(axis=1)).max()
    return 4.0 * (np.flip(np.cumsum(np.flip(alpha.max(axis=0)))) + beyond)


class _OddMehler:
    """Odd Mehler series A(c) = c Σ_m α_{2m+1} c^{2m} of smooth odd φ, built lazily per point.

    A point gets only the orders its largest evaluated |c| needs (remainder < 1e-18, from
    ``_remainder_bound``), rounded up to a multiple of 16: decorrelated points cost a few orders,
    points near c = 1 the full series.  Each series carries the exact remainder at c = 1 as a
    last term, so A(±1) = ±M0 whatever the truncation.
    """

    GROUP = 16
    TOL = 1e-18

    def __init__(self, act: Activation, q: np.ndarray, m0: np.ndarray):
        self.act, self.q, self.m0 = act, q, m0
        self.key = _octave(q)
        self.x_lim = np.full(q.size, -1.0)  # largest c² each point's series is good for
        self.group = np.full(q.size, -1)
        self.row = np.zeros(q.size, dtype=np.intp)
        self.groups: list[_Series] = []
        self.low: dict[int, _Series] = {}

    def _tabulated(self, key: int) -> bool:
        return TABLE_OCTAVES[0] <= key <= TABLE_OCTAVES[1]

    def _coefficients(self, pts: np.ndarray, key: int, n: int) -> np.ndarray:
        """Squared coefficients, first n odd orders (all if n is None), orders × points."""
        if self._tabulated(key):
            _, ta_t = _coefficient_table(self.act, key)
            alpha = ta_t[:n] @ _cheb_basis(np.sqrt(self.q[pts]), key)
        else:
            alpha = _signed_coefficients(self.act, self.q[pts], key)[:n]
        return np.square(alpha, out=alpha)

    def _low_series(self, n: int) -> _Series:
        if n not in self.low:
            alpha = np.empty((n, self.q.size))
            for key in np.unique(self.key):
                pts = np.flatnonzero(self.key == key)
                alpha[:, pts] = self._coefficients(pts, int(key), n)
            self.low[n] = _Series(alpha, self.m0 - alpha.sum(axis=0))
        return self.low[n]

    def _assign(self, pts: np.ndarray, x: np.ndarray) -> None:
        for key in np.unique(self.key[pts]):
            key = int(key)
            sel = self.key[pts] == key
            p, xs = pts[sel], x[sel]
            if self._tabulated(key):
                bound = _remainder_bound(self.act, key)
                full = bound.size
                cands = np.arange(self.GROUP, full, self.GROUP)
                with np.errstate(divide="ignore", under="ignore"):
                    ok = bound[cands][None, :] * np.exp(cands[None, :] * np.log(np.maximum(xs, 1e-300))[:, None]) < self.TOL
                first = np.where(ok.any(axis=1), cands[np.argmax(ok, axis=1)], full)
                n_of = np.where(xs >= 1.0, full, first)
            else:
                full = None
                n_of = np.zeros(p.size, dtype=int)
            for n in np.unique(n_of):
                g = p[n_of == n]
                alpha = self._coefficients(g, key, None if full is None or n == full else int(n))
                self.group[g] = len(self.groups)
                self.row[g] = np.arange(g.size)
                self.groups.append(_Series(alpha, self.m0[g] - alpha.sum(axis=0)))
                if full is None or n == full:
                    self.x_lim[g] = 1.0
                else:
                    self.x_lim[g] = math.exp(math.log(self.TOL / bound[n]) / n)

    def value_and_slope(self, x: np.ndarray, idx: np.ndarray, max_order: int | None = None):
        """S(x) and S'(x) with A = c S(c²), for the points idx."""
        if max_order is not None:
            return self._low_series(max_order).value_and_slope(x, idx)
        stale = x > self.x_lim[idx]
        if stale.any():  # first evaluation, or |c| grew: (re)build with a small margin
            self._assign(idx[stale], np.minimum(x[stale] * (1.0 + 1e-6) + 1e-12, 1.0))
        val = np.empty_like(x)
        der = np.empty_like(x)
        groups = self.group[idx]
        for gid in np.unique(groups):
            sel = np.flatnonzero(groups == gid)
            val[sel], der[sel] = self.groups[gid].value_and_slope(x[sel], self.row[idx[sel]])
        return val, der


class PairIntegrals:
    """A(c) = E φ(u1)φ(u2), dA/dc and B(c) = E φ'(u1)φ'(u2) for a flat array of variances q.

    Methods take c for a subset of points ``idx`` (flat indices into q), so a root finder can
    evaluate only its unconverged points.
    """

    def __init__(self, act: Activation, q, method: str = "auto", m0=None, m1=None):
        self.act = act
        self.q = np.asarray(q, dtype=float).ravel()
        if method == "closed" and act.closed_pair is None and act.name != "hard_tanh":
            raise ValueError(f"no closed-form pair integrals for {act.name}")
        if method in ("auto", "closed") and act.closed_pair is not None:
            self.kind = "closed"
        elif method in ("auto", "closed") and act.name == "hard_tanh":
            self.kind = "hard_tanh"
        else:
            self.kind = "mehler"
        if self.kind == "mehler":
            if m0 is None or m1 is None:
                mom = moments(act, self.q, method="quadrature" if method == "quadrature" else "auto")
                m0, m1 = mom[0], mom[1]
            self._build_mehler(np.asarray(m0, float).ravel(), np.asarray(m1, float).ravel())
        elif self.kind == "hard_tanh":
            self.m0, self.m1 = moments(act, self.q)[:2]
            self._approx = None

    # ---------------------------------------------------------- Mehler construction
    def _build_mehler(self, m0, m1):
        act = self.act
        q = self.q
        self.odd = act.odd and act.smooth
        if self.odd:
            self.odd_series = _OddMehler(act, q, m0)
            return
        self.bucket = np.zeros(q.size, dtype=int)
        self.row = np.zeros(q.size, dtype=np.intp)
        self.series = {}
        for key in np.unique(self.bucket):
            members = np.flatnonzero(self.bucket == key)
            self.row[members] = np.arange(members.size)
            alpha, beta = _panel_coefficients(act, q[members], max(_order(float(q[members].max())), 400))
            alpha, beta = alpha.T, beta.T
            # exact remainders at c = 1, put on the first omitted power
            tail_a = m0[members] - alpha.sum(axis=0)
            tail_b = m1[members] - beta.sum(axis=0)
            self.series[key] = (_Series(alpha, tail_a), _Series(beta, tail_b))

    def _mehler_eval(self, c, idx, want, max_order=None):
        c = np.asarray(c, dtype=float)
        out = [np.empty_like(c) for _ in want]
        if self.odd:
            x = c * c
            va, da = self.odd_series.value_and_slope(x, idx, max_order)
            res = {"A": c * va, "dA": va + 2.0 * x * da}  # A = c S(c²); dA/dc = S + 2c² S'
            if "B" in want:  # Price: B = A'(c) / q
                res["B"] = res["dA"] / self.q[idx]
            return [res[w] for w in want]
        buckets = self.bucket[idx]  # any φ (panel coefficients): full power series in c
        for b in np.unique(buckets):
            sel = np.flatnonzero(buckets == b)
            rows = self.row[idx[sel]]
            ser_a, ser_b = self.series[b]
            for i, name in enumerate(want):
                ser = ser_b if name == "B" else ser_a
                v, d = ser.value_and_slope(c[sel], rows)
                out[i][sel] = d if name == "dA" else v
        return out

    # ---------------------------------------------------------- public evaluation
    def evaluate(self, c, idx=None, want=("A", "dA", "B"), max_order=None):
        """Arrays for the requested quantities at correlations c (for points idx).

        ``max_order`` (Mehler series of odd φ only): a truncated series, exact at c = ±1, for a
        cheap first approach to a fixed point; None (default) for the full accuracy.
        """
        idx = np.arange(self.q.size) if idx is None else np.asarray(idx)
        c = np.asarray(c, dtype=float)
        q = self.q[idx]
        if self.kind == "mehler":
            return self._mehler_eval(c, idx, want, max_order if self.odd else None)
        if self.kind == "closed":
            a, b = self.act.closed_pair(q, c)
        elif max_order is not None:  # hard_tanh: closed-form Hermite coefficients, 256 odd orders
            if self._approx is None:
                alpha = hard_tanh_alpha(self.q, HARD_TANH_APPROX_ORDERS)
                self._approx = _Series(alpha, self.m0 - alpha.sum(axis=0))
            va, da = self._approx.value_and_slope(c * c, idx)
            a, b = c * va, (va + 2.0 * c * c * da) / q
        else:
            a, b = hard_tanh_pair(q, c, self.m0[idx], self.m1[idx])
        a, b = np.broadcast_to(a, c.shape), np.broadcast_to(b, c.shape)
        res = {"A": a, "B": b, "dA": q * b}
        return [np.array(res[w], dtype=float) for w in want]


# ------------------------------------------------------------------ hard_tanh pairs


def _norm_cdf(x):
    from scipy.special import ndtr

    return ndtr(x)


def _clip_mean(mu, s):
    """E clip(X, −1, 1) for X ~ N(mu, s²), s > 0."""
    alpha = (-1.0 - mu) / s
    beta = (1.0 - mu) / s
    p_lo, p_hi = _norm_cdf(alpha), _norm_cdf(beta)
    return (1.0 - p_hi) - p_lo + mu * (p_hi - p_lo) + s * (_normal_pdf(alpha) - _normal_pdf(beta))


HARD_TANH_APPROX_ORDERS = 256


def hard_tanh_alpha(q, n_odd: int) -> np.ndarray:
    """Squared odd Hermite coefficients α_k of hard_tanh(√q z), k = 1, 3, …, 2·n_odd − 1 (rows).

    Integrating by parts, a_k √k! = √q ∫_{−a}^{a} He_{k−1} ϕ = −2 √q He_{k−2}(a) ϕ(a) (a = 1/√q),
    so α_1 = q (2Φ(a) − 1)² and α_k = 4 q ϕ(a) g_{k−2}(a)² / (k (k−1)) with the normalised Hermite
    functions g_m = He_m √ϕ / √m!.  They decay only like k^(−5/2) (kinks): used truncated, as a
    cheap first approach to c*.
    """
    q = np.asarray(q, dtype=float)
    a = 1.0 / np.sqrt(q)
    pdf = _normal_pdf(a)
    out = np.empty((n_odd, q.size))
    out[0] = q * np.square(erf(a / math.sqrt(2.0)))
    g_prev, g = np.zeros_like(a), np.sqrt(pdf)
    for m in range(0, 2 * n_odd - 2):
        if m % 2 == 1:  # k = m + 2 odd
            k = m + 2
            out[(k - 1) // 2] = 4.0 * q * pdf * np.square(g) / (k * (k - 1.0))
        g_prev, g = g, (a * g - math.sqrt(m) * g_prev) / math.sqrt(m + 1.0)
    return out


def hard_tanh_pair(q, c, m0=None, m1=None, m: int = 32):
    """A, B for hard_tanh via E_{u1}[φ(u1) E(φ(u2)|u1)] on Gauss–Legendre panels split at the kinks.

    B = P(|u1| < 1, |u2| < 1).  At |c| = 1 the closed one-input moments are used.
    """
    q, c = np.broadcast_arrays(np.asarray(q, dtype=float), np.asarray(c, dtype=float))
    shape = q.shape
    q, c = q.ravel(), c.ravel()
    sign = np.sign(c)
    ca = np.minimum(np.abs(c), 1.0)
    if m0 is None or m1 is None:
        from mfpipe.theory.activations import ACTIVATIONS
        m0, m1 = ACTIVATIONS["hard_tanh"].closed_moments(q)[:2]
    m0 = np.broadcast_to(m0, q.shape).ravel()
    m1 = np.broadcast_to(m1, q.shape).ravel()
    one = ca >= 1.0
    cc = np.where(one, 0.5, ca)
    sq = np.sqrt(q)
    s = sq * np.sqrt(1.0 - cc * cc)  # conditional std of u2 given u1
    u_end = Z_MAX * sq
    inv_c = np.where(cc > 0, 1.0 / np.maximum(cc, 1e-300), u_end)
    b1 = np.minimum(1.0, u_end)
    # E(φ(u2)|u1) switches over a width s/c around u1 = 1/c: resolve it with its own panels
    width = np.where(cc > 0, 10.0 * s * inv_c, 0.0)
    breaks = np.sort(np.stack([np.zeros_like(q), b1, np.clip(inv_c - width, 0, u_end),
                               np.clip(inv_c, 0, u_end), np.clip(inv_c + width, 0, u_end), u_end], axis=1), axis=1)
    u, w = _panel_rule(breaks, m)
    dens = w * _normal_pdf(u / sq[:, None]) / sq[:, None]
    cond = _clip_mean(cc[:, None] * u, s[:, None])
    a = 2.0 * np.sum(dens * np.clip(u, -1.0, 1.0) * cond, axis=1)
    # B: u1 ∈ (−1, 1): P(|u2| < 1 | u1) = Φ((1 − c u1)/s) − Φ((−1 − c u1)/s); even in u1
    ub, wb = _panel_rule(np.stack([np.zeros_like(q), np.clip(b1 - width, 0, b1), b1], axis=1), m)
    densb = wb * _normal_pdf(ub / sq[:, None]) / sq[:, None]
    p = _norm_cdf((1.0 - cc[:, None] * ub) / s[:, None]) - _norm_cdf((-1.0 - cc[:, None] * ub) / s[:, None])
    b = 2.0 * np.sum(densb * p, axis=1)
    a = np.where(one, m0, a) * sign  # A is odd in c
    b = np.where(one, m1, b)  # B is even in c (φ' even)
    return a.reshape(shape), b.reshape(shape)
