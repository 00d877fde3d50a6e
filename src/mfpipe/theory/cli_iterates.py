"""`mfpipe iterates`: length and correlation iterates q^l, c^l with measured vs predicted ξ.

For every grid point (σ_w² × σ_b² × ρ × noise variance) and starting value (``--q0`` list for
the length map, ``--c0`` list for the correlation map, both inputs at q*) the maps are iterated
for ``--depth`` layers.  Tidy output, one row per (grid point, quantity, start, layer):
activation, noise, sigma_w2, sigma_b2, keep_rate, noise_var, quantity (q | c), start, layer,
value, fixed_point, residual = |value − fixed_point|, xi_predicted (ξ_q or ξ_c of the theory),
xi_measured (exponential fit of the residuals, mfpipe.theory.fit_depth_scale).  These are the
data of Schoenholz et al. Fig. 1b,c / 2b,c.
"""

from __future__ import annotations

import argparse

import numpy as np

from mfpipe.errors import InputError
from mfpipe.theory.cli import (MAX_ITERATE_ROWS, add_model_arguments, add_output_argument,
                               check_grid_size, check_output, grid_values, renamed, write_rows)
from mfpipe.values import parse_values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--q0", default="0.1,1,3", help="starting lengths q^0 (list; default 0.1,1,3; "
                        "'none' to skip the length map)")
    parser.add_argument("--c0", default="0.1,0.5,0.9", help="starting correlations c^0 in [-1, 1] (list; "
                        "default 0.1,0.5,0.9; 'none' to skip)")
    parser.add_argument("--depth", default="50", help="number of layers (integer ≥ 1; default 50)")
    add_output_argument(parser)


def _starts(text: str, flag: str) -> list[float]:
    if str(text).strip().lower() == "none":
        return []
    return parse_values(text, flag)


def run(args) -> int:
    from mfpipe.theory import depth_scales, fit_depth_scale, iterate_c, iterate_q
    from mfpipe.theory.activations import get_activation

    output = check_output(args.output)
    depth_values = parse_values(args.depth, "--depth", integer=True)
    if len(depth_values) != 1 or depth_values[0] < 1:
        raise InputError("--depth", args.depth, "one integer ≥ 1")
    depth = depth_values[0]
    q_starts = _starts(args.q0, "--q0")
    c_starts = _starts(args.c0, "--c0")
    if any(q < 0 for q in q_starts):
        raise InputError("--q0", args.q0, "lengths ≥ 0")
    if any(abs(c) > 1 for c in c_starts):
        raise InputError("--c0", args.c0, "correlations in [-1, 1]")
    values = {f: grid_values(args, f) for f in ("sigma_w2", "sigma_b2", "keep_rate", "noise_var")}
    starts = len(q_starts) + len(c_starts)
    check_grid_size(values, MAX_ITERATE_ROWS, per_point=starts * (depth + 1), what="rows",
                    extra=f"; {starts} starts × {depth + 1} layers (--depth {depth})")
    mesh = np.meshgrid(*(np.array(v) for v in values.values()), indexing="ij")
    grid = {f: m.ravel() for f, m in zip(values, mesh)}
    g = {k: v[:, None] for k, v in grid.items()}  # grid points × starts
    try:
        theory = depth_scales(args.activation, grid["sigma_w2"], grid["sigma_b2"], grid["keep_rate"],
                              args.noise, grid["noise_var"], method=args.method)
        series = []
        if q_starts:
            q = iterate_q(args.activation, g["sigma_w2"], g["sigma_b2"], np.array(q_starts)[None, :], depth,
                          g["keep_rate"], args.noise, g["noise_var"], method=args.method)
            series.append(("q", q_starts, q, theory["q_star"], theory["xi_q"]))
        if c_starts:
            c = iterate_c(args.activation, g["sigma_w2"], g["sigma_b2"], np.array(c_starts)[None, :], depth,
                          g["keep_rate"], None, args.noise, g["noise_var"], method=args.method)
            series.append(("c", c_starts, c, theory["c_star"], theory["xi_c"]))
    except InputError as err:
        raise renamed(err) from None

    cols: dict[str, list] = {k: [] for k in ("activation", "noise", "sigma_w2", "sigma_b2", "keep_rate",
                                             "noise_var", "quantity", "start", "layer", "value",
                                             "fixed_point", "residual", "xi_predicted", "xi_measured")}
    name = get_activation(args.activation).name
    noise = str(args.noise).strip().lower()
    layers = np.arange(depth + 1)
    for quantity, starts, values_l, fixed, xi in series:
        for i in range(grid["sigma_w2"].size):
            for j, start in enumerate(starts):
                v = values_l[:, i, j]
                measured = fit_depth_scale(v, fixed[i])
                n = depth + 1
                cols["activation"] += [name] * n
                cols["noise"] += [noise] * n
                for f in ("sigma_w2", "sigma_b2", "keep_rate", "noise_var"):
                    cols[f] += [float(grid[f][i])] * n
                cols["quantity"] += [quantity] * n
                cols["start"] += [float(start)] * n
                cols["layer"] += layers.tolist()
                cols["value"] += v.tolist()
                cols["fixed_point"] += [float(fixed[i])] * n
                cols["residual"] += np.abs(v - fixed[i]).tolist()
                cols["xi_predicted"] += [float(xi[i])] * n
                cols["xi_measured"] += [measured] * n
    write_rows(cols, output)
    return 0
