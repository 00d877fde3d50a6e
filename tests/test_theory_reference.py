"""Accuracy of mfpipe.theory against an independent high-precision computation.

The reference below is written separately from the engine: adaptive scipy quad for one-input
integrals, a 400 × 400 Gauss–Legendre product rule on [−12, 12]² for two-input integrals, and
scipy.optimize.brentq per point for every fixed point and for the critical line (the engine uses
trapezoid/Mehler series and a vectorised Newton–bisection).  Agreement: 1e-6 relative.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize

from mfpipe.theory import critical_sigma_w2, depth_scales

TANH = {
    "phi": np.tanh,
    "d1": lambda u: 1 / np.cosh(u) ** 2,
    "d2": lambda u: -2 * np.tanh(u) / np.cosh(u) ** 2,
}


def gauss(f, q):
    s = math.sqrt(q)
    val, _ = integrate.quad(lambda z: f(s * z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi),
                            -14, 14, epsabs=0, epsrel=1e-13, limit=400, points=[0.0])
    return val


_X, _W = np.polynomial.legendre.leggauss(400)
_Z = 12.0 * _X
_WZ = 12.0 * _W * np.exp(-_Z ** 2 / 2) / math.sqrt(2 * math.pi)


def gauss2(f, q, c):
    """E f(u1) f(u2), u = √q (z1, c z1 + √(1−c²) z2), on a Legendre product grid."""
    s = math.sqrt(q)
    z1, z2 = _Z[:, None], _Z[None, :]
    u1 = s * z1
    u2 = s * (c * z1 + math.sqrt(max(0.0, 1 - c * c)) * z2)
    return float(_WZ @ (f(u1) * f(u2)) @ _WZ)


def reference(sw, sb, rho):
    mu2 = 1.0 / rho
    phi, d1, d2 = TANH["phi"], TANH["d1"], TANH["d2"]
    qmap = lambda q: sw * mu2 * gauss(lambda u: phi(u) ** 2, q) + sb
    q = optimize.brentq(lambda q: qmap(q) - q, sb, sb + sw * mu2, xtol=1e-15, rtol=1e-15)
    chi1 = sw * mu2 * gauss(lambda u: d1(u) ** 2, q)
    slope_q = chi1 + sw * mu2 * gauss(lambda u: phi(u) * d2(u), q)
    cmap = lambda c: (sw * gauss2(phi, q, c) + sb) / q
    if rho == 1.0 and chi1 <= 1.0:
        c = 1.0
    else:
        top = 1.0 if rho < 1.0 else 1.0 - 1e-9
        c = optimize.brentq(lambda c: cmap(c) - c, 0.0, top, xtol=1e-15, rtol=1e-15)
    chi_c = sw * gauss2(d1, q, c)
    return {"q_star": q, "c_star": c, "chi_1": chi1, "chi_c": chi_c,
            "xi_q": -1 / math.log(slope_q), "xi_c": -1 / math.log(chi_c), "xi_grad": -1 / math.log(chi1)}


def ref_critical(sb, rho):
    mu2 = 1.0 / rho

    def chi1_minus_one(sw):
        q = optimize.brentq(lambda q: sw * mu2 * gauss(lambda u: np.tanh(u) ** 2, q) + sb - q,
                            sb, sb + sw * mu2, xtol=1e-15, rtol=1e-15)
        return sw * mu2 * gauss(lambda u: TANH["d1"](u) ** 2, q) - 1

    return optimize.brentq(chi1_minus_one, 0.5 * rho, 10.0, xtol=1e-14, rtol=1e-15)


POINTS = [  # (σ_w², σ_b², ρ)
    (1.2, 0.05, 1.0),  # ordered
    (2.5, 0.05, 1.0),  # chaotic
    (3.5, 0.3, 1.0),  # chaotic, larger q*
    (1.2, 0.05, 0.9),  # dropout
    (2.5, 0.1, 0.94),
    (4.0, 0.05, 0.5),  # strong dropout, q* ≈ 7
]


def _assert_close(got, want, keys, rtol=1e-6):
    for k in keys:
        assert math.isclose(float(got[k]), want[k], rel_tol=rtol), (k, float(got[k]), want[k])


@pytest.mark.parametrize("sw,sb,rho", POINTS)
def test_tanh_matches_independent_reference(sw, sb, rho):
    got = depth_scales("tanh", sw, sb, rho)
    _assert_close(got, reference(sw, sb, rho), got.keys())


def test_vectorised_grid_equals_pointwise():
    sw = np.array([p[0] for p in POINTS])
    sb = np.array([p[1] for p in POINTS])
    rho = np.array([p[2] for p in POINTS])
    grid = depth_scales("tanh", sw, sb, rho)
    for i, p in enumerate(POINTS):
        one = depth_scales("tanh", *p)
        for k in grid:
            assert grid[k][i] == pytest.approx(float(one[k]), rel=1e-12), k


@pytest.mark.parametrize("sb,rho", [(0.05, 1.0), (0.3, 1.0), (0.05, 0.94)])
def test_critical_line_matches_reference(sb, rho):
    assert float(critical_sigma_w2("tanh", sb, rho)) == pytest.approx(ref_critical(sb, rho), rel=1e-9)


@pytest.mark.parametrize("side", [-1, 1])
@pytest.mark.parametrize("rho", [1.0, 0.99])
def test_near_critical_within_1e_3(side, rho):
    sb = 0.05
    sw = float(critical_sigma_w2("tanh", sb, rho)) * (1 + side * 1e-3)
    got = depth_scales("tanh", sw, sb, rho)
    want = reference(sw, sb, rho)
    keys = ["q_star", "c_star", "chi_1", "chi_c", "xi_q", "xi_c"]
    _assert_close(got, want, keys)
    # ξ_∇ = −1/ln χ1 with χ1 − 1 ≈ ±5e-4: the reference itself carries ~1e-13/5e-4 relative error
    _assert_close(got, want, ["xi_grad"], rtol=1e-6)
    if rho == 1.0:
        assert abs(float(got["xi_c"])) > 300  # diverging correlation depth at criticality
