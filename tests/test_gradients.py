"""Gradient cell: manual back-propagation against autograd, rows, determinism, and the physics
(per-layer gradient depth scale and c-map against the theory engine)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mfpipe import cells, gradients
from mfpipe.cli import main
from mfpipe.grid import cell_id
from mfpipe.nets import DropoutMLP


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cells.configure_threads(1)


def autograd_per_input_gradients(net, trace, x, loss, labels):
    """∇_{W^l} E_a for each input a, by autograd through the traced forward pass (same masks)."""
    grads = []
    weights = [w.detach().clone().requires_grad_(True) for w in net.weights]
    for a in range(len(x)):
        h = x[a:a + 1]
        for l, (w, b) in enumerate(zip(weights, net.biases)):
            if l > 0:
                h = torch.tanh(z) if net.activation == "tanh" else torch.relu(z)  # noqa: F821
            if trace["factors"][l] is not None:
                h = h * trace["factors"][l][a:a + 1]
            z = h @ w.T + b.detach()
        if loss == "sum_sq":
            e = (z ** 2).sum()
        else:
            e = torch.nn.functional.cross_entropy(z, labels[a:a + 1], reduction="sum")
        grads.append(torch.autograd.grad(e, weights))
    return grads


@pytest.mark.parametrize("activation,loss", [("tanh", "sum_sq"), ("relu", "cross_entropy")])
def test_manual_backprop_matches_autograd(activation, loss):
    torch.manual_seed(0)
    net = DropoutMLP(12, 24, 5, 6, activation=activation, keep_rate=0.8, dropout_input=True,
                     dtype=torch.float64).initialize(3, 1.8, 0.1)
    x = torch.randn(4, 12, dtype=torch.float64)
    labels = torch.tensor([0, 3, 5, 1])
    trace = net.trace(x, generator=torch.Generator().manual_seed(1))
    deltas = gradients.backward_deltas(net, trace, gradients.output_delta(trace["z"][-1], loss, labels),
                                       [w.detach() for w in net.weights])
    stats = gradients.layer_statistics(deltas, trace)
    per_input = autograd_per_input_gradients(net, trace, x, loss, labels)
    for l, s in enumerate(stats):
        g = [per_input[a][l] for a in range(4)]
        sq = np.mean([float((gi ** 2).sum()) for gi in g])
        assert s["grad_sq_norm"] == pytest.approx(sq, rel=1e-10)
        assert s["g_aa"] == pytest.approx(sq / g[0].numel(), rel=1e-10)
        g_ab = [float((g[0] * g[1]).mean()), float((g[2] * g[3]).mean())]
        assert s["g_ab"] == pytest.approx(np.mean(g_ab), rel=1e-9, abs=1e-300)
        assert s["g_ab_abs"] == pytest.approx(np.mean(np.abs(g_ab)), rel=1e-9)


def test_grad_cell_rows_modes_and_determinism():
    params = {"depth": 6, "width": 32, "sigma_w2": 1.5, "keep_rate": 0.9, "inits": 3, "n_inputs": 4, "seed": 7}
    table = gradients.run_grad_cell(params, progress=False).to_pandas()
    assert len(table) == 3 * 6 * 2
    assert sorted(table["mode"].unique()) == ["independent", "real"]
    assert sorted(table["init_index"].unique()) == [0, 1, 2]
    full, identity = cells.cell_identity("grad", params)
    assert (table["cell_id"] == identity).all() and identity == cell_id(full)
    for col in ("grad_sq_norm", "g_aa", "g_ab", "g_ab_abs", "q_l", "c_l", "sigma_w2", "keep_rate",
                "mfpipe_version", "git_commit", "torch_version", "device", "wall_time_s"):
        assert col in table.columns
    real = table[table["mode"] == "real"].reset_index(drop=True)
    indep = table[table["mode"] == "independent"].reset_index(drop=True)
    # one forward pass for both modes; the backward passes differ below the readout
    np.testing.assert_array_equal(real["q_l"], indep["q_l"])
    np.testing.assert_array_equal(real["c_l"], indep["c_l"])
    top = real["layer"] == 5
    np.testing.assert_array_equal(real.loc[top, "grad_sq_norm"], indep.loc[top, "grad_sq_norm"])
    assert not np.allclose(real.loc[real["layer"] == 0, "grad_sq_norm"], indep.loc[indep["layer"] == 0, "grad_sq_norm"])
    # initialisations differ, the same seed reproduces everything exactly
    assert real.groupby("init_index")["grad_sq_norm"].first().nunique() == 3
    again = gradients.run_grad_cell(params, progress=False).to_pandas()
    for col in ("grad_sq_norm", "g_ab", "q_l", "c_l"):
        np.testing.assert_array_equal(again[col], table[col])


def test_grad_cell_on_mnist5k_with_cross_entropy(tmp_path):
    params = {"dataset": "mnist5k", "loss": "cross_entropy", "depth": 4, "width": 16, "inits": 2}
    table = gradients.run_grad_cell(params, tmp_path / "g.parquet", data_dir=tmp_path, progress=False).to_pandas()
    assert (tmp_path / "g.parquet").exists()
    first = table[(table["layer"] == 0) & (table["mode"] == "real")]
    assert (first["fan_in"] == 784).all()
    assert (table.loc[table["layer"] == 3, "fan_out"] == 10).all()
    assert np.isfinite(table[["grad_sq_norm", "g_ab", "q_l", "c_l"]].to_numpy()).all()


def test_grad_cell_cli_and_bad_input(tmp_path, capsys):
    out = tmp_path / "g.parquet"
    assert main(["grad-cell", "--depth", "3", "--width", "8", "--inits", "2", "--device", "cpu", "-o", str(out)]) == 0
    assert out.exists()
    assert main(["grad-cell", "--loss", "cross_entropy", "-o", str(tmp_path / "x.parquet")]) == 2
    assert "loss" in capsys.readouterr().err
    assert main(["grad-cell", "--n-inputs", "3", "-o", str(tmp_path / "x.parquet")]) == 2
    assert "n_inputs" in capsys.readouterr().err
    assert main(["grad-cell", "--print-params"]) == 0
    specs = json.loads(capsys.readouterr().out)
    assert specs["dataset"]["default"] == "gaussian" and "inits" in specs
    assert not (tmp_path / "x.parquet").exists()


def test_additive_noise_length_map_follows_theory():
    """ReLU with additive noise (Pretorius): q^l = σ_w² (q^{l-1}/2 + σ_ε²) + σ_b², measured in a wide net."""
    from mfpipe.theory import iterate_q

    params = {"activation": "relu", "sigma_w2": 2.0, "sigma_b2": 0.1, "noise": "additive", "noise_var": 0.5,
              "depth": 8, "width": 1024, "inits": 2, "n_inputs": 8}
    table = gradients.run_grad_cell(params, progress=False).to_pandas()
    q = table[table["mode"] == "real"].groupby("layer")["q_l"].mean().to_numpy()
    theory = np.asarray(iterate_q("relu", 2.0, 0.1, float(q[0]), 7, noise="additive", noise_var=0.5))
    np.testing.assert_allclose(q, theory, rtol=0.05)
    assert theory[-1] > theory[0] + 5  # grows by σ_w² σ_ε² + σ_b² = 1.1 per layer


def fitted_depth_scale(table: "pd.DataFrame", mode: str, lo: int, hi: int) -> float:  # noqa: F821
    """1/slope of log(geometric mean over inits of ‖∇_{W^l}E‖²) against l, layers lo..hi-1."""
    sub = table[table["mode"] == mode]
    per_layer = sub.groupby("layer")["grad_sq_norm"].apply(lambda v: float(np.exp(np.log(v).mean())))
    layers = np.arange(lo, hi)
    slope = np.polyfit(layers, np.log(per_layer.loc[layers].to_numpy()), 1)[0]
    return 1.0 / slope


@pytest.mark.slow
@pytest.mark.parametrize("sigma_w2,keep_rate", [(1.3, 1.0), (2.5, 1.0), (1.3, 0.9), (2.5, 0.9)])
def test_gradient_depth_scale_and_correlation_map_follow_theory(sigma_w2, keep_rate):
    """tanh, σ_b² = 0.05, width 512, depth 60: ξ_∇ fitted from ‖∇_{W^l}E‖² within 15% of the theory
    engine's −1/ln χ1 (with the 1/ρ factor), and c^l following the c-map iterates."""
    from mfpipe.theory import depth_scales, iterate_c

    depth = 60
    params = {"activation": "tanh", "sigma_w2": sigma_w2, "sigma_b2": 0.05, "keep_rate": keep_rate,
              "depth": depth, "width": 512, "inits": 8, "n_inputs": 16, "seed": 1}
    table = gradients.run_grad_cell(params, progress=False).to_pandas()
    theory = depth_scales("tanh", sigma_w2, 0.05, keep_rate=keep_rate)
    xi_theory = float(theory["xi_grad"])
    assert (xi_theory > 0) == (sigma_w2 == 1.3)  # ordered: vanishing; chaotic: exploding
    for mode in ("real", "independent"):
        xi_fit = fitted_depth_scale(table, mode, 5, depth - 5)
        print(f"σ_w²={sigma_w2} ρ={keep_rate} {mode}: ξ_∇ fitted {xi_fit:.3f}, theory {xi_theory:.3f}")
        assert xi_fit == pytest.approx(xi_theory, rel=0.15)
    # c^l: start the c-map from the measured correlation once q^l has settled (layer 4) and
    # follow it to the last hidden layer (ξ_c ≈ 12 layers in the chaotic case: still converging)
    c_measured = table[table["mode"] == "real"].groupby("layer")["c_l"].mean().to_numpy()
    start, span = 4, depth - 6
    c_theory = np.asarray(iterate_c("tanh", sigma_w2, 0.05, float(c_measured[start]), span, keep_rate=keep_rate))
    deviation = np.abs(c_measured[start:start + span + 1] - c_theory[: span + 1])
    print(f"σ_w²={sigma_w2} ρ={keep_rate}: c^l measured {np.round(c_measured[start:start + span + 1:9], 3)}, "
          f"c-map {np.round(c_theory[:span + 1:9], 3)}, c* {float(theory['c_star']):.3f}, "
          f"mean |Δc| {deviation.mean():.3f}, max |Δc| {deviation.max():.3f}")
    assert deviation.mean() < 0.03 and deviation.max() < 0.06
