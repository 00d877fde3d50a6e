"""Cell parameters shared by training and gradient cells: the machine-readable parameter lists,
validation and completion, the learning-rate depth rule, CLI flags, devices, and row provenance.

``TRAIN_PARAMS`` and ``GRAD_PARAMS`` map each cell parameter (= output column = CLI flag with
``_`` → ``-``) to a spec ``{"type", "default", "help"}`` plus ``"allowed"`` (choices) or
``"min"``/``"max"`` (inclusive bounds) / ``"min_exclusive"``.  Types: ``str``, ``int``,
``float``, ``bool``, ``int_list``.  The workflow (grid.py, config schema, resource estimates)
reads these; ``complete_params(kind, params)`` is the one place that validates a cell and fills
its defaults, and ``cell_id`` must be computed on its result (``cell_identity``) so a cell
written with and without an explicit default value is one cell.

Learning-rate depth rule (``--lr``, and ``lr`` in configs): ``LR0[,D1:LR1[,D2:LR2…]]`` with
increasing depth thresholds D1 < D2 < …: depth < D1 uses LR0, D1 ≤ depth < D2 uses LR1, and so
on.  ``1e-3,200:1e-4`` is Schoenholz et al.'s rule (1e-3 below L = 200, 1e-4 from 200 on); a
plain number is a constant.  Cells store the *resolved* number in the ``lr`` column, so a rule
change reruns only the cells whose learning rate actually changes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket

from mfpipe.data import DATASETS, PREPROCESSING
from mfpipe.errors import InputError
from mfpipe.grid import canonical_params, cell_id, path_params
from mfpipe.values import clean_float

# Kept in sync with mfpipe.nets (not imported here: that would import torch).
ACTIVATIONS = ("tanh", "relu", "erf", "linear", "hard_tanh")
NOISES = ("dropout", "gaussian", "additive")
INITS = ("gaussian", "orthogonal")
OPTIMIZERS = ("sgd", "rmsprop", "adam")
GRAD_INPUTS = ("gaussian",) + DATASETS
LOSSES = ("sum_sq", "cross_entropy")
DEVICES = ("auto", "cpu", "cuda")

_NETWORK_PARAMS = {
    "activation": {"type": "str", "default": "tanh", "allowed": list(ACTIVATIONS),
                   "help": "nonlinearity φ"},
    "width": {"type": "int", "default": 300, "min": 1, "help": "hidden width N"},
    "depth": {"type": "int", "default": 10, "min": 1,
              "help": "number of weight layers L (L−1 hidden layers)"},
    "sigma_w2": {"type": "float", "default": 1.5, "min_exclusive": 0.0, "help": "weight variance σ_w²"},
    "sigma_b2": {"type": "float", "default": 0.05, "min": 0.0, "help": "bias variance σ_b²"},
    "keep_rate": {"type": "float", "default": 1.0, "min_exclusive": 0.0, "max": 1.0,
                  "help": "dropout keep probability ρ (1 = no dropout)"},
    "noise": {"type": "str", "default": "dropout", "allowed": list(NOISES),
              "help": "noise on layer inputs: dropout (keep_rate), gaussian (multiplicative N(1, noise_var)) "
                      "or additive (N(0, noise_var))"},
    "noise_var": {"type": "float", "default": 0.0, "min": 0.0,
                  "help": "variance of the gaussian/additive noise (not with noise=dropout)"},
    "dropout_input": {"type": "bool", "default": False,
                      "help": "apply the noise to the network input too (Pretorius: yes, Huang: no)"},
    "init": {"type": "str", "default": "gaussian", "allowed": list(INITS),
             "help": "weights N(0, σ_w²/N_in) or orthogonal × σ_w"},
}

TRAIN_PARAMS: dict[str, dict] = {
    "dataset": {"type": "str", "default": "mnist5k", "allowed": list(DATASETS), "help": "training data"},
    "preprocess": {"type": "str", "default": "standardize", "allowed": list(PREPROCESSING),
                   "help": "input preprocessing (see mfpipe.data)"},
    "eval_size": {"type": "int", "default": 1000, "min": 0,
                  "help": "size of the fixed train/test evaluation subsets (0 = whole split)"},
    **_NETWORK_PARAMS,
    "optimizer": {"type": "str", "default": "sgd", "allowed": list(OPTIMIZERS), "help": "optimizer"},
    "lr": {"type": "float", "default": 1e-3, "min_exclusive": 0.0,
           "help": "learning rate: a number or a depth rule LR0,D1:LR1,… (resolved per cell)"},
    "batch_size": {"type": "int", "default": 128, "min": 1, "help": "minibatch size"},
    "steps": {"type": "int", "default": 1000, "min": 0, "help": "training steps"},
    "checkpoints": {"type": "int_list", "default": [], "min": 0,
                    "help": "steps at which to record a row (the final step is always recorded)"},
    "seed": {"type": "int", "default": 0, "min": 0, "help": "seed of init, noise and minibatches"},
}

GRAD_PARAMS: dict[str, dict] = {
    "dataset": {"type": "str", "default": "gaussian", "allowed": list(GRAD_INPUTS),
                "help": "inputs: gaussian = fixed N(0,1) inputs of dimension width (Huang), or a dataset"},
    "preprocess": {"type": "str", "default": "standardize", "allowed": list(PREPROCESSING),
                   "help": "input preprocessing for dataset inputs"},
    "loss": {"type": "str", "default": "sum_sq", "allowed": list(LOSSES),
             "help": "E = Σ out² (Huang) or cross-entropy with dataset labels (Schoenholz Fig. 4)"},
    **_NETWORK_PARAMS,
    "n_inputs": {"type": "int", "default": 2, "min": 2,
                 "help": "inputs per initialisation (even; consecutive pairs give g_ab and c_l)"},
    "inits": {"type": "int", "default": 1, "min": 1, "help": "independent initialisations (rows per init_index)"},
    "seed": {"type": "int", "default": 0, "min": 0, "help": "base seed (weights, inputs, masks)"},
}

PARAMS = {"train": TRAIN_PARAMS, "grad": GRAD_PARAMS}

#: Bump a kind's number with any code change that changes that kind's results (numbers, rows,
#: columns): the workflow (mfpipe.grid.engine_versions) then reruns every cell of that kind.
ENGINE_VERSIONS = {"train": 2, "grad": 1}

#: Member parameters: cells that differ only in these train together as one bundle (stacked
#: weights, one operation per layer for all; see mfpipe.train).  Everything else — dataset,
#: shape, activation, noise kind, optimizer, batch size, steps, checkpoints, … — is shared.
MEMBER_PARAMS = ("sigma_w2", "sigma_b2", "init", "keep_rate", "noise_var", "lr", "seed")


def bundle_key(kind: str, params: dict) -> str:
    """What the cells of one bundle share: the completed parameters (lr resolved) less
    ``MEMBER_PARAMS``, as canonical JSON (hashable, printable)."""
    full = complete_params(kind, params)
    shared = {k: v for k, v in full.items() if k not in MEMBER_PARAMS}
    return json.dumps({"kind": kind, **shared}, sort_keys=True, separators=(",", ":"))


def param_specs(kind: str) -> dict[str, dict]:
    if kind not in PARAMS:
        raise InputError("cell kind", kind, ", ".join(PARAMS))
    return PARAMS[kind]


def specs_json(kind: str) -> str:
    return json.dumps(param_specs(kind), indent=2)


# ----------------------------------------------------------------------------- learning rate

def parse_lr_rule(rule) -> list[tuple[int, float]]:
    """``LR0[,D1:LR1…]`` -> [(0, LR0), (D1, LR1), …] (thresholds strictly increasing)."""
    allowed = ("a positive number, or a depth rule LR0,D1:LR1,… with increasing integer depths, "
               "e.g. 1e-3,200:1e-4 (1e-3 for depth < 200, 1e-4 from 200 on)")
    if isinstance(rule, bool):
        raise InputError("lr", rule, allowed)
    if isinstance(rule, (int, float)):
        pieces = [str(rule)]
    else:
        pieces = [p.strip() for p in str(rule).split(",")]
    out: list[tuple[int, float]] = []
    for i, piece in enumerate(pieces):
        try:
            if i == 0:
                if ":" in piece:
                    raise ValueError
                threshold, value = 0, float(piece)
            else:
                d, v = piece.split(":")
                threshold, value = int(d), float(v)
        except ValueError:
            raise InputError("lr", rule, allowed) from None
        if not (value > 0 and value < float("inf")) or (out and threshold <= out[-1][0]):
            raise InputError("lr", rule, allowed)
        out.append((threshold, value))
    return out


def resolve_lr(rule, depth: int) -> float:
    """The learning rate a depth rule gives at ``depth``."""
    lr = None
    for threshold, value in parse_lr_rule(rule):
        if depth >= threshold:
            lr = value
    return clean_float(lr)


# ----------------------------------------------------------------------------- validation

def _coerce(name: str, spec: dict, value):
    kind = spec["type"]
    if kind == "str":
        if not isinstance(value, str) or value not in spec["allowed"]:
            raise InputError(name, value, ", ".join(spec["allowed"]))
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise InputError(name, value, "true or false")
    if kind == "int_list":
        if isinstance(value, str):
            items = [v for v in value.replace(" ", "").split(",") if v]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            items = [value]
        else:
            raise InputError(name, value, "a comma list of integers, e.g. 45,304,2048,13780")
        out = [_coerce(name, {**spec, "type": "int"}, v) for v in items]
        return sorted(set(out))
    bounds = _bounds_text(spec)
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(name, value, f"{'an integer' if kind == 'int' else 'a number'}{bounds}") from None
    if kind == "int":
        if number != int(number):
            raise InputError(name, value, f"an integer{bounds}")
        number = int(number)
    else:
        number = clean_float(number)
        if number != number or number in (float("inf"), float("-inf")):
            raise InputError(name, value, f"a finite number{bounds}")
    if ("min" in spec and number < spec["min"]) or ("max" in spec and number > spec["max"]) or (
            "min_exclusive" in spec and number <= spec["min_exclusive"]):
        raise InputError(name, value, f"{'an integer' if kind == 'int' else 'a number'}{bounds}")
    return number


def _bounds_text(spec: dict) -> str:
    parts = []
    if "min_exclusive" in spec:
        parts.append(f"> {spec['min_exclusive']:g}")
    if "min" in spec:
        parts.append(f"≥ {spec['min']:g}")
    if "max" in spec:
        parts.append(f"≤ {spec['max']:g}")
    return (" " + " and ".join(parts)) if parts else ""


def complete_params(kind: str, params: dict) -> dict:
    """Validate a cell's parameters, fill defaults, resolve the lr rule: the cell's identity.

    Raises ``InputError`` naming the field and its allowed values.
    """
    specs = param_specs(kind)
    unknown = sorted(set(params) - set(specs))
    if unknown:
        raise InputError("parameter", unknown[0], ", ".join(specs))
    out = {}
    for name, spec in specs.items():
        value = params.get(name)
        if value is None:
            value = spec["default"]
        if name == "lr" and kind == "train":
            depth = _coerce("depth", specs["depth"], params.get("depth", specs["depth"]["default"]))
            value = resolve_lr(value, depth)
        out[name] = _coerce(name, spec, value)
    if out["noise"] == "dropout" and out["noise_var"] != 0.0:
        raise InputError("noise_var", out["noise_var"], "0 when noise=dropout (use keep_rate)")
    if out["noise"] != "dropout" and out["keep_rate"] != 1.0:
        raise InputError("keep_rate", out["keep_rate"], f"1 when noise={out['noise']} (use noise_var)")
    if kind == "train":
        if any(c > out["steps"] for c in out["checkpoints"]):
            raise InputError("checkpoints", out["checkpoints"], f"steps between 0 and steps={out['steps']}")
        check_split_sizes(out["dataset"], out["batch_size"], out["eval_size"])
        out["checkpoints"] = sorted(set(out["checkpoints"]) | {out["steps"]})
    else:
        if out["n_inputs"] % 2:
            raise InputError("n_inputs", out["n_inputs"], "an even integer ≥ 2 (inputs come in pairs)")
        if out["dataset"] == "gaussian" and out["loss"] == "cross_entropy":
            raise InputError("loss", "cross_entropy", "sum_sq when dataset=gaussian (no labels)")
    return canonical_params(out)


def check_split_sizes(dataset: str, batch_size: int, eval_size: int) -> None:
    """A minibatch or evaluation subset larger than the training split is refused, never
    silently clamped (the row would record a size that was not used)."""
    n_train = EVAL_SPLIT_SIZES[dataset][0]
    for name, value in (("batch_size", batch_size), ("eval_size", eval_size)):
        if value > n_train:
            raise InputError(name, value, f"an integer between {TRAIN_PARAMS[name]['min']} and "
                             f"{n_train}, the size of {dataset}'s training split")


def cell_identity(kind: str, params: dict) -> tuple[dict, str]:
    """(completed params, cell_id) — the workflow and the cells must both use this."""
    full = complete_params(kind, params)
    return full, cell_id(full)


# ----------------------------------------------------------------------------- CLI flags

def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_param_arguments(parser, kind: str) -> None:
    """One flag per parameter (``sigma_w2`` -> ``--sigma-w2``); unset flags take the defaults."""
    import argparse

    for name, spec in param_specs(kind).items():
        default = spec["default"]
        choices = f" {{{','.join(spec['allowed'])}}}" if "allowed" in spec else ""
        help_text = f"{spec['help']}{choices} (default: {default if default != [] else 'final step only'})"
        if spec["type"] == "bool":
            parser.add_argument(flag(name), dest=name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        else:
            parser.add_argument(flag(name), dest=name, default=None, metavar=name.upper(), help=help_text)


def params_from_args(args, kind: str) -> dict:
    return {name: getattr(args, name) for name in param_specs(kind) if getattr(args, name, None) is not None}


def add_common_arguments(parser, kind: str) -> None:
    add_param_arguments(parser, kind)
    parser.add_argument("-o", "--output", help="output parquet (or .csv) file, written atomically")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    parser.add_argument("--data-dir", default=None, help="data directory (default: $MFPIPE_DATA_DIR or ./data)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: $OMP_NUM_THREADS, else the CPUs this process may use)")
    parser.add_argument("--cells-file", default=None,
                        help="run many cells in this one process: a JSON list (or JSON-lines file) of "
                             "objects with the cell parameters and an 'output' path; flags given on "
                             "the command line are defaults for every cell")
    parser.add_argument("--outputs", nargs="+", default=None, metavar="PATH",
                        help="run one cell per output path in this one process (training: as "
                             "bundles): each path's name=value directories and file name set "
                             "that cell's parameters over the flags, e.g. "
                             ".../sigma_w2=1.5/seed=0.parquet (what the workflow's bundle jobs do)")
    parser.add_argument("--stamp", default=None, metavar="JSON",
                        help="with --outputs or --cells-file: write a JSON record of the cells "
                             "(trained, or kept because their stored identity matched) here")
    parser.add_argument("--skip-existing", action="store_true",
                        help="with --cells-file: skip cells whose output file already exists")
    parser.add_argument("--print-params", action="store_true",
                        help="print the parameter specs as JSON and exit")


def params_from_path(kind: str, path: str) -> dict:
    """The parameters a cell path names: its ``name=value`` directories and file name
    (``.../depth=16/sigma_w2=1.5/seed=0.parquet`` -> depth 16, σ_w² 1.5, seed 0)."""
    params = path_params(path, param_specs(kind))
    if not params:
        raise InputError("outputs", path, "cell paths with name=value parts, e.g. "
                                          ".../sigma_w2=1.5/seed=0.parquet")
    return params


def read_cells_file(path: str) -> list[dict]:
    text = open(path, encoding="utf-8").read().strip()
    if not text:
        return []
    if text.startswith("["):
        cells = json.loads(text)
    else:
        cells = [json.loads(line) for line in text.splitlines() if line.strip()]
    for i, cell in enumerate(cells):
        if not isinstance(cell, dict) or not cell.get("output"):
            raise InputError("cells-file", f"{path} entry {i}", "objects with cell parameters and an 'output' path")
    return cells


def run_cells_cli(args, kind: str, run_cell, run_bundle=None) -> int:
    """Shared `train-cell` / `grad-cell` driver: one cell from flags, or many from --cells-file.

    With ``run_bundle`` (training), the cells of a --cells-file are grouped by ``bundle_key``
    (in order of first appearance) and each group is trained in chunks of at most
    ``--bundle-size`` cells (default: the whole group) by ``run_bundle(params_list, outputs,
    device=, data_dir=)``; without it, cell by cell.  ``--skip-existing`` skips a cell only when
    its output exists and holds that cell: same ``cell_id`` and engine version
    (``stored_identity_matches``); any other output is retrained.
    """
    if args.print_params:
        print(specs_json(kind))
        return 0
    from mfpipe.store import check_output

    base = params_from_args(args, kind)
    configure_threads(args.threads)
    bundle_size = getattr(args, "bundle_size", None)
    if bundle_size is not None and int(bundle_size) < 1:
        raise InputError("bundle-size", bundle_size, "an integer ≥ 1")
    if args.stamp is not None and not (args.cells_file or args.outputs):
        raise InputError("stamp", args.stamp, "only with --outputs or --cells-file")
    if args.cells_file and args.outputs:
        raise InputError("outputs", " ".join(args.outputs), "--outputs or --cells-file, not both")
    if args.stamp is not None:
        check_output(args.stamp, "stamp", suffixes=(".json",))
    if args.cells_file or args.outputs:
        if args.outputs:
            cells = [{**params_from_path(kind, path), "output": path} for path in args.outputs]
        else:
            cells = read_cells_file(args.cells_file)
        jobs = []
        for cell in cells:  # validate everything before running anything
            cell = dict(cell)
            output = cell.pop("output")
            jobs.append(({**base, **cell}, output))
            complete_params(kind, jobs[-1][0])
        budget = memory_budget(args.device)
        for i, (params, output) in enumerate(jobs):  # before any work: outputs and sizes
            check_output(output, f"cells-file entry {i} output")
            check_memory(kind, params, budget)
        every = {str(output): cell_identity(kind, params)[1] for params, output in jobs}
        kept = []
        if args.skip_existing:
            current = [stored_identity_matches(kind, params, output) for params, output in jobs]
            kept = [output for (_, output), keep in zip(jobs, current) if keep]
            jobs = [job for job, keep in zip(jobs, current) if not keep]
        if run_bundle is None:
            for params, output in jobs:
                run_cell(params, output, device=args.device, data_dir=args.data_dir)
        else:
            groups: dict[str, list] = {}
            for params, output in jobs:
                groups.setdefault(bundle_key(kind, params), []).append((params, output))
            cap = int(bundle_size) if bundle_size is not None else None
            stack = stack_limit(args.device)
            for group in groups.values():
                for chunk in memory_chunks(kind, group, cap, budget, stack):
                    run_bundle([p for p, _ in chunk], [o for _, o in chunk],
                               device=args.device, data_dir=args.data_dir)
        if args.stamp is not None:
            from mfpipe.store import atomic_path

            record = {"kind": kind, "engine_version": ENGINE_VERSIONS[kind], "finished_at": utc_now(),
                      "trained": [str(o) for _, o in jobs], "kept": [str(o) for o in kept],
                      "cells": every}  # output -> cell_id: what this job stands for
            with atomic_path(args.stamp) as tmp:
                tmp.write_text(json.dumps(record, indent=1) + "\n")
        fast_exit_if_entry_point()
        return 0
    if not args.output:
        raise InputError("output", None, "a path ending in .parquet or .csv (-o/--output)")
    check_output(args.output, "output")
    check_memory(kind, base, memory_budget(args.device))
    run_cell(base, args.output, device=args.device, data_dir=args.data_dir)
    fast_exit_if_entry_point()
    return 0


def memory_budget(device: str) -> int:
    """Bytes one process may plan to use on ``device``: half the GPU's free memory (CUDA) or
    half of this machine's available memory (CPU), leaving room for the framework and caches."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(dev)
        return int(free) // 2
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: line.split()[1] for line in fh}
        return int(info["MemAvailable"]) * 1024 // 2
    except (OSError, KeyError, IndexError, ValueError):
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def check_memory(kind: str, params: dict, budget: int) -> None:
    """Refuse, before any work, a cell whose estimated memory exceeds ``budget`` bytes."""
    need = estimated_cost(kind, params)["peak_bytes"]
    if need > budget:
        p = complete_params(kind, params)
        raise InputError("width/depth", f"width {p['width']}, depth {p['depth']}",
                         f"a network that fits in memory: this cell needs about "
                         f"{need / 1e9:.3g} GB, the device has {budget / 1e9:.3g} GB to spare")


#: On a CPU a bundle's stacked parameters stay within this many bytes: beyond it the stacked
#: weights and optimizer state outgrow the caches, and a bundle trains slower per cell than its
#: cells one by one (``benchmarks/bundle.py`` on a 2-core EPYC: width 64 at 9–37 MB stacked
#: 1.27–1.45× faster per cell; widths 400 and 1000 at 250–620 MB 0.95× and 0.75×).  A GPU has no
#: such limit (its bundles amortise kernel launches).
CPU_STACK_BYTES = 128 * 2**20


def stack_limit(device: str) -> int | None:
    """Bytes of stacked parameters one bundle may hold on ``device`` (None: no limit)."""
    return CPU_STACK_BYTES if resolve_device(device).type == "cpu" else None


def memory_chunks(kind: str, group: list, cap: int | None, budget: int, stack_bytes: int | None = None):
    """Consecutive chunks of ``group`` ((params, output) pairs) of at most ``cap`` cells whose
    summed memory estimate fits ``budget`` and whose summed parameters fit ``stack_bytes`` (when
    given; a cell alone always fits): what one stacked bundle may hold."""
    chunk, used, stacked = [], 0, 0
    for params, output in group:
        cost = estimated_cost(kind, params)
        need, weights = cost["peak_bytes"], cost["param_bytes"]
        if chunk and ((cap is not None and len(chunk) >= cap) or used + need > budget
                      or (stack_bytes is not None and stacked + weights > stack_bytes)):
            yield chunk
            chunk, used, stacked = [], 0, 0
        chunk.append((params, output))
        used += need
        stacked += weights
    if chunk:
        yield chunk


def stored_identity_matches(kind: str, params: dict, output) -> bool:
    """Whether ``output`` exists and holds the cell ``params`` as this code computes it: its
    ``cell_id`` column is the cell's id and its ``engine_version`` column (rows written before
    that column existed count as version 1) is ``ENGINE_VERSIONS[kind]``.  Unreadable → False."""
    if not os.path.exists(output):
        return False
    _, identity = cell_identity(kind, params)
    try:
        if str(output).endswith(".csv"):
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(output)
        else:
            import pyarrow.parquet as pq

            names = pq.read_schema(output).names
            table = pq.read_table(output, columns=[c for c in ("cell_id", "engine_version") if c in names])
    except Exception:  # noqa: BLE001 - a damaged file is simply not a finished cell
        return False
    if "cell_id" not in table.column_names or table.num_rows == 0:
        return False
    ids = {str(v) for v in table.column("cell_id").to_pylist()}
    versions = set(table.column("engine_version").to_pylist()) if "engine_version" in table.column_names else {1}
    return ids == {identity} and versions == {ENGINE_VERSIONS[kind]}


def fast_exit_if_entry_point() -> None:
    """End the process now (exit code 0) when it is the `mfpipe` command itself.

    Tearing down an interpreter that imported torch takes ~1 s (more on a busy node) — a tenth
    of a short cell.  Outputs are already written and renamed into place, so after flushing the
    standard streams ``os._exit(0)`` loses nothing.  Applies only when the process was started
    as ``mfpipe …`` or ``python -m mfpipe …`` (never when ``cli.main`` is called from Python,
    e.g. in tests); ``MFPIPE_FAST_EXIT=0`` disables it, ``=1`` forces it.
    """
    import sys

    setting = os.environ.get("MFPIPE_FAST_EXIT", "")
    if setting == "0":
        return
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    entry = os.path.basename(sys.argv[0] if sys.argv else "") == "mfpipe" or (
        main_spec is not None and main_spec.name in ("mfpipe", "mfpipe.__main__", "mfpipe.cli"))
    if setting == "1" or entry:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


# ----------------------------------------------------------------------------- runtime

def derive_seed(*parts: int) -> int:
    """An independent 63-bit seed for one random stream of a cell (numpy SeedSequence of parts)."""
    import numpy as np

    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads: explicit, else $OMP_NUM_THREADS, else the usable CPUs."""
    import torch

    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS")
        threads = int(env) if env and env.isdigit() and int(env) > 0 else len(os.sched_getaffinity(0))
    elif isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError("threads", threads, "an integer ≥ 1 (or unset: $OMP_NUM_THREADS, else "
                                             "the CPUs this process may use)")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def resolve_device(device: str):
    import torch

    if device not in DEVICES:
        raise InputError("device", device, ", ".join(DEVICES))
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device", device, "auto or cpu (no CUDA device on this machine)")
    return torch.device(device)


def row_base(params: dict, identity: str, *, device, wall_time_s: float, started_at: str, kind: str) -> dict:
    """Columns every row of a cell carries: parameters (lists as comma text), cell_id, provenance."""
    import torch

    from mfpipe.store import provenance

    flat = {k: (",".join(str(v) for v in val) if isinstance(val, list) else val) for k, val in params.items()}
    return {**flat, "cell_id": identity, "cell_kind": kind,
            **provenance(torch_version=torch.__version__, device=str(device),
                         device_name=_device_name(device), threads=torch.get_num_threads(),
                         hostname=socket.gethostname(), started_at=started_at,
                         wall_time_s=wall_time_s)}


def _device_name(device) -> str:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


@contextlib.contextmanager
def one_torch_thread():
    """torch on one CPU thread for the block: a pool server's warm-up runs so, so that no thread
    pool exists when it forks its children (OpenMP does not survive ``fork``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------------------- cost model

INPUT_FEATURES = {"mnist": 784, "fashion_mnist": 784, "mnist5k": 784, "cifar10": 3072, "digits": 64}
EVAL_SPLIT_SIZES = {"mnist": (60000, 10000), "fashion_mnist": (60000, 10000), "cifar10": (50000, 10000),
                    "mnist5k": (4000, 1000), "digits": (1438, 359)}


def estimated_cost(kind: str, params: dict) -> dict:
    """Floating-point work and memory of a cell, for scheduling (SLURM runtime, grouping).

    Returns ``flops`` (matmul FLOPs of the whole cell: training steps, checkpoint evaluations /
    all initialisations and backward modes), ``param_bytes`` and ``peak_bytes`` (a rough upper
    bound of tensor memory).  Divide ``flops`` by a device's sustained matmul rate (e.g. from
    ``benchmarks/cell.py``) to estimate the compute time; add ~3 s of process start-up per process.
    """
    p = complete_params(kind, params)
    width, depth = p["width"], p["depth"]
    if kind == "train":
        n_in, n_out = INPUT_FEATURES[p["dataset"]], 10
    else:
        n_in = width if p["dataset"] == "gaussian" else INPUT_FEATURES[p["dataset"]]
        n_out = width if p["dataset"] == "gaussian" else 10
    dims = [n_in] + [width] * (depth - 1) + [n_out]
    weights = sum(dims[l] * dims[l + 1] for l in range(depth))
    if kind == "train":
        per_example_step = sum(2 * dims[l] * dims[l + 1] * (2 if l == 0 else 3) for l in range(depth))
        n_train, n_test = EVAL_SPLIT_SIZES[p["dataset"]]
        eval_examples = (min(p["eval_size"] or n_train, n_train) + min(p["eval_size"] or n_test, n_test))
        flops = (p["steps"] * p["batch_size"] * per_example_step
                 + len(p["checkpoints"]) * eval_examples * 2 * weights)
        bytes_per = 4
        activations = p["batch_size"] * sum(dims) * 3
        state = {"sgd": 2, "rmsprop": 3, "adam": 4}[p["optimizer"]]
        peak = bytes_per * (weights * state + activations + n_train * n_in)
    else:
        # forward + two backward passes (real, independent) per init, plus drawing two weight sets
        flops = p["inits"] * (p["n_inputs"] * 2 * weights * 3 + 2 * weights * 10)
        peak = 8 * (2 * weights + p["n_inputs"] * sum(dims) * 4)
    return {"flops": float(flops), "param_bytes": int(4 * weights if kind == "train" else 8 * weights),
            "peak_bytes": int(peak)}
