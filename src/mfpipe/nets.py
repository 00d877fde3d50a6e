"""Fully connected (dropout) networks with mean-field initialisation (THEORY.md §1).

Architecture, depth L = number of weight layers, width N::

    y^0 = x                                   (in_features)
    z^l = W^l (ε^l ⊙ y^l) + b^l,  l = 0..L-1   (W^0: N×in, W^1..W^{L-2}: N×N, W^{L-1}: out×N)
    y^{l+1} = φ(z^l)
    output = z^{L-1}                          (the readout; no activation)

The **hidden layers** are z^0 … z^{L-2} (and y^1 … y^{L-1}): L−1 layers of width N.  Layer 0 is
the input side, layer L−1 the readout.  ``depth = 1`` is a linear model.

Noise ε^l (multiplicative, drawn independently per unit, per layer and per example; two inputs
never share a mask) is applied to the input of every weight layer l ≥ 1, and to the network
input y^0 only when ``dropout_input`` is set (Huang: no; Pretorius: yes):

* ``noise="dropout"``: inverted dropout, ε = m/ρ with m ~ Bernoulli(ρ), ρ = ``keep_rate``
  (so z^l = (1/ρ) W^l (m^l ⊙ y^l) + b^l exactly as in THEORY.md; μ2 = E[ε²] = 1/ρ).
* ``noise="gaussian"``: ε ~ N(1, ``noise_var``) (μ2 = 1 + noise_var).
* ``noise="additive"`` (Pretorius et al.): not multiplicative: the layer input is y^l + ε^l with
  ε ~ N(0, ``noise_var``), so q^l = σ_w² (∫Dz φ² + noise_var) + σ_b².

Noise is active in training mode and off in eval mode (``net.eval()``), as usual in PyTorch.

Initialisation (deterministic for a seed, identical on every device and dtype: drawn in float64
on the CPU from a ``torch.Generator``): ``gaussian``: W_ij ~ N(0, σ_w²/N_in); ``orthogonal``: a
(semi-)orthogonal matrix (QR of a Gaussian matrix, torch's ``orthogonal_``) times σ_w; both with
b_i ~ N(0, σ_b²).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ACTIVATIONS = ("tanh", "relu", "erf", "linear", "hard_tanh")
NOISES = ("dropout", "gaussian", "additive")
INITS = ("gaussian", "orthogonal")


def activation_function(name: str):
    """φ as a torch function."""
    return {
        "tanh": torch.tanh,
        "relu": torch.relu,
        "erf": torch.erf,
        "linear": lambda z: z,
        "hard_tanh": F.hardtanh,
    }[name]


def activation_derivative(name: str, z: torch.Tensor) -> torch.Tensor:
    """φ'(z) (for manual back-propagation)."""
    if name == "tanh":
        return 1.0 - torch.tanh(z) ** 2
    if name == "relu":
        return (z > 0).to(z.dtype)
    if name == "erf":
        return (2.0 / math.sqrt(math.pi)) * torch.exp(-z * z)
    if name == "linear":
        return torch.ones_like(z)
    if name == "hard_tanh":
        return ((z > -1) & (z < 1)).to(z.dtype)
    raise KeyError(name)


def is_noisy(noise: str, keep_rate: float, noise_var: float) -> bool:
    """Whether a network with this noise setting draws any noise at all."""
    return (noise == "dropout" and keep_rate < 1.0) or (
        noise in ("gaussian", "additive") and noise_var > 0.0)


def draw_weight(shape: tuple[int, int], sigma_w2: float, init: str, generator: torch.Generator) -> torch.Tensor:
    """One weight matrix (out, in) in float64, on the generator's device."""
    w = torch.empty(shape, dtype=torch.float64, device=generator.device)
    if init == "gaussian":
        w.normal_(0.0, math.sqrt(sigma_w2 / shape[1]), generator=generator)
    elif init == "orthogonal":
        torch.nn.init.orthogonal_(w, gain=math.sqrt(sigma_w2), generator=generator)
    else:
        raise KeyError(init)
    return w


def draw_parameters(layer_dims, seed: int, sigma_w2: float, sigma_b2: float, init: str = "gaussian",
                    draw_device: str | torch.device = "cpu"):
    """The mean-field initialisation of a network, layer by layer: yields (W (out, in), b (out,))
    in float64 for each ``(out, in)`` of ``layer_dims``, drawn from one generator seeded with
    ``seed`` in this order (W^0, b^0, W^1, b^1, …).  ``DropoutMLP.initialize`` and the stacked
    training engine (``mfpipe.train``) both draw through here, so a seed is one network."""
    gen = torch.Generator(device=draw_device).manual_seed(int(seed))
    for shape in layer_dims:
        w = draw_weight(tuple(shape), sigma_w2, init, gen)
        b = torch.empty(shape[0], dtype=torch.float64, device=gen.device).normal_(
            0.0, math.sqrt(sigma_b2), generator=gen)
        yield w, b


class DropoutMLP(torch.nn.Module):
    """Fully connected network of ``depth`` weight layers, ``width`` hidden units (see module doc)."""

    def __init__(self, in_features: int, width: int, depth: int, out_features: int, *,
                 activation: str = "tanh", keep_rate: float = 1.0, noise: str = "dropout",
                 noise_var: float = 0.0, dropout_input: bool = False,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        super().__init__()
        if activation not in ACTIVATIONS or noise not in NOISES:
            raise KeyError((activation, noise))
        self.in_features, self.width, self.depth, self.out_features = in_features, width, depth, out_features
        self.activation, self.keep_rate, self.noise = activation, float(keep_rate), noise
        self.noise_var, self.dropout_input = float(noise_var), bool(dropout_input)
        self.phi = activation_function(activation)
        dims = [in_features] + [width] * (depth - 1) + [out_features]
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.zeros(dims[l + 1], dims[l], dtype=dtype, device=device))
            for l in range(depth))
        self.biases = torch.nn.ParameterList(
            torch.nn.Parameter(torch.zeros(dims[l + 1], dtype=dtype, device=device))
            for l in range(depth))

    @property
    def noisy(self) -> bool:
        return is_noisy(self.noise, self.keep_rate, self.noise_var)

    def layer_dims(self) -> list[tuple[int, int]]:
        return [tuple(w.shape) for w in self.weights]

    @torch.no_grad()
    def initialize(self, seed: int, sigma_w2: float, sigma_b2: float, init: str = "gaussian",
                   draw_device: str | torch.device = "cpu") -> "DropoutMLP":
        """Mean-field initialisation, deterministic for ``seed`` (see module doc).

        Numbers are drawn in float64 on ``draw_device`` (default the CPU, so a seed gives the same
        network on every machine; gradient cells draw on their GPU, where the CPU would dominate).
        """
        layers = draw_parameters(self.layer_dims(), seed, sigma_w2, sigma_b2, init, draw_device)
        for w, b, (w_value, b_value) in zip(self.weights, self.biases, layers):
            w.copy_(w_value)
            b.copy_(b_value)
        return self

    def noise_factor(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Multiplicative ε for a tensor shaped like ``y`` (independent per element)."""
        if self.noise == "dropout":
            mask = torch.empty_like(y).bernoulli_(self.keep_rate, generator=generator)
            return mask / self.keep_rate
        return 1.0 + math.sqrt(self.noise_var) * torch.randn(y.shape, dtype=y.dtype, device=y.device,
                                                             generator=generator)

    def _apply_noise(self, y: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.noisy):
            return y
        if self.noise == "dropout":
            return F.dropout(y, p=1.0 - self.keep_rate, training=True)  # fused inverted dropout
        if self.noise == "additive":
            return y + math.sqrt(self.noise_var) * torch.randn_like(y)
        return y * self.noise_factor(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._apply_noise(x) if self.dropout_input else x
        last = self.depth - 1
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = torch.addmm(b, h, w.t())
            if l == last:
                return z
            h = self._apply_noise(self.phi(z))
        raise AssertionError("depth must be ≥ 1")

    @torch.no_grad()
    def trace(self, x: torch.Tensor, generator: torch.Generator | None = None, noise: bool = True) -> dict:
        """Forward pass keeping what manual back-propagation needs.

        Returns ``inputs`` [ε^l ⊙ y^l (additive: y^l + ε^l)], ``factors`` [multiplicative ε^l, or
        None where the layer input's derivative w.r.t. y^l is 1], ``z`` [z^l] for l = 0..L-1.
        Noise (when ``noise`` and the net is noisy) is drawn from ``generator``.
        """
        inputs, factors, zs = [], [], []
        h = x
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            if l > 0:
                h = self.phi(zs[-1])
            eps = None
            if noise and self.noisy and (l > 0 or self.dropout_input):
                if self.noise == "additive":
                    h = h + math.sqrt(self.noise_var) * torch.randn(
                        h.shape, dtype=h.dtype, device=h.device, generator=generator)
                else:
                    eps = self.noise_factor(h, generator)
                    h = h * eps
            factors.append(eps)
            inputs.append(h)
            zs.append(torch.addmm(b, h, w.t()))
        return {"inputs": inputs, "factors": factors, "z": zs}
