"""Dropout MLP: architecture, mean-field initialisation, noise, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from mfpipe.nets import ACTIVATIONS, DropoutMLP, activation_derivative, activation_function


def test_layer_shapes_and_hidden_layers():
    net = DropoutMLP(784, 64, 5, 10)
    assert net.layer_dims() == [(64, 784), (64, 64), (64, 64), (64, 64), (10, 64)]
    assert net(torch.zeros(3, 784)).shape == (3, 10)
    assert DropoutMLP(20, 64, 1, 7).layer_dims() == [(7, 20)]  # depth 1: linear model


@pytest.mark.parametrize("init", ["gaussian", "orthogonal"])
def test_initialisation_statistics(init):
    sigma_w2, sigma_b2 = 1.7, 0.3
    net = DropoutMLP(400, 400, 3, 400, dtype=torch.float64).initialize(5, sigma_w2, sigma_b2, init)
    w = net.weights[1].detach()
    n = w.shape[1]
    assert float(w.var()) * n == pytest.approx(sigma_w2, rel=0.02)
    biases = torch.cat([b.detach() for b in net.biases])
    assert float(biases.var()) == pytest.approx(sigma_b2, rel=0.1)
    if init == "orthogonal":
        torch.testing.assert_close(w @ w.T, sigma_w2 * torch.eye(n, dtype=torch.float64), atol=1e-10, rtol=0)


def test_initialisation_deterministic_for_seed_and_dtype():
    a = DropoutMLP(30, 20, 4, 5, dtype=torch.float64).initialize(11, 1.5, 0.05)
    b = DropoutMLP(30, 20, 4, 5, dtype=torch.float64).initialize(11, 1.5, 0.05)
    c = DropoutMLP(30, 20, 4, 5, dtype=torch.float64).initialize(12, 1.5, 0.05)
    f = DropoutMLP(30, 20, 4, 5, dtype=torch.float32).initialize(11, 1.5, 0.05)
    for wa, wb, wc, wf in zip(a.weights, b.weights, c.weights, f.weights):
        assert torch.equal(wa, wb)
        assert not torch.equal(wa, wc)
        torch.testing.assert_close(wf.double(), wa.detach(), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_derivatives_match_autograd(name):
    z = torch.linspace(-2.5, 2.5, 101, dtype=torch.float64, requires_grad=True)
    z = z[(z.detach() - 1).abs() > 1e-3]  # avoid the kinks of hard_tanh at ±1 and relu at 0
    z = z[(z.detach() + 1).abs() > 1e-3]
    z = z[z.detach().abs() > 1e-3].detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(activation_function(name)(z).sum(), z)
    torch.testing.assert_close(activation_derivative(name, z.detach()), grad)


def test_dropout_masks_independent_per_example_and_off_in_eval():
    torch.manual_seed(0)
    net = DropoutMLP(50, 200, 3, 10, keep_rate=0.8).initialize(0, 1.5, 0.05)
    x = torch.randn(1, 50).repeat(4, 1)  # four copies of one input
    net.train()
    out = net(x)
    assert not torch.allclose(out[0], out[1])  # different masks for different examples
    net.eval()
    out = net(x)
    torch.testing.assert_close(out[0], out[3])


def test_noise_factors_have_the_theory_moments():
    gen = torch.Generator().manual_seed(3)
    y = torch.ones(2000, 500, dtype=torch.float64)
    rho = 0.9
    eps = DropoutMLP(5, 5, 2, 5, keep_rate=rho, dtype=torch.float64).noise_factor(y, gen)
    assert float((eps == 0).double().mean()) == pytest.approx(1 - rho, abs=0.002)
    assert float(eps.mean()) == pytest.approx(1.0, abs=0.002)  # inverted dropout
    assert float((eps ** 2).mean()) == pytest.approx(1 / rho, rel=0.003)  # μ2 = 1/ρ
    g = DropoutMLP(5, 5, 2, 5, noise="gaussian", noise_var=0.25, dtype=torch.float64).noise_factor(y, gen)
    assert float(g.mean()) == pytest.approx(1.0, abs=0.002)
    assert float(g.var()) == pytest.approx(0.25, rel=0.01)


def test_dropout_input_flag_and_trace_reproduce_forward():
    net = DropoutMLP(10, 30, 4, 3, keep_rate=0.5, dropout_input=True, dtype=torch.float64).initialize(1, 2.0, 0.1)
    x = torch.randn(6, 10, dtype=torch.float64)
    trace = net.trace(x, generator=torch.Generator().manual_seed(0))
    assert trace["factors"][0] is not None  # the input gets a mask
    assert set(torch.unique(trace["factors"][1]).tolist()) <= {0.0, 2.0}
    # trace without noise equals the eval-mode forward pass
    net.eval()
    clean = net.trace(x, noise=False)
    torch.testing.assert_close(clean["z"][-1], net(x))
    no_input_mask = DropoutMLP(10, 30, 4, 3, keep_rate=0.5, dtype=torch.float64).initialize(1, 2.0, 0.1)
    assert no_input_mask.trace(x, generator=torch.Generator().manual_seed(0))["factors"][0] is None


def test_forward_matches_theory_equation_with_explicit_masks():
    """z^l = (1/ρ) W^l (m^l ⊙ y^l) + b^l, checked layer by layer."""
    rho = 0.7
    net = DropoutMLP(8, 16, 3, 4, keep_rate=rho, dtype=torch.float64).initialize(2, 1.2, 0.2)
    x = torch.randn(5, 8, dtype=torch.float64)
    trace = net.trace(x, generator=torch.Generator().manual_seed(9))
    y = x
    for l in range(3):
        if l > 0:
            y = torch.tanh(trace["z"][l - 1])
            mask = (trace["factors"][l] > 0).double()
            y = mask * y
            expect = (1 / rho) * y @ net.weights[l].detach().T + net.biases[l].detach()
        else:
            expect = y @ net.weights[0].detach().T + net.biases[0].detach()
        torch.testing.assert_close(trace["z"][l], expect)
    assert math.isclose(net.keep_rate, rho)


def test_additive_noise_adds_variance_and_keeps_derivatives():
    net = DropoutMLP(4, 3000, 3, 4, activation="linear", noise="additive", noise_var=0.5,
                     dtype=torch.float64).initialize(0, 1.0, 0.0)
    x = torch.zeros(8, 4, dtype=torch.float64)
    trace = net.trace(x, generator=torch.Generator().manual_seed(4))
    assert trace["factors"][1] is None  # d(y + ε)/dy = 1: nothing for the backward pass
    noise = trace["inputs"][1] - trace["z"][0]  # linear φ: y^1 = z^0
    assert float(noise.mean()) == pytest.approx(0.0, abs=0.01)
    assert float(noise.var()) == pytest.approx(0.5, rel=0.02)
    net.train()
    assert not torch.equal(net(x)[0], net(x)[0])
