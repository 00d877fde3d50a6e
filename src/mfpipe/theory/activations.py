"""Activations: φ and its derivatives, plus closed-form Gaussian moments where they exist.

Notation (u ~ N(0, q), and for pairs u1, u2 with variance q and correlation c):

- ``M0(q) = E φ(u)²``, ``M1(q) = E φ'(u)²``, ``M2(q) = E φ(u) φ''(u)`` (φ'' in the distributional
  sense for kinked φ), ``dM1(q) = d M1 / d q``.  Stein's lemma gives ``d M0 / d q = M1 + M2``.
- ``A(q, c) = E φ(u1) φ(u2)`` and ``B(q, c) = E φ'(u1) φ'(u2)``; Price's theorem gives
  ``dA/dc = q B``.

Closed forms: relu, linear, erf (all moments and pairs), hard_tanh (one-input moments; its pair
integrals are 1-D integrals with closed-form inner parts, see ``quadrature``).  tanh has none and
is done by quadrature.  ``erf`` means φ(u) = erf(u) (range ±1, slope 2/√π at 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from mfpipe.errors import InputError

SQRT2 = math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def erf(x):
    """Error function (scipy.special, imported on first use: `import mfpipe.theory` stays light)."""
    from scipy.special import erf as _erf

    return _erf(x)


def _std_normal_pdf(x):
    return INV_SQRT_2PI * np.exp(-0.5 * np.square(x))


Moments = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # M0, M1, M2, dM1


@dataclass(frozen=True)
class Activation:
    name: str
    phi: Callable[[np.ndarray], np.ndarray]
    dphi: Callable[[np.ndarray], np.ndarray]
    d2phi: Callable[[np.ndarray], np.ndarray]
    d3phi: Callable[[np.ndarray], np.ndarray]
    odd: bool  # φ(-u) = -φ(u): only odd Hermite coefficients, c* ≥ 0 for σ_b² ≥ 0
    bounded: bool  # |φ| ≤ 1, so q* ≤ σ_b² + σ_w²(μ2 + ν)
    homogeneous: bool  # φ(λu) = λ φ(u) for λ > 0: the length map is affine in q
    kinks: tuple[float, ...]  # points where φ' jumps (quadrature splits there)
    slope0: float  # φ'(0)
    closed_moments: Callable[[np.ndarray], Moments] | None = None
    closed_pair: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def smooth(self) -> bool:
        return not self.kinks


# ---------------------------------------------------------------- tanh
def _tanh_d1(u):
    e = np.exp(-2.0 * np.abs(u))  # sech² u = 4 e^{-2|u|} / (1 + e^{-2|u|})², no overflow
    return 4.0 * e / np.square(1.0 + e)


def _tanh_d2(u):
    return -2.0 * np.tanh(u) * _tanh_d1(u)


def _tanh_d3(u):
    s2 = _tanh_d1(u)
    return -2.0 * s2 * (s2 - 2.0 * np.square(np.tanh(u)))


# ---------------------------------------------------------------- erf
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def _erf_d1(u):
    return _TWO_OVER_SQRT_PI * np.exp(-np.square(u))


def _erf_d2(u):
    return -2.0 * u * _erf_d1(u)


def _erf_d3(u):
    return (4.0 * np.square(u) - 2.0) * _erf_d1(u)


def _erf_moments(q):
    q = np.asarray(q, dtype=float)
    r = np.sqrt(1.0 + 4.0 * q)
    m0 = (2.0 / np.pi) * np.arcsin(2.0 * q / (1.0 + 2.0 * q))
    m1 = (4.0 / np.pi) / r
    m2 = -(4.0 / np.pi) * 2.0 * q / ((1.0 + 2.0 * q) * r)
    dm1 = -(8.0 / np.pi) / (r * r * r)
    return m0, m1, m2, dm1


def _erf_pair(q, c):
    q = np.asarray(q, dtype=float)
    c = np.asarray(c, dtype=float)
    a = (2.0 / np.pi) * np.arcsin(np.clip(2.0 * q * c / (1.0 + 2.0 * q), -1.0, 1.0))
    b = (4.0 / np.pi) / np.sqrt(np.square(1.0 + 2.0 * q) - 4.0 * np.square(q * c))
    return a, b


# ---------------------------------------------------------------- relu
def _relu(u):
    return np.maximum(u, 0.0)


def _relu_d1(u):
    return (np.asarray(u) > 0).astype(float)


def _zero(u):
    return np.zeros_like(np.asarray(u, dtype=float))


def _relu_moments(q):
    q = np.asarray(q, dtype=float)
    return 0.5 * q, np.full_like(q, 0.5), np.zeros_like(q), np.zeros_like(q)


def relu_kappa(c):
    """E relu(u1) relu(u2) / q for correlation c: (√(1−c²) + (π − arccos c) c) / (2π)."""
    c = np.clip(np.asarray(c, dtype=float), -1.0, 1.0)
    return (np.sqrt(1.0 - c * c) + (np.pi - np.arccos(c)) * c) / (2.0 * np.pi)


def relu_kappa_prime(c):
    """E relu'(u1) relu'(u2) = (π − arccos c) / (2π)."""
    c = np.clip(np.asarray(c, dtype=float), -1.0, 1.0)
    return (np.pi - np.arccos(c)) / (2.0 * np.pi)


def _relu_pair(q, c):
    return np.asarray(q, dtype=float) * relu_kappa(c), relu_kappa_prime(c)


# ---------------------------------------------------------------- linear
def _identity(u):
    return np.asarray(u, dtype=float)


def _one(u):
    return np.ones_like(np.asarray(u, dtype=float))


def _linear_moments(q):
    q = np.asarray(q, dtype=float)
    return q.copy(), np.ones_like(q), np.zeros_like(q), np.zeros_like(q)


def _linear_pair(q, c):
    q, c = np.broadcast_arrays(np.asarray(q, dtype=float), np.asarray(c, dtype=float))
    return q * c, np.ones_like(q)


# ---------------------------------------------------------------- hard_tanh
def _hard_tanh(u):
    return np.clip(u, -1.0, 1.0)


def _hard_tanh_d1(u):
    return (np.abs(np.asarray(u)) < 1).astype(float)


def _hard_tanh_moments(q):
    q = np.asarray(q, dtype=float)
    with np.errstate(divide="ignore"):
        a = 1.0 / np.sqrt(q)  # the kinks at u = ±1 in units of the standard deviation
    p_in = erf(a / SQRT2)  # P(|u| < 1)
    pdf = _std_normal_pdf(a)
    with np.errstate(invalid="ignore"):
        apdf = np.where(np.isfinite(a), a * pdf, 0.0)
    m0 = q * (p_in - 2.0 * apdf) + (1.0 - p_in)  # E u² 1{|u|<1} + P(|u| ≥ 1)
    m1 = p_in
    m2 = -2.0 * apdf  # φ'' = δ(u+1) − δ(u−1): E φ φ'' = −2 p_u(1)
    dm1 = np.where(q > 0, -apdf / np.where(q > 0, q, 1.0), 0.0)  # d/dq P(|u|<1) = 2ϕ(a) da/dq = −a ϕ(a) / q
    return m0, m1, m2, dm1


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation("tanh", np.tanh, _tanh_d1, _tanh_d2, _tanh_d3, odd=True, bounded=True,
                       homogeneous=False, kinks=(), slope0=1.0),
    "erf": Activation("erf", erf, _erf_d1, _erf_d2, _erf_d3, odd=True, bounded=True,
                      homogeneous=False, kinks=(), slope0=_TWO_OVER_SQRT_PI,
                      closed_moments=_erf_moments, closed_pair=_erf_pair),
    "relu": Activation("relu", _relu, _relu_d1, _zero, _zero, odd=False, bounded=False,
                       homogeneous=True, kinks=(0.0,), slope0=0.5,  # φ'(0) taken as ½ (limit q→0)
                       closed_moments=_relu_moments, closed_pair=_relu_pair),
    "linear": Activation("linear", _identity, _one, _zero, _zero, odd=True, bounded=False,
                         homogeneous=True, kinks=(), slope0=1.0,
                         closed_moments=_linear_moments, closed_pair=_linear_pair),
    "hard_tanh": Activation("hard_tanh", _hard_tanh, _hard_tanh_d1, _zero, _zero, odd=True,
                            bounded=True, homogeneous=False, kinks=(-1.0, 1.0), slope0=1.0,
                            closed_moments=_hard_tanh_moments),
}


def get_activation(name: str) -> Activation:
    if isinstance(name, Activation):
        return name
    try:
        return ACTIVATIONS[str(name).strip().lower()]
    except KeyError:
        raise InputError("activation", name, ", ".join(ACTIVATIONS)) from None
