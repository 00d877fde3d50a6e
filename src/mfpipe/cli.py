"""The one `mfpipe` command line.

Each subcommand lives in the module that does its work; that module exposes
``add_arguments(parser)`` and ``run(args) -> int``.  Modules are imported lazily, only for the
subcommand being run, so `mfpipe theory` or `mfpipe status` never pay for importing torch.

Exit codes: 0 success, 2 bad input (an ``InputError`` naming the field and the allowed values,
or an argparse error), 1 anything else.
"""

from __future__ import annotations

import importlib
import sys

from mfpipe import __version__
from mfpipe.errors import InputError

# name -> (module, one-line help).  The module provides add_arguments(parser) and run(args).
COMMANDS: dict[str, tuple[str, str]] = {
    "theory": ("mfpipe.theory.cli", "mean-field table (q*, c*, χ1, χ_c, ξ_q, ξ_c, ξ_∇) over a grid"),
    "critical": ("mfpipe.theory.cli_critical", "critical σ_w² (χ1 = 1) for an activation, σ_b² and noise"),
    "iterates": ("mfpipe.theory.cli_iterates", "q^l and c^l iterates with fitted depth scales"),
    "train-cell": ("mfpipe.train", "train one network (one grid cell) and write its parquet"),
    "grad-cell": ("mfpipe.gradients", "per-layer gradient statistics at initialisation for one cell"),
    "prepare-data": ("mfpipe.data", "prepare (and cache) a dataset in the data directory"),
    "aggregate": ("mfpipe.aggregate", "merge per-cell parquet files into one dataset per kind"),
    "fit": ("mfpipe.fit", "fit the maximum-trainable-depth formula L_max = n·ξ and rivals"),
    "figures": ("mfpipe.figures", "render the figures from parquet"),
    "status": ("mfpipe.status", "cells per study of a config: done / stale / missing, GPU-hours left"),
    "pool": ("mfpipe.pool", "run a cell command in a warm worker process (what the workflow's cell jobs do)"),
    "search": ("mfpipe.search", "boundary search of a study: plan the next round, list its cells"),
    "cells": ("mfpipe.grid", "list the cells (paths, parameters) a config's studies expand to"),
}


def build_parser(command: str | None = None):
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str):  # argparse already exits 2; keep its message format
            self.print_usage(sys.stderr)
            self.exit(2, f"{self.prog}: error: {message}\n")

    parser = _Parser(prog="mfpipe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"mfpipe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:  # only the chosen subcommand's module is imported
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pool"]:  # the workflow's every job: skip argparse (and its imports)
        from mfpipe import pool

        split = pool.split_argv(argv[1:])
        if split is not None and split[1] and split[1][0] != "-":
            try:
                return pool.run_command(split[1], split[0])
            except InputError as err:
                print(f"mfpipe pool: error: {err}", file=sys.stderr)
                return 2
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is not None and command not in COMMANDS:
        command = None
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except InputError as err:
        print(f"mfpipe {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `mfpipe theory | head`
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
