"""Unit tests of the mean-field engine: closed forms, identities, noise models, edge cases."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import integrate, optimize

from mfpipe.errors import InputError
from mfpipe.theory import (
    critical_sigma_w2,
    depth_scales,
    fit_depth_scale,
    iterate_c,
    iterate_q,
)
from mfpipe.theory.quadrature import PairIntegrals, moments
from mfpipe.theory.activations import ACTIVATIONS


def gauss(f, q):
    s = math.sqrt(q)
    return integrate.quad(lambda z: f(s * z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi),
                          -14, 14, epsrel=1e-13, epsabs=0, limit=400, points=[0.0])[0]


# ------------------------------------------------------------------ identities


@pytest.mark.parametrize("rho", [0.99, 0.94, 0.8, 0.5])
@pytest.mark.parametrize("activation", ["tanh", "erf", "hard_tanh"])
def test_dropout_c1_is_not_a_fixed_point(activation, rho):
    """THEORY.md §2: c^{l+1}|_{c^l=1} = 1 − (1−ρ)/(ρ q*) σ_w² ∫Dz φ²(√q* z), and c* < 1."""
    sw, sb = 2.0, 0.05
    r = depth_scales(activation, sw, sb, rho)
    q = float(r["q_star"])
    phi = ACTIVATIONS[activation].phi
    expected = 1 - (1 - rho) / (rho * q) * sw * gauss(lambda u: phi(u) ** 2, q)
    got = iterate_c(activation, sw, sb, 1.0, 1, rho)[1]
    assert float(got) == pytest.approx(expected, rel=1e-11)
    assert float(r["c_star"]) < 1.0
    assert float(r["xi_c"]) < 1e3  # finite depth scale: no order-to-chaos transition


def test_additive_noise_c1_identity():
    sw, sb, nv = 1.5, 0.05, 0.1
    r = depth_scales("tanh", sw, sb, noise="additive", noise_var=nv)
    q = float(r["q_star"])
    assert float(iterate_c("tanh", sw, sb, 1.0, 1, noise="additive", noise_var=nv)[1]) == pytest.approx(
        1 - sw * nv / q, rel=1e-11)


def test_gaussian_noise_with_same_second_moment_equals_dropout():
    rho = np.array([0.99, 0.9, 0.7])
    a = depth_scales("tanh", 2.0, 0.1, keep_rate=rho)
    b = depth_scales("tanh", 2.0, 0.1, keep_rate=1.0, noise="gaussian", noise_var=(1 - rho) / rho)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-12)


def test_noise_none_equals_keep_rate_one():
    a = depth_scales("tanh", [1.0, 2.0], 0.05, noise="none")
    b = depth_scales("tanh", [1.0, 2.0], 0.05, keep_rate=1.0)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_ordered_phase_without_noise_has_c_star_one_and_chi_c_chi_1():
    r = depth_scales("tanh", [0.5, 1.0, 1.5], 0.05)
    np.testing.assert_array_equal(r["c_star"], 1.0)
    np.testing.assert_array_equal(r["chi_c"], r["chi_1"])
    assert np.all(r["xi_grad"] > 0)


def test_chaotic_phase_signs():
    r = depth_scales("tanh", [2.5, 3.5], 0.05)
    assert np.all(r["chi_1"] > 1) and np.all(r["xi_grad"] < 0)
    assert np.all(r["c_star"] < 1) and np.all(r["xi_c"] > 0)


# ------------------------------------------------------------------ closed forms


@pytest.mark.parametrize("rho", [1.0, 0.9, 0.5, 0.2])
def test_relu_closed_forms_at_sigma_w2_2rho(rho):
    """Pretorius: σ_w² = 2ρ, σ_b² = 0 is critical; c' = (1/μ2)[(c arcsin c + √(1−c²))/π + c/2]."""
    mu2 = 1 / rho
    sw = 2 * rho
    r = depth_scales("relu", sw, 0.0, rho)
    assert float(r["chi_1"]) == pytest.approx(1.0, abs=1e-15)
    assert float(critical_sigma_w2("relu", 0.0, rho)) == pytest.approx(2 * rho, rel=1e-15)
    assert math.isnan(float(r["q_star"]))  # every q is a fixed point
    cmap = lambda c: ((c * math.asin(c) + math.sqrt(1 - c * c)) / math.pi + c / 2) / mu2
    slope = lambda c: (math.asin(c) / math.pi + 0.5) / mu2
    c = np.linspace(-0.9, 1.0, 12)
    got = iterate_c("relu", sw, 0.0, c, 1, rho)[1]
    np.testing.assert_allclose(got, [cmap(x) for x in c], rtol=1e-13, atol=1e-15)
    if rho == 1.0:
        assert float(r["c_star"]) == 1.0 and float(r["chi_c"]) == pytest.approx(1.0)
    else:
        c_star = optimize.brentq(lambda x: cmap(x) - x, 0.0, 1.0, xtol=1e-15)
        assert float(r["c_star"]) == pytest.approx(c_star, abs=1e-13)
        assert float(r["chi_c"]) == pytest.approx(slope(c_star), rel=1e-12)


def test_relu_with_bias_above_criticality_is_unbounded_not_a_hang():
    r = depth_scales("relu", [1.0, 2.0, 3.0], 0.1)
    assert r["q_star"][0] == pytest.approx(0.2)  # q* = σ_b² / (1 − σ_w²/2)
    assert np.isinf(r["q_star"][1:]).all()
    assert r["xi_grad"][2] < 0 and np.isinf(r["xi_grad"][1])
    assert np.all(np.isfinite(r["c_star"]))  # limiting scale-free correlation map


def test_linear_closed_forms():
    rho, sw, sb = 0.9, 0.8, 0.1
    r = depth_scales("linear", sw, sb, rho)
    q = sb / (1 - sw / rho)
    assert float(r["q_star"]) == pytest.approx(q)
    assert float(r["chi_1"]) == pytest.approx(sw / rho)
    assert float(r["c_star"]) == pytest.approx((1 - sw / rho) / (1 - sw))
    assert float(r["chi_c"]) == pytest.approx(sw)
    assert float(critical_sigma_w2("linear", 0.3, rho)) == pytest.approx(rho)


def test_erf_closed_form_matches_theory_formula():
    q, c = 0.7, 0.4
    a, b = PairIntegrals(ACTIVATIONS["erf"], [q]).evaluate(np.array([c]))[0::2]
    assert float(a[0]) == pytest.approx((2 / math.pi) * math.asin(2 * q * c / (1 + 2 * q)), rel=1e-14)


@pytest.mark.parametrize("activation", ["relu", "erf", "linear", "hard_tanh"])
@pytest.mark.parametrize("point", [(1.5, 0.1, 0.9), (1.0, 0.2, 0.8), (2.5, 0.05, 1.0), (0.7, 0.3, 1.0)])
def test_closed_forms_agree_with_quadrature(activation, point):
    closed = depth_scales(activation, *point, method="closed")
    quad = depth_scales(activation, *point, method="quadrature")
    for k in closed:
        np.testing.assert_allclose(quad[k], closed[k], rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("activation", ["relu", "erf", "linear", "hard_tanh"])
def test_one_input_moments_closed_vs_quadrature(activation):
    act = ACTIVATIONS[activation]
    q = np.array([0.01, 0.3, 1.0, 4.0, 30.0])
    closed = moments(act, q, "closed")
    quad = moments(act, q, "quadrature")
    for a, b in zip(closed[:2], quad[:2]):
        np.testing.assert_allclose(b, a, rtol=1e-11)


@pytest.mark.parametrize("activation", ["tanh", "erf", "hard_tanh"])
def test_moment_derivatives_by_finite_differences(activation):
    act = ACTIVATIONS[activation]
    q = np.array([0.2, 1.0, 3.0])
    h = 1e-5 * q
    m0p, m1p = moments(act, q + h), moments(act, q - h)
    m0, m1, m2, dm1 = moments(act, q)
    np.testing.assert_allclose((m0p[0] - m1p[0]) / (2 * h), m1 + m2, rtol=1e-7)
    np.testing.assert_allclose((m0p[1] - m1p[1]) / (2 * h), dm1, rtol=1e-6)


def test_tanh_pair_integrals_price_theorem():
    """dA/dc = q B (Price) for the Mehler series, and A(1) = M0, B(1) = M1 exactly."""
    act = ACTIVATIONS["tanh"]
    q = np.array([0.3, 2.0, 9.0])
    pairs = PairIntegrals(act, q)
    c = np.array([0.95, 0.5, 0.99])
    a, da, b = pairs.evaluate(c)
    np.testing.assert_allclose(da, q * b, rtol=1e-9)
    m0, m1 = moments(act, q)[:2]
    a1, _, b1 = pairs.evaluate(np.ones(3))
    np.testing.assert_allclose(a1, m0, rtol=1e-15)
    np.testing.assert_allclose(b1, m1, rtol=1e-10)


# ------------------------------------------------------------------ critical line


def test_critical_line_has_chi1_one_vectorised():
    sb = np.array([0.0, 0.01, 0.05, 0.3, 1.0])[:, None]
    rho = np.array([1.0, 0.99, 0.9, 0.5])[None, :]
    sw = critical_sigma_w2("tanh", sb, rho)
    assert sw.shape == (5, 4)
    np.testing.assert_allclose(depth_scales("tanh", sw, sb, rho)["chi_1"], 1.0, rtol=1e-11)
    np.testing.assert_allclose(sw[0], rho[0])  # σ_b² = 0: σ_w² = ρ (tanh'(0) = 1)
    assert np.all(np.diff(sw[:, 0]) > 0)


@pytest.mark.parametrize("activation", ["erf", "hard_tanh"])
def test_critical_line_other_bounded(activation):
    sb = np.array([0.02, 0.2])
    sw = critical_sigma_w2(activation, sb, 0.9)
    np.testing.assert_allclose(depth_scales(activation, sw, sb, 0.9)["chi_1"], 1.0, rtol=1e-10)


def test_correlation_depth_diverges_at_criticality_only_without_dropout():
    sb = 0.05
    for eps in (1e-2, 1e-3, 1e-4):
        sw = critical_sigma_w2("tanh", sb) * (1 + eps)
        assert float(depth_scales("tanh", sw, sb)["xi_c"]) > 0.3 / eps
    sw = critical_sigma_w2("tanh", sb, 0.99)
    assert float(depth_scales("tanh", sw, sb, 0.99)["xi_c"]) < 100


def test_near_critical_dropout_scaling():
    """THEORY.md §5b: on the critical line ξ_c ∝ δ^(−1/2) (tanh), ∝ δ^(−1/3) (relu at σ_w² = 2ρ)."""
    deltas = np.array([1e-5, 1e-6, 1e-7])
    rho = 1 - deltas
    sw = critical_sigma_w2("tanh", 0.05, rho)
    xi = depth_scales("tanh", sw, 0.05, rho)["xi_c"]
    ratios = xi[1:] / xi[:-1]
    assert ratios[-1] == pytest.approx(math.sqrt(10), rel=2e-3)
    xi_relu = depth_scales("relu", 2 * rho, 0.0, rho)["xi_c"]
    assert (xi_relu[-1] / xi_relu[-2]) == pytest.approx(10 ** (1 / 3), rel=2e-3)


# ------------------------------------------------------------------ iterates and fits


def test_iterates_converge_to_fixed_points_with_predicted_depth_scales():
    sw, sb, rho = 1.8, 0.05, 0.95
    r = depth_scales("tanh", sw, sb, rho)
    q = iterate_q("tanh", sw, sb, 3.0, 60, rho)
    assert q.shape == (61,)
    assert q[-1] == pytest.approx(float(r["q_star"]), rel=1e-12)
    c = iterate_c("tanh", sw, sb, 0.2, 200, rho)
    assert c[-1] == pytest.approx(float(r["c_star"]), rel=1e-10)
    assert fit_depth_scale(q, r["q_star"]) == pytest.approx(float(r["xi_q"]), rel=0.02)
    assert fit_depth_scale(c, r["c_star"]) == pytest.approx(float(r["xi_c"]), rel=0.02)


def test_iterate_c_with_moving_lengths_reaches_same_fixed_point():
    sw, sb = 2.5, 0.05
    r = depth_scales("tanh", sw, sb)
    c = iterate_c("tanh", sw, sb, 0.9, 400, q=5.0)
    assert c[-1] == pytest.approx(float(r["c_star"]), rel=1e-9)


def test_iterates_broadcast_over_grid():
    c = iterate_c("tanh", [[1.5], [3.0]], 0.05, [0.1, 0.5, 0.9], 10)
    assert c.shape == (11, 2, 3)
    q = iterate_q("relu", [1.0, 2.5], 0.0, 1.0, 5)
    np.testing.assert_allclose(q[:, 1], 1.25 ** np.arange(6))


def test_fit_depth_scale_on_exact_exponential():
    layers = np.arange(50)
    x = 0.3 + 0.7 * np.exp(-layers / 7.5)
    assert fit_depth_scale(x, 0.3) == pytest.approx(7.5, rel=1e-9)
    assert math.isnan(fit_depth_scale(np.full(10, 0.3), 0.3))


# ------------------------------------------------------------------ input validation and import


@pytest.mark.parametrize("kwargs,field", [
    (dict(activation="sigmoidal"), "activation"),
    (dict(sigma_w2=0.0), "sigma_w2"),
    (dict(sigma_w2=[1.0, -1.0]), "sigma_w2"),
    (dict(sigma_b2=-0.1), "sigma_b2"),
    (dict(keep_rate=0.0), "keep_rate"),
    (dict(keep_rate=1.2), "keep_rate"),
    (dict(noise="salt"), "noise"),
    (dict(noise="additive", keep_rate=0.9), "keep_rate"),
    (dict(noise_var=0.1), "noise_var"),
])
def test_bad_input_names_the_field(kwargs, field):
    args = dict(activation="tanh", sigma_w2=1.0, sigma_b2=0.05)
    args.update(kwargs)
    with pytest.raises(InputError) as err:
        depth_scales(**args)
    assert err.value.field == field
    assert "allowed" in str(err.value)


def test_import_is_light():
    code = ("import sys, time; t = time.perf_counter(); import mfpipe.theory; "
            "dt = time.perf_counter() - t; "
            "print(dt, *(m in sys.modules for m in ('torch', 'pandas', 'pyarrow', 'scipy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    dt, *heavy = out.stdout.split()
    assert heavy == ["False"] * 4  # numpy only; scipy.special is imported on first use


def test_chebyshev_tables_match_direct_rules():
    """Interpolated moments and Hermite coefficients equal the direct trapezoid rules."""
    from mfpipe.theory import quadrature as Q

    act = ACTIVATIONS["tanh"]
    rng = np.random.default_rng(3)
    q = np.exp(rng.uniform(np.log(2.0 ** -10), np.log(2.0 ** 6), 40))
    np.testing.assert_allclose(Q.moments(act, q, "quadrature"), Q.moments(act, q, "direct"),
                               rtol=1e-13, atol=1e-16)
    for key in np.unique(Q._octave(q)):
        sel = q[Q._octave(q) == key]
        table = Q._signed_coefficients(act, sel, int(key))
        q_max = 2.0 ** (key + 1)
        direct, _ = Q._hermite_coefficients(act, sel, Q._order(q_max), Q._step(q_max))
        np.testing.assert_allclose(table, direct.T, rtol=0, atol=1e-14)


def test_hard_tanh_closed_form_hermite_coefficients_match_quadrature():
    from mfpipe.theory.quadrature import _panel_coefficients, hard_tanh_alpha

    q = np.array([0.05, 0.5, 2.0, 10.0])
    alpha = hard_tanh_alpha(q, 40)
    panel, _ = _panel_coefficients(ACTIVATIONS["hard_tanh"], q, 79)
    np.testing.assert_allclose(alpha, panel.T[1::2], rtol=0, atol=1e-14)
    np.testing.assert_allclose(panel.T[0::2], 0, atol=1e-15)  # odd φ: no even orders


@pytest.mark.parametrize("c", [0.5, 0.99, 0.9999, 0.999999])
def test_hard_tanh_pair_consistent_with_price_near_c_1(c):
    """A(1) − A(c) = q ∫_c^1 B(t) dt, with B integrated by adaptive quad, up to c → 1."""
    from mfpipe.theory.quadrature import hard_tanh_pair

    for q in (0.3, 3.0):
        a_c = float(hard_tanh_pair(np.array([q]), np.array([c]))[0][0])
        a_1 = float(hard_tanh_pair(np.array([q]), np.array([1.0]))[0][0])
        b_int = integrate.quad(lambda t: float(hard_tanh_pair(np.array([q]), np.array([t]))[1][0]), c, 1,
                               epsabs=1e-15, epsrel=1e-12, limit=200)[0]
        assert a_1 - a_c == pytest.approx(q * b_int, rel=1e-8, abs=1e-15)


def test_unbounded_relu_limit_ignores_bias_and_additive_noise():
    r = depth_scales("relu", 2.0, 0.1, noise="additive", noise_var=0.2)
    assert np.isinf(r["q_star"]) and float(r["c_star"]) == 1.0 and float(r["chi_c"]) == 1.0


@pytest.mark.parametrize("activation", ["tanh", "erf", "hard_tanh", "relu", "linear"])
@pytest.mark.parametrize("noise", ["dropout", "gaussian", "additive"])
def test_random_grid_fixed_points_are_fixed(activation, noise):
    """Over a wide random grid: no warnings, and q*, c* are fixed points of the maps."""
    rng = np.random.default_rng(7)
    n = 300
    sw = np.exp(rng.uniform(np.log(0.2), np.log(8.0), n))
    sb = np.where(rng.random(n) < 0.1, 0.0, rng.uniform(0, 1.0, n))
    kw = {"keep_rate": rng.uniform(0.3, 1.0, n)} if noise == "dropout" else {
        "noise": noise, "noise_var": rng.uniform(0, 0.5, n)}
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            r = depth_scales(activation, sw, sb, **kw)
    q, c = r["q_star"], r["c_star"]
    fin = np.isfinite(q) & (q > 0)
    q1 = iterate_q(activation, sw, sb, np.where(fin, q, 1.0), 1, **kw)[1]
    np.testing.assert_allclose(q1[fin], q[fin], rtol=1e-10)
    cfin = fin & np.isfinite(c)
    c1 = iterate_c(activation, sw, sb, np.where(np.isfinite(c), c, 0.5), 1, **kw)[1]
    np.testing.assert_allclose(c1[cfin], c[cfin], rtol=1e-9, atol=1e-12)
    assert np.all((c[np.isfinite(c)] >= 0) & (c[np.isfinite(c)] <= 1))
    assert np.all(np.isfinite(r["chi_1"]))


def test_relu_without_bias_uses_scale_free_map_on_both_sides_of_2rho():
    rho = 0.9
    r = depth_scales("relu", [2 * rho * (1 - 1e-12), 2 * rho, 2 * rho * (1 + 1e-12), 1.0], 0.0, rho)
    assert np.isnan(r["q_star"][1]) and r["q_star"][0] == 0 and np.isinf(r["q_star"][2])
    np.testing.assert_allclose(r["c_star"], r["c_star"][1], rtol=1e-12)  # q-independent map
    np.testing.assert_allclose(r["xi_c"], r["xi_c"][1], rtol=1e-12)


def test_blocks_and_empty_grids(monkeypatch):
    import mfpipe.theory.maps as maps

    sw = np.linspace(1.0, 3.0, 7)[:, None]
    sb = np.array([0.0, 0.05, 0.2])[None, :]
    whole = depth_scales("tanh", sw, sb, 0.95)
    monkeypatch.setattr(maps, "BLOCK", 4)  # 21 points in 6 blocks
    blocks = depth_scales("tanh", sw, sb, 0.95)
    for k in whole:
        np.testing.assert_allclose(blocks[k], whole[k], rtol=1e-13)
    empty = depth_scales("tanh", np.array([]), 0.05)
    assert all(v.shape == (0,) for v in empty.values())
