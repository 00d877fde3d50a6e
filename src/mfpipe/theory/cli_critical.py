"""`mfpipe critical`: σ_w² on the critical line χ1 = 1 for an activation, σ_b² (list) and noise.

Prints CSV (activation, noise, sigma_b2, keep_rate, noise_var, sigma_w2) with one row per grid
point, or with ``--plain`` just the σ_w² values, one per line.  nan: no critical point.
"""

from __future__ import annotations

import argparse

import numpy as np

from mfpipe.errors import InputError
from mfpipe.theory.cli import (add_model_arguments, add_output_argument, check_grid_size, check_output,
                               grid_values,
                               renamed, write_rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, sigma_w2=False)
    parser.add_argument("--plain", action="store_true", help="print only the critical σ_w² values")
    add_output_argument(parser)


def run(args) -> int:
    from mfpipe.theory.activations import get_activation
    from mfpipe.theory.maps import critical_sigma_w2

    output = check_output(args.output)
    values = {f: grid_values(args, f) for f in ("sigma_b2", "keep_rate", "noise_var")}
    check_grid_size(values)
    mesh = np.meshgrid(*(np.array(v) for v in values.values()), indexing="ij")
    grid = {f: m.ravel() for f, m in zip(values, mesh)}
    try:
        sw = critical_sigma_w2(args.activation, grid["sigma_b2"], grid["keep_rate"], args.noise,
                               grid["noise_var"], method=args.method)
    except InputError as err:
        raise renamed(err) from None
    if args.plain and output is None:
        for v in sw:
            print(repr(float(v)))
        return 0
    n = sw.size
    columns = {"activation": [get_activation(args.activation).name] * n,
               "noise": [str(args.noise).strip().lower()] * n, **grid, "sigma_w2": sw}
    write_rows(columns, output)
    return 0
