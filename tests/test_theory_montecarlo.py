"""Physics check: a wide random dropout network follows the mean-field maps.

Width N = 1500, tanh, σ_w² = 2.0, σ_b² = 0.05, ρ = 0.9, two inputs with independent Bernoulli
masks per unit, layer and input, z^l = (1/ρ) W (m ⊙ y) + b (THEORY.md §1).  Over R independent
networks, the empirical q^l = mean_i (z_i^l)² and c^l = q_ab^l / √(q_aa q_bb) are compared with
the maps iterated from the empirical layer-0 values (lengths iterated alongside, as in the network).
The mean-field error is O(1/N) and the sampling error ~ 1/√(N R); tolerances are a few standard
errors estimated from the spread over networks.
"""

from __future__ import annotations

import numpy as np
import pytest

from mfpipe.theory import iterate_q
from mfpipe.theory.activations import ACTIVATIONS
from mfpipe.theory.quadrature import PairIntegrals

N, LAYERS, NETS = 1500, 5, 6
SW, SB, RHO = 2.0, 0.05, 0.9


def simulate(rng):
    x = rng.standard_normal((2, N))
    x[1] = 0.6 * x[0] + 0.8 * x[1]  # correlated inputs
    y = x
    qa, qb, cab = [], [], []
    for _ in range(LAYERS):
        w = rng.standard_normal((N, N)) * np.sqrt(SW / N)
        b = rng.standard_normal(N) * np.sqrt(SB)
        masks = rng.random((2, N)) < RHO  # independent per input
        z = (y * masks) @ w.T / RHO + b
        q_a, q_b = np.mean(z[0] ** 2), np.mean(z[1] ** 2)
        qa.append(q_a), qb.append(q_b), cab.append(np.mean(z[0] * z[1]) / np.sqrt(q_a * q_b))
        y = np.tanh(z)
    return np.array(qa), np.array(qb), np.array(cab)


def theory_from(q0a, q0b, c0):
    """Maps started at the empirical first pre-activations (lengths of each input iterated)."""
    act = ACTIVATIONS["tanh"]
    qa = iterate_q("tanh", SW, SB, q0a, LAYERS - 1, RHO)
    qb = iterate_q("tanh", SW, SB, q0b, LAYERS - 1, RHO)
    c = [c0]
    for l in range(LAYERS - 1):
        # unequal lengths: E tanh(u1) tanh(u2) by Mehler needs equal q; use the geometric mean
        q = np.sqrt(qa[l] * qb[l])
        a = PairIntegrals(act, [q]).evaluate(np.array([c[-1]]), want=("A",))[0][0]
        c.append((SW * a + SB) / np.sqrt(qa[l + 1] * qb[l + 1]))
    return qa, qb, np.array(c)


@pytest.mark.slow
def test_wide_dropout_network_follows_the_maps():
    rng = np.random.default_rng(1234)
    runs = [simulate(rng) for _ in range(NETS)]
    qa = np.array([r[0] for r in runs])
    qb = np.array([r[1] for r in runs])
    c = np.array([r[2] for r in runs])
    preds = [theory_from(qa[i, 0], qb[i, 0], c[i, 0]) for i in range(NETS)]
    dq = np.array([p[0] - qa[i] for i, p in enumerate(preds)])  # per network, per layer
    dc = np.array([p[2] - c[i] for i, p in enumerate(preds)])
    # standard error of the mean deviation over networks, floored by the 1/√N single-net scale
    se_q = np.maximum(dq.std(axis=0, ddof=1) / np.sqrt(NETS), 1e-3 * qa.mean(axis=0))
    se_c = np.maximum(dc.std(axis=0, ddof=1) / np.sqrt(NETS), 1e-3)
    assert np.all(np.abs(dq.mean(axis=0)) < 4 * se_q), (dq.mean(axis=0), se_q)
    assert np.all(np.abs(dc.mean(axis=0)) < 4 * se_c), (dc.mean(axis=0), se_c)
    # the dropout signature: deep correlations sit well below 1 although inputs are correlated
    assert np.all(c[:, -1] < 0.9)
    # a single network deviates by finite-width fluctuations only: √(2/N) ≈ 3.7% per layer
    assert np.max(np.abs(dq) / qa) < 0.15 and np.max(np.abs(dc)) < 0.1
