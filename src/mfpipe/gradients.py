"""Gradient cell: per-layer gradient and forward statistics at initialisation (no training).

``mfpipe grad-cell --depth 60 --width 256 --sigma-w2 1.3 --inits 8 -o grads.parquet``

Everything is float64.  For each of ``inits`` independent initialisations (``init_index`` 0..,
weights seeded from (seed, init_index)), ``n_inputs`` inputs go forwards once (noise masks drawn
independently per input, unit and layer) and backwards twice:

* ``mode = real``: through the same weights W^l (true back-propagation, as in training);
* ``mode = independent``: through an independently drawn copy W̃^l with the same law (the
  gradient independence assumption, GIA) — same forward pass, same masks, same φ'(z).

Back-propagation is done by hand (δ^{l-1} = φ'(z^{l-1}) ⊙ ε^l ⊙ (W^lᵀ δ^l)), so the per-input
weight gradients ∇_{W^l} E_a = δ^l_a (ε^l_a ⊙ y^l_a)ᵀ never need to be materialised:

* ``grad_sq_norm`` = mean_a ‖∇_{W^l} E_a‖²  (= ‖δ^l_a‖² ‖ỹ^l_a‖², averaged over inputs);
* ``g_aa`` = mean_a mean_ij (∂E_a/∂W^l_ij)² = grad_sq_norm / (fan_out·fan_in)  (Huang et al.);
* ``g_ab`` = mean_ij (∂E_a/∂W^l_ij)(∂E_b/∂W^l_ij) for the input pairs (0,1), (2,3), …,
  averaged over pairs; ``g_ab_abs`` = the pair average of |g_ab|;
* ``q_l`` = mean over units and inputs of (z^l)²; ``c_l`` = pair average of
  z^l_a·z^l_b / (‖z^l_a‖ ‖z^l_b‖) (independent masks for the two inputs).

Layer 0 is the input side (fan_in = input dimension), layer L−1 the readout.

Inputs and loss: ``dataset = gaussian`` draws fixed N(0, 1) inputs of dimension ``width``
(the same for every initialisation of the cell) with the readout of width ``width`` and
E = Σ_k out_k² (Huang et al.); a dataset name takes ``n_inputs`` fixed training examples
(seeded choice) with a 10-way readout and either ``loss = cross_entropy`` (Schoenholz et al.
Fig. 4) or ``sum_sq``.

Random numbers for weights, the independent copy and masks are drawn on the cell's device:
a seed reproduces a cell exactly on the same kind of device (CPU results differ from GPU ones).

Rows: one per (init_index, layer, mode) with all cell parameters, ``cell_id``, provenance.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from mfpipe import cells
from mfpipe.nets import DropoutMLP, activation_derivative, draw_weight

MODES = ("real", "independent")


_seed = cells.derive_seed


def cell_inputs(p: dict, data_dir=None, device="cpu") -> tuple[torch.Tensor, torch.Tensor | None]:
    """The cell's fixed inputs (float64) and labels (None for gaussian inputs)."""
    if p["dataset"] == "gaussian":
        gen = torch.Generator().manual_seed(_seed(p["seed"], 0xDA7A))
        x = torch.randn(p["n_inputs"], p["width"], dtype=torch.float64, generator=gen)
        return x.to(device), None
    from mfpipe.data import load_dataset

    data = load_dataset(p["dataset"], data_dir, preprocess=p["preprocess"], eval_size=0)
    rng = np.random.default_rng(_seed(p["seed"], 0xDA7A))
    rows = rng.choice(len(data.x_train), size=p["n_inputs"], replace=False)
    x = torch.from_numpy(data.x_train[rows].astype(np.float64)).to(device)
    y = torch.from_numpy(data.y_train[rows]).to(device)
    return x, y


def output_delta(z_out: torch.Tensor, loss: str, labels: torch.Tensor | None) -> torch.Tensor:
    """∂E_a/∂z^{L-1}_a per input a."""
    if loss == "sum_sq":
        return 2.0 * z_out
    onehot = torch.nn.functional.one_hot(labels, z_out.shape[1]).to(z_out.dtype)
    return torch.softmax(z_out, dim=1) - onehot


def backward_deltas(net: DropoutMLP, trace: dict, delta_out: torch.Tensor, weights) -> list[torch.Tensor]:
    """δ^l = ∂E_a/∂z^l for every layer, back-propagating through ``weights`` (real or a copy)."""
    depth = net.depth
    deltas = [None] * depth
    deltas[-1] = delta_out
    for l in range(depth - 1, 0, -1):
        back = deltas[l] @ weights[l]  # (inputs, fan_in of layer l)
        eps = trace["factors"][l]
        if eps is not None:
            back = back * eps
        deltas[l - 1] = back * activation_derivative(net.activation, trace["z"][l - 1])
    return deltas


def layer_statistics(deltas, trace) -> list[dict]:
    """Per-layer grad_sq_norm, g_aa, g_ab, g_ab_abs from deltas and layer inputs."""
    out = []
    for delta, inp in zip(deltas, trace["inputs"]):
        fan_out, fan_in = delta.shape[1], inp.shape[1]
        d2 = (delta * delta).sum(dim=1)
        y2 = (inp * inp).sum(dim=1)
        sq = d2 * y2
        g_ab = (delta[0::2] * delta[1::2]).sum(dim=1) * (inp[0::2] * inp[1::2]).sum(dim=1) / (fan_out * fan_in)
        out.append({"fan_in": fan_in, "fan_out": fan_out,
                    "grad_sq_norm": float(sq.mean()), "g_aa": float(sq.mean()) / (fan_out * fan_in),
                    "g_ab": float(g_ab.mean()), "g_ab_abs": float(g_ab.abs().mean())})
    return out


def forward_statistics(trace) -> list[dict]:
    out = []
    for z in trace["z"]:
        za, zb = z[0::2], z[1::2]
        c = (za * zb).sum(dim=1) / torch.sqrt((za * za).sum(dim=1) * (zb * zb).sum(dim=1))
        out.append({"q_l": float((z * z).mean()), "c_l": float(c.mean())})
    return out


def measure_init(p: dict, init_index: int, x: torch.Tensor, labels, device) -> list[dict]:
    """Rows (without cell columns) for one initialisation: every layer × both modes."""
    out_features = p["width"] if p["dataset"] == "gaussian" else 10
    net = DropoutMLP(x.shape[1], p["width"], p["depth"], out_features, activation=p["activation"],
                     keep_rate=p["keep_rate"], noise=p["noise"], noise_var=p["noise_var"],
                     dropout_input=p["dropout_input"], dtype=torch.float64, device=device)
    net.initialize(_seed(p["seed"], init_index, 1), p["sigma_w2"], p["sigma_b2"], p["init"], draw_device=device)
    mask_gen = torch.Generator(device=device).manual_seed(_seed(p["seed"], init_index, 2))
    with torch.no_grad():
        trace = net.trace(x, generator=mask_gen)
        forward = forward_statistics(trace)
        delta_out = output_delta(trace["z"][-1], p["loss"], labels)
        copy_gen = torch.Generator(device=device).manual_seed(_seed(p["seed"], init_index, 3))
        independent = [draw_weight(tuple(w.shape), p["sigma_w2"], p["init"], copy_gen) for w in net.weights]
        rows = []
        for mode, weights in (("real", [w.detach() for w in net.weights]), ("independent", independent)):
            stats = layer_statistics(backward_deltas(net, trace, delta_out, weights), trace)
            for layer, (g, f) in enumerate(zip(stats, forward)):
                rows.append({"init_index": init_index, "layer": layer, "mode": mode, **g, **f})
    return rows


def run_grad_cell(params: dict, output=None, *, device: str = "auto", data_dir=None, progress: bool = True):
    """Measure one gradient cell; write it to ``output`` (atomically) when given; return a pyarrow Table."""
    import pyarrow as pa

    t_start = time.perf_counter()
    started_at = cells.utc_now()
    p, identity = cells.cell_identity("grad", params)
    dev = cells.resolve_device(device)
    x, labels = cell_inputs(p, data_dir, dev)
    records = []
    for init_index in range(p["inits"]):
        records.extend(measure_init(p, init_index, x, labels, dev))
    wall_time = time.perf_counter() - t_start
    base = cells.row_base(p, identity, device=dev, wall_time_s=wall_time, started_at=started_at, kind="grad")
    table = pa.Table.from_pylist([{**base, **row} for row in records])
    if output is not None:
        from mfpipe.store import write_table_atomic

        write_table_atomic(table, output)
    if progress:
        print(f"grad-cell {identity}: {p['inits']} inits × {p['depth']} layers × 2 modes "
              f"in {wall_time:.2f} s on {dev}", file=sys.stderr, flush=True)
    return table


def warm_up() -> None:
    """For a pool server: a tiny gradient cell on Gaussian inputs (torch's first-use costs)."""
    with cells.one_torch_thread():
        run_grad_cell({"depth": 3, "width": 8, "inits": 1}, None, device="cpu", progress=False)


def add_arguments(parser) -> None:
    cells.add_common_arguments(parser, "grad")


def run(args) -> int:
    return cells.run_cells_cli(args, "grad", run_grad_cell)
