"""Mean-field theory of deep (dropout) networks: fixed points, slopes, depth scales, critical lines.

Public API (all vectorised over broadcastable σ_w², σ_b², ρ, noise-variance arrays):

- ``depth_scales(activation, sigma_w2, sigma_b2, keep_rate=1.0, noise="dropout", noise_var=0.0)``
  -> dict of arrays q_star, c_star, chi_1, chi_c, xi_q, xi_c, xi_grad.
- ``critical_sigma_w2(activation, sigma_b2, keep_rate=1.0, noise="dropout", noise_var=0.0)``
- ``iterate_q(...)``, ``iterate_c(...)``: iterates of the length and correlation maps.
- ``fit_depth_scale(values, fixed_point)``: depth scale measured by an exponential fit of
  |x^l − x*|.

Activations: tanh, relu, erf, linear, hard_tanh.  Noise: dropout (keep_rate ρ, μ2 = 1/ρ),
gaussian (multiplicative N(1, noise_var), μ2 = 1 + noise_var), additive (variance noise_var on
the activations), none.  Equations and conventions: docs THEORY.md §2–3; meaning of inf/nan:
``mfpipe.theory.maps``.  Importing this package loads numpy only (scipy.special on first use of erf/hard_tanh).
"""

from mfpipe.theory.activations import ACTIVATIONS, get_activation
from mfpipe.theory.fits import fit_depth_scale
from mfpipe.theory.maps import (
    KEYS,
    METHODS,
    NOISES,
    critical_sigma_w2,
    depth_scale,
    depth_scales,
    iterate_c,
    iterate_q,
)

__all__ = [
    "ACTIVATIONS", "KEYS", "METHODS", "NOISES", "critical_sigma_w2", "depth_scale", "depth_scales",
    "fit_depth_scale", "get_activation", "iterate_c", "iterate_q",
]
