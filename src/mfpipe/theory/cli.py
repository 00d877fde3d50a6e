"""`mfpipe theory`: the mean-field table over a grid of σ_w² × σ_b² × ρ (× noise variance).

One row per grid point with the columns activation, noise, sigma_w2, sigma_b2, keep_rate,
noise_var, q_star, c_star, chi_1, chi_c, xi_q, xi_c, xi_grad (DESIGN.md contract; inf/nan as
documented in mfpipe.theory.maps).  CSV on stdout, or ``-o table.parquet|.csv`` (atomic write).
Grid arguments take a number, a list ``1,1.5,2`` or an inclusive range ``start:stop:count``.

Also home of the argument helpers shared by `mfpipe critical` and `mfpipe iterates`.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np

from mfpipe.errors import InputError
from mfpipe.values import parse_values

PARAM_COLUMNS = ["activation", "noise", "sigma_w2", "sigma_b2", "keep_rate", "noise_var"]
FLAGS = {"sigma_w2": "--sigma-w2", "sigma_b2": "--sigma-b2", "keep_rate": "--keep-rate",
         "noise_var": "--noise-var", "activation": "--activation", "noise": "--noise",
         "method": "--method", "depth": "--depth", "q0": "--q0", "c0": "--c0", "q": "--q"}


def add_model_arguments(parser: argparse.ArgumentParser, *, sigma_w2: bool = True) -> None:
    from mfpipe.theory.activations import ACTIVATIONS
    from mfpipe.theory.maps import NOISES

    parser.add_argument("--activation", default="tanh",
                        help=f"one of {', '.join(ACTIVATIONS)} (default tanh)")
    if sigma_w2:
        parser.add_argument("--sigma-w2", default="1:4:31",
                            help="weight variance σ_w² > 0: number, list 1,1.5,2 or range start:stop:count "
                                 "(default 1:4:31)")
    parser.add_argument("--sigma-b2", default="0.05", help="bias variance σ_b² ≥ 0 (grid; default 0.05)")
    parser.add_argument("--keep-rate", default="1",
                        help="dropout keep probability ρ in (0, 1] (grid; default 1 = no dropout)")
    parser.add_argument("--noise", default="dropout",
                        help=f"noise model: {', '.join(NOISES)} (default dropout, controlled by --keep-rate)")
    parser.add_argument("--noise-var", default="0",
                        help="variance of gaussian (multiplicative N(1, v)) or additive noise (grid; default 0)")
    parser.add_argument("--method", default="auto", help="auto | closed | quadrature (default auto)")


def add_output_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default=None,
                        help="write to this .parquet or .csv file (atomically) instead of CSV on stdout")


#: Most grid points one `mfpipe theory` / `critical` run computes, and most rows `mfpipe
#: iterates` writes: checked before anything is allocated (10^6 tanh points take ~6 s and
#: 0.5 GB; 10^8 ran 43 s into a MemoryError).  Split bigger grids over several runs.
MAX_GRID_POINTS = 1_000_000
MAX_ITERATE_ROWS = 1_000_000


def grid_values(args, field: str) -> list[float]:
    return parse_values(getattr(args, field), FLAGS[field])


def check_grid_size(values: dict[str, list], limit: int = MAX_GRID_POINTS, per_point: int = 1,
                    what: str = "grid points", extra: str = "") -> int:
    """Refuse a grid (the product of the value lists) over ``limit`` before it is built.

    ``per_point`` multiplies the point count (rows per point for `iterates`); the message says
    how big the request is and which flags make it so."""
    from mfpipe.values import count_text

    n = per_point
    for v in values.values():
        n *= len(v)
    if n > limit:
        sizes = " × ".join(f"{len(v)} {FLAGS.get(f, f)}" for f, v in values.items() if len(v) > 1)
        raise InputError("grid", f"{count_text(n)} {what}" + (f" ({sizes}{extra})" if sizes or extra else ""),
                         f"at most {count_text(limit)} {what} per run (split the grid over several runs)")
    return n


def renamed(err: InputError) -> InputError:
    """The same error, naming the command-line flag instead of the API field."""
    return InputError(FLAGS.get(err.field, err.field), err.value, err.allowed)


def check_output(path: str | None) -> Path | None:
    """The -o path, checked before any work (suffix, directory creatable and writable)."""
    if path is None:
        return None
    from mfpipe.store import check_output as check_writable

    return check_writable(path, "--output", (".parquet", ".csv"))


def write_rows(columns: dict[str, np.ndarray | list], output: Path | None) -> None:
    """Columns (equal length) to a parquet/CSV file, or CSV on stdout."""
    if output is not None:
        import pyarrow as pa

        from mfpipe.store import write_table_atomic

        write_table_atomic(pa.table({k: list(v) if isinstance(v, list) else np.asarray(v)
                                     for k, v in columns.items()}), output, "--output")
        return
    writer = csv.writer(sys.stdout, lineterminator="\n")
    names = list(columns)
    writer.writerow(names)
    cols = [columns[k] for k in names]
    for i in range(len(cols[0])):
        writer.writerow([_cell(c[i]) for c in cols])
    sys.stdout.flush()


def _cell(x):
    if isinstance(x, (str, bool, np.bool_)):
        return str(x)
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return repr(x)


# ------------------------------------------------------------------ mfpipe theory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_output_argument(parser)


def run(args) -> int:
    from mfpipe.theory.maps import KEYS, depth_scales

    output = check_output(args.output)
    values = {f: grid_values(args, f) for f in ("sigma_w2", "sigma_b2", "keep_rate", "noise_var")}
    check_grid_size(values)
    mesh = np.meshgrid(*(np.array(v) for v in values.values()), indexing="ij")
    grid = {f: m.ravel() for f, m in zip(values, mesh)}
    try:
        res = depth_scales(args.activation, grid["sigma_w2"], grid["sigma_b2"], grid["keep_rate"],
                           args.noise, grid["noise_var"], method=args.method)
    except InputError as err:
        raise renamed(err) from None
    n = grid["sigma_w2"].size
    from mfpipe.theory.activations import get_activation

    columns = {"activation": [get_activation(args.activation).name] * n,
               "noise": [str(args.noise).strip().lower()] * n, **grid}
    columns.update({k: res[k] for k in KEYS})
    write_rows(columns, output)
    return 0
