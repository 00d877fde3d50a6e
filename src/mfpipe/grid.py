"""Config → cells; stable cell ids and paths.  The single source of truth for cell identity.

A cell is a dict of plain parameters (str/int/float/bool).  Its identity is its parameters
with numbers in canonical form (``format_number``), so ``1``, ``1.0`` and ``1.00`` are one cell.

The workflow (Snakefile), ``mfpipe status`` and ``mfpipe cells`` all turn a config into cells
here and nowhere else.  A config has one or more *studies*; each study is of a *kind*
(``train`` → ``mfpipe train-cell``, ``grad`` → ``mfpipe grad-cell``) and is

* ``grid``: a Cartesian product over the listed parameters (each a list, a number, a comma
  list ``1,1.5,2`` or an inclusive range ``start:stop:count``);
* ``settings``: single values shared by every cell of the study (``steps``, ``checkpoints``,
  ``batch_size``, ``lr`` — a number or a depth rule ``{depth_below: 200, below: 1e-3,
  otherwise: 1e-4}`` —, …); parameters named nowhere take the kind's defaults;
* ``extra_cells``: explicit cells added to the product (a mapping per cell; unnamed grid
  parameters default to the grid's value when it has only one).

Every parameter listed under ``grid`` is a directory level of the cell's path, in a fixed
order, as ``name=value`` with canonical numbers (the dataset is always the first level, the
last level is the file name)::

    results/cells/<study>/dataset=mnist5k/activation=tanh/width=64/depth=16/sigma_w2=1.5/
        sigma_b2=0.05/keep_rate=0.98/seed=0.parquet

so adding a value to an axis adds paths without moving the existing ones (only new cells
run), while a changed setting keeps the paths and changes every cell's parameters (Snakemake's
params trigger reruns the study).  Each cell's Snakemake params are one string of command-line
flags plus the kind's engine version (``mfpipe.cells.ENGINE_VERSIONS``): bump the version when a code change
alters the results of that kind of cell and every such cell becomes stale; any other code edit
(plotting, this file's comments) leaves finished cells alone.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from mfpipe.errors import InputError
from mfpipe.values import clean_float, format_number, parse_values


def canonical_params(params: dict) -> dict:
    """Parameters with numbers canonicalised (plain Python types, 12 significant digits)."""
    out = {}
    for key in sorted(params):
        value = params[key]
        if isinstance(value, bool) or value is None or isinstance(value, str):
            out[key] = value
        elif isinstance(value, int):
            out[key] = int(value)
        elif isinstance(value, float):
            out[key] = clean_float(value)
        elif hasattr(value, "item"):  # numpy scalar
            out[key] = canonical_params({"v": value.item()})["v"]
        elif isinstance(value, (list, tuple)):
            out[key] = [canonical_params({"v": v})["v"] for v in value]
        else:
            raise TypeError(f"cell parameter {key!r} has unsupported type {type(value).__name__}")
    return out


def cell_id(params: dict) -> str:
    """A 16-hex-digit id that depends only on the canonical parameters."""
    canon = canonical_params(params)
    text = json.dumps(
        {k: (format_number(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
         for k, v in canon.items()},
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha1(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- parameters

#: The ``mfpipe`` subcommand that computes one cell of each kind.
KIND_COMMANDS = {"train": "train-cell", "grad": "grad-cell"}

#: Result dataset per kind (``mfpipe aggregate`` writes results/<name>.parquet).
KIND_DATASETS = {"train": "training", "grad": "gradients"}



@dataclass(frozen=True)
class Param:
    """One cell parameter: its type, allowed values and default.  Its CLI flag is
    ``--name-with-dashes`` (flags mirror column names)."""

    name: str
    type: str  # "int", "float", "str", "bool", "int_list"
    allowed: tuple = ()  # for "str": the choices
    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None
    default: object = None  # None: required (must be in grid, settings or the extra cell)
    help: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def describe(self) -> str:
        if self.type == "str":
            return ", ".join(self.allowed)
        if self.type == "bool":
            return "true or false"
        what = {"int": "an integer", "float": "a number", "int_list": "a list of integers"}[self.type]
        bounds = []
        if self.minimum is not None:
            bounds.append(f"≥ {format_number(self.minimum)}")
        if self.exclusive_minimum is not None:
            bounds.append(f"> {format_number(self.exclusive_minimum)}")
        if self.maximum is not None:
            bounds.append(f"≤ {format_number(self.maximum)}")
        return what + (" " + " and ".join(bounds) if bounds else "")

    def check(self, value, where: str):
        """The value as a plain Python value of this parameter's type, or InputError."""
        bad = InputError(where, value, self.describe())
        if self.type == "str":
            if not isinstance(value, str) or value not in self.allowed:
                raise bad
            return value
        if self.type == "bool":
            if not isinstance(value, bool):
                raise bad
            return value
        if self.type == "int_list":
            values = parse_values(value, where, integer=True) if value != [] else []
            low = self.minimum if self.minimum is not None else 0
            if any(v < low for v in values):
                raise InputError(where, value, f"a list of integers ≥ {format_number(low)}")
            return sorted(set(values))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if self.type == "int":
            if float(value) != int(value):
                raise bad
            value = int(value)
        else:
            value = clean_float(value)
            if not math.isfinite(value):
                raise bad
        if self.minimum is not None and value < self.minimum:
            raise bad
        if self.exclusive_minimum is not None and value <= self.exclusive_minimum:
            raise bad
        if self.maximum is not None and value > self.maximum:
            raise bad
        return value


#: Path order of grid parameters (parameters not listed here go before ``seed``).
PATH_ORDER = ("dataset", "preprocess", "eval_size", "loss", "n_inputs", "activation", "noise",
              "noise_var", "dropout_input", "init", "optimizer", "lr", "batch_size", "steps",
              "checkpoints", "inits", "width", "depth", "sigma_w2", "sigma_b2", "keep_rate", "seed")


def _param_from_spec(name: str, spec: dict) -> Param:
    return Param(name, spec["type"], tuple(spec.get("allowed", ())), minimum=spec.get("min"),
                 exclusive_minimum=spec.get("min_exclusive"), maximum=spec.get("max"),
                 default=spec.get("default"), help=spec.get("help", ""))


_PARAMETERS: dict[str, tuple[Param, ...]] = {}


def parameters(kind: str) -> tuple[Param, ...]:
    """The cell parameters of a kind, in path order, from the cells' machine-readable lists
    (``mfpipe.cells.PARAMS``: the same specs the `train-cell` / `grad-cell` flags come from)."""
    if kind not in _PARAMETERS:
        from mfpipe import cells  # lazy: mfpipe.cells imports this module

        if kind not in cells.PARAMS:
            raise InputError("kind", kind, ", ".join(cells.PARAMS))
        specs = cells.PARAMS[kind]
        names = [n for n in PATH_ORDER if n in specs and n != "seed"]
        names += [n for n in specs if n not in names and n != "seed"]
        names += ["seed"] if "seed" in specs else []
        _PARAMETERS[kind] = tuple(_param_from_spec(n, specs[n]) for n in names)
    return _PARAMETERS[kind]


def parameter_index(kind: str) -> dict[str, Param]:
    return {p.name: p for p in parameters(kind)}


def engine_versions() -> dict[str, int]:
    """Engine version per kind (``mfpipe.cells.ENGINE_VERSIONS``, bumped there in the same commit
    as a change that alters that kind's results): part of every cell job's Snakemake params."""
    from mfpipe import cells

    return dict(cells.ENGINE_VERSIONS)


# ----------------------------------------------------------------------------- config errors

class ConfigError(InputError):
    """Every problem of a config at once; each names its field and the allowed values."""

    def __init__(self, problems: list[InputError]):
        self.problems = problems
        first = problems[0]
        self.field, self.value, self.allowed = first.field, first.value, first.allowed
        ValueError.__init__(self, "invalid config:\n" + "\n".join(f"  - {p}" for p in problems))


def schema_path() -> Path:
    """workflow/schemas/config.schema.yaml of this checkout (cwd first, then the source tree)."""
    candidates = [Path.cwd() / "workflow" / "schemas" / "config.schema.yaml",
                  Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError("workflow/schemas/config.schema.yaml not found (run from the mfpipe "
                            "checkout)")


def schema_problems(config: dict) -> list[InputError]:
    """JSON-schema errors of ``config`` (all of them), as InputErrors naming the field path."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(schema_path().read_text())
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for err in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join(str(p) for p in err.absolute_path) or "config"
        allowed = _schema_allowed(err)
        problems.append(InputError(where, err.instance if not isinstance(err.instance, dict)
                                   else "{…}", allowed))
    return problems


def _schema_allowed(err) -> str:
    schema = err.schema if isinstance(err.schema, dict) else {}
    if err.validator == "additionalProperties":
        names = sorted(schema.get("properties", {}))
        return (err.message + (f"; known fields: {', '.join(names)}" if names else ""))
    if err.validator == "required":
        return err.message
    if "description" in schema:
        return f"{schema['description']} ({err.message})"
    return err.message


# ----------------------------------------------------------------------------- cells

@dataclass
class Cell:
    """One grid point of one study: what to run and where its result goes."""

    study: str
    kind: str
    key: str  # path below results/cells/<study>/ without .parquet
    params: dict  # canonical parameters (plain types)
    seconds: float  # estimated run time on the configured device (without start-up)
    mem_mb: int

    @property
    def args(self) -> str:
        """The CLI flags of `mfpipe <kind command>`, canonical numbers (made when asked: a
        bundled cell's job needs only its bundle's shared flags and its path)."""
        return " ".join([_flag_text(p, self.params[p.name]) for p in parameters(self.kind)])

    @property
    def path(self) -> str:
        return f"results/cells/{self.study}/{self.key}.parquet"

    @property
    def log(self) -> str:
        return f"logs/cells/{self.study}/{self.key}.log"

    @property
    def id(self) -> str:
        from mfpipe.cells import cell_identity

        return cell_identity(self.kind, self.params)[1]


@dataclass
class Bundle:
    """Cells of one study trained together as one stacked ensemble by one job.

    The members share every parameter but the member axes (σ_w², σ_b², init, ρ, seed, …): their
    ``group`` is their path without those levels.  The flags ``args`` hold what they share, each
    member's path gives the rest.  The job's one output is its ``stamp`` (what it trained, what
    it kept); the members' files are written by the job, each complete or not at all.
    """

    study: str
    group: str  # the members' path without their member levels
    index: int  # the bundle's place among its group's chunks
    cells: list[Cell]
    args: str
    seconds: float  # estimated: the members' FLOPs plus ONE latency floor (shared launches)
    mem_mb: int

    @property
    def stamp(self) -> str:
        return f"results/bundles/{self.study}/{self.group}/bundle{self.index}.json"

    def after_job(self) -> tuple[list[Cell], list[Cell]]:
        """(vanished, rewritten) members since this bundle's job finished: see ``after_job``."""
        return after_job(self.stamp, {c.path: c for c in self.cells}, every=True)


def read_stamp(stamp) -> dict | None:
    """cell file -> cell_id of the cells a finished job recorded in its ``stamp`` (every
    ``mfpipe train-cell --stamp``: a bundle's, a search part's), or None when the stamp is
    absent, unreadable or written by another engine version (its job reruns).  A stamp from
    before stamps held identities lists paths only: their ids are None (taken as current)."""
    try:
        with open(stamp) as fh:
            record = json.load(fh)
        if record.get("engine_version") != engine_versions().get(record.get("kind", "train")):
            return None
        recorded = record.get("cells")
        if recorded is None:
            recorded = dict.fromkeys(record.get("trained", []) + record.get("kept", []))
        return dict(recorded)
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def after_job(stamp: str, cells: dict, every: bool = False,
              recorded: dict | None = None) -> tuple[list[Cell], list[Cell]]:
    """Of the cells a finished job recorded in its ``stamp`` (``read_stamp``; ``recorded``: that
    record when the caller has read it), those whose file has vanished since and those
    rewritten after it (retrained one job each) — when the stamp still describes them as they
    are now (each a cell of ``cells``, path -> Cell, with the recorded identity; ``every``: all
    of ``cells``), so that its job will not rerun.  ``([], [])`` when the stamp is absent,
    unreadable or stale: the job reruns and trains what lacks a current file."""
    try:
        stamp_mtime = os.stat(stamp).st_mtime
    except OSError:
        return [], []
    vanished, rewritten = [], []
    for path in cells:
        try:
            if os.stat(path).st_mtime > stamp_mtime:
                rewritten.append(path)
        except OSError:
            vanished.append(path)
    if not vanished and not rewritten:
        return [], []
    if recorded is None:
        recorded = read_stamp(stamp)
    if (recorded is None or (every and set(recorded) != set(cells))
            or any(p not in cells or i not in (None, cells[p].id) for p, i in recorded.items())):
        return [], []
    return ([cells[p] for p in vanished if p in recorded],
            [cells[p] for p in rewritten if p in recorded])


@dataclass
class Study:
    name: str
    kind: str
    axes: list[str]  # grid parameters, in path order
    cells: list[Cell] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    bundles: list[Bundle] = field(default_factory=list)
    n_grid_cells: int = 0  # the first cells are the grid's product, the rest extra cells
    search: dict | None = None  # boundary search options (mfpipe.search): cells by rounds

    @property
    def unbundled(self) -> list[Cell]:
        """Cells trained one per job (extra cells, bundles of one, a bundle size of 1); none
        in a searched study, whose rounds train the cells they pick (mfpipe.search)."""
        if self.search is not None:
            return []
        inside = {id(c) for b in self.bundles for c in b.cells}
        return [c for c in self.cells if id(c) not in inside]


DEFAULT_RESOURCES = {
    "gpus_per_cell": 1,
    "flops_per_second": 2.0e12,
    "seconds_per_layer_step": 1.0e-4,
    "startup_seconds": 30.0,
    "runtime_safety_factor": 2.0,
    "min_runtime_minutes": 5,
    "mem_mb_base": 4000,
    "bundle_size": 64,
    "bundle_mem_mb": 40000,
}


def value_text(value) -> str:
    """A parameter value as a cell path and flags spell it (canonical numbers, true/false)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return format_number(value)
    if isinstance(value, list):
        return ",".join(format_number(v) for v in value)
    return str(value)


def path_params(path: str | os.PathLike, names) -> dict[str, str]:
    """The ``name=value`` claims a cell path makes for the parameters in ``names`` (its folders
    and file stem; .parquet/.csv dropped): ``results/cells/s/depth=3/seed=0.parquet`` gives
    {depth: '3', seed: '0'} — the values as ``value_text`` spells them."""
    parts = list(Path(path).parts)
    if parts and parts[-1].endswith((".parquet", ".csv")):
        parts[-1] = parts[-1].rsplit(".", 1)[0]
    claims = {}
    for part in parts:
        name, sep, text = part.partition("=")
        if sep and name in names:
            claims[name] = text
    return claims


def _axis_values(param: Param, raw, where: str) -> list:
    """Values of one grid axis, checked, canonical, in the order given, duplicates removed."""
    if param.type in ("int", "float"):
        if isinstance(raw, bool) or isinstance(raw, dict):
            raise InputError(where, raw, "a number, a list, a comma list 1,1.5,2 or a range "
                                         "start:stop:count")
        values = parse_values(raw, where, integer=param.type == "int")
        values = [param.check(v, where) for v in values]
    elif param.type == "int_list":
        items = raw if isinstance(raw, list) and raw and isinstance(raw[0], list) else [raw]
        values = [param.check(v, where) for v in items]
    else:
        items = raw if isinstance(raw, list) else (
            [s.strip() for s in raw.split(",")] if isinstance(raw, str) else [raw])
        values = [param.check(v, where) for v in items]
    if not values:
        raise InputError(where, raw, f"at least one value: {param.describe()}")
    seen, out = set(), []
    for v in values:
        k = value_text(v)
        if k not in seen:
            seen.add(k)
            out.append(v)
    return out


def _lr_setting(raw, where: str):
    """A study's ``lr`` setting: a number or a depth rule ``LR0,D1:LR1,…`` (mfpipe.cells).
    Returns (text for the record, callable depth -> lr)."""
    from mfpipe import cells

    try:
        rule = cells.parse_lr_rule(raw)
    except InputError as err:
        raise InputError(where, raw, err.allowed) from None

    def resolve(depth: int) -> float:
        lr = rule[0][1]
        for threshold, value in rule:
            if depth >= threshold:
                lr = value
        return clean_float(lr)

    return raw, resolve


#: Parameters that do not change a cell's cost (estimates are memoised over the others).
_COST_FREE = frozenset({"seed", "sigma_w2", "sigma_b2", "keep_rate", "noise_var", "activation",
                        "init", "lr", "noise", "dropout_input", "preprocess", "loss"})


def estimate_cost(kind: str, params: dict, resources: dict) -> tuple[float, int]:
    """Estimated seconds (on the configured device, excluding start-up) and memory (MB) of a cell.

    FLOPs and peak memory come from the cell code's own model (``mfpipe.cells.estimated_cost``),
    the time from ``flops_per_second`` plus a latency floor of ``seconds_per_layer_step`` per
    layer and training step (small layers are launch-bound on a GPU: forward + backward +
    update ≈ 3 passes).
    """
    from mfpipe.cells import estimated_cost

    cost = estimated_cost(kind, params)
    passes = 3 * params.get("steps", 0) if kind == "train" else 3 * 2 * params.get("inits", 1)
    seconds = (cost["flops"] / float(resources["flops_per_second"])
               + passes * params["depth"] * float(resources["seconds_per_layer_step"]))
    return seconds, int(resources["mem_mb_base"]) + math.ceil(cost["peak_bytes"] / 2**20)


def runtime_minutes(seconds: float, resources: dict, attempt: int = 1) -> int:
    """SLURM runtime request (minutes) for a cell estimated at ``seconds``; doubles per retry."""
    total = (float(resources["startup_seconds"]) + seconds) * float(resources["runtime_safety_factor"])
    minutes = max(int(resources["min_runtime_minutes"]), math.ceil(total / 60.0))
    return minutes * (2 ** max(attempt - 1, 0))


def resources_of(config: dict) -> dict:
    return {**DEFAULT_RESOURCES, **(config.get("resources") or {})}


#: Cells one study may expand to (a workflow of 10^6 cells is already far beyond Snakemake's
#: comfort; a typo such as 1:4:100000 × 1:2:1000 would otherwise fill memory first).
MAX_STUDY_CELLS = 1_000_000


def build_study(name: str, spec: dict, resources: dict) -> tuple[Study, list[InputError]]:
    """Cells of one study; problems are collected (not raised) so all are reported at once."""
    problems: list[InputError] = []
    kind = spec.get("kind")
    if kind not in KIND_COMMANDS:
        return Study(name, str(kind), []), [InputError(f"studies.{name}.kind", kind,
                                                       ", ".join(KIND_COMMANDS))]
    params_of_kind = parameters(kind)
    index = parameter_index(kind)
    grid_spec = spec.get("grid") or {}
    settings_spec = spec.get("settings") or {}
    extra_spec = spec.get("extra_cells") or []
    search = None
    if spec.get("search") not in (None, False):
        from mfpipe.search import search_options

        try:
            search = search_options(spec.get("search"), f"studies.{name}.search")
            if kind != "train":
                raise InputError(f"studies.{name}.search", spec.get("search"),
                                 "a search only in a train study")
            if extra_spec:
                raise InputError(f"studies.{name}.search", spec.get("search"),
                                 "search or extra_cells, not both (a search trains grid cells)")
        except InputError as err:
            problems.append(err)
    allowed_names = ", ".join(index)

    axes_values: dict[str, list] = {}
    for pname, raw in grid_spec.items():
        where = f"studies.{name}.grid.{pname}"
        if pname not in index:
            problems.append(InputError(where, raw, f"a parameter of a {kind} study: {allowed_names}"))
            continue
        try:
            axes_values[pname] = _axis_values(index[pname], raw, where)
        except InputError as err:
            problems.append(err)

    settings: dict = {}
    lr_rule = None
    for pname, raw in settings_spec.items():
        where = f"studies.{name}.settings.{pname}"
        if pname not in index:
            problems.append(InputError(where, raw, f"a parameter of a {kind} study: {allowed_names}"))
            continue
        if pname in grid_spec:
            problems.append(InputError(where, raw, f"{pname} in grid or in settings, not both"))
            continue
        try:
            if pname == "lr" and kind == "train":
                settings[pname], lr_rule = _lr_setting(raw, where)
            else:
                settings[pname] = index[pname].check(raw, where)
        except InputError as err:
            problems.append(err)

    if not problems:
        # The dataset is always the first level of a cell's path (the rules take the data file
        # from it without a per-job function), and a path has at least two levels.
        if "dataset" not in axes_values:
            axes_values["dataset"] = [settings.pop("dataset", index["dataset"].default)]
        if len(axes_values) == 1:
            axes_values["seed"] = [settings.pop("seed", index["seed"].default)]
    axes = [p.name for p in params_of_kind if p.name in axes_values]
    study = Study(name, kind, axes, settings=settings, search=search)
    if search is not None and not problems and len(axes_values.get("depth", ())) < 2:
        problems.append(InputError(f"studies.{name}.grid.depth", grid_spec.get("depth"),
                                   "at least two depths to search over"))
    if problems:
        return study, problems

    fixed = {p.name: settings.get(p.name, p.default) for p in params_of_kind
             if p.name not in axes_values}
    if lr_rule is not None:
        fixed.pop("lr", None)
    n_cells = math.prod(len(axes_values[a]) for a in axes)
    if n_cells > MAX_STUDY_CELLS:
        sizes = " × ".join(f"{len(axes_values[a])} {a}" for a in axes if len(axes_values[a]) > 1)
        return study, [InputError(f"studies.{name}.grid", f"{n_cells:,} cells ({sizes})",
                                  f"at most {MAX_STUDY_CELLS:,} cells per study")]
    maker = _CellMaker(study, fixed, lr_rule, resources)
    # the Cartesian product, each axis value checked and formatted once
    texts = [[(v, value_text(v)) for v in axes_values[a]] for a in axes]
    try:
        for combo in itertools.product(*texts):
            key = "/".join([f"{a}={t}" for a, (_, t) in zip(axes, combo)])
            maker.add({a: v for a, (v, _) in zip(axes, combo)}, key)
    except InputError as err:
        return study, [err]
    study.n_grid_cells = len(study.cells)

    for i, extra in enumerate(extra_spec):
        where = f"studies.{name}.extra_cells[{i}]"
        cell_problems = []
        if not isinstance(extra, dict):
            problems.append(InputError(where, extra, "a mapping of parameter: value"))
            continue
        values = {}
        for pname, raw in extra.items():
            if pname not in index:
                cell_problems.append(InputError(f"{where}.{pname}", raw,
                                                f"a parameter of a {kind} study: {allowed_names}"))
                continue
            try:
                values[pname] = index[pname].check(raw, f"{where}.{pname}")
            except InputError as err:
                cell_problems.append(err)
        for a in axes:
            if a not in values:
                if len(axes_values[a]) == 1:
                    values[a] = axes_values[a][0]
                else:
                    several = ", ".join(value_text(v) for v in axes_values[a])
                    cell_problems.append(InputError(f"{where}.{a}", None,
                                                    f"one value (the grid has several: {several})"))
        if cell_problems:
            problems.extend(cell_problems)
            continue
        if axes:
            key = "/".join(f"{a}={value_text(values[a])}" for a in axes)
        else:  # a study of extra cells only: the path names what each cell sets
            key = "/".join(f"{p.name}={value_text(values[p.name])}" for p in params_of_kind
                           if p.name in values) or "default"
        try:
            maker.add({a: values[a] for a in axes}, key,
                      overrides={k: v for k, v in values.items() if k not in axes}, where=where)
        except InputError as err:
            problems.append(err)
    return study, problems


_FLAG_TEXTS: dict = {}  # (flag, value) -> flag text: each value is formatted once


def _flag_text(param: Param, value) -> str:
    key = (param.flag, tuple(value) if isinstance(value, list) else value)
    text = _FLAG_TEXTS.get(key)
    if text is None:
        if param.type == "bool":
            text = param.flag if value else "--no-" + param.flag[2:]
        else:
            text = f"{param.flag} {value_text(value)}"
        _FLAG_TEXTS[key] = text
    return text


class _CellMaker:
    """Builds the cells of one study cheaply: a grid cell's cost is looked up by the values of
    the study's axes that change it (the fixed parameters are the same for all)."""

    def __init__(self, study: Study, fixed: dict, lr_rule, resources: dict):
        self.study, self.fixed, self.lr_rule, self.resources = study, fixed, lr_rule, resources
        self.kind = study.kind
        self.keys: dict[str, int] = {}
        self.has_steps = self.kind == "train"
        self.steps_is_axis = "steps" in study.axes
        self.checked_sizes: set = set()
        self.cost_axes = [a for a in study.axes if a not in _COST_FREE]
        self.costs: dict = {}

    def add(self, axis_values: dict, key: str, overrides: dict | None = None, where: str = ""):
        params = dict(self.fixed)
        params.update(axis_values)
        if overrides:
            params.update(overrides)
        if self.has_steps:
            if "lr" not in params:
                params["lr"] = self.lr_rule(params["depth"])
            steps = params["steps"]
            checkpoints = params.get("checkpoints") or []
            beyond = [c for c in checkpoints if c > steps]
            if beyond and not self.steps_is_axis:
                raise InputError(f"studies.{self.study.name}.checkpoints", beyond,
                                 f"steps between 0 and steps={steps}")
            # a grid over steps shares one list: each cell records the checkpoints it reaches
            params["checkpoints"] = sorted({c for c in checkpoints if c <= steps} | {steps})
            sizes = (params["dataset"], params["batch_size"], params["eval_size"])
            if sizes not in self.checked_sizes:
                from mfpipe.cells import check_split_sizes  # lazy: mfpipe.cells imports this module

                try:
                    check_split_sizes(*sizes)
                except InputError as err:
                    raise InputError(f"studies.{self.study.name}.{err.field}", err.value,
                                     err.allowed) from None
                self.checked_sizes.add(sizes)
        if key in self.keys:
            old = self.study.cells[self.keys[key]]
            if old.params == params:
                return  # an extra cell that repeats a grid cell
            diff = sorted(k for k in params if old.params.get(k) != params[k])
            raise InputError(where or f"studies.{self.study.name}", key,
                             f"a cell with its own path; it differs from the cell at that path "
                             f"only in {', '.join(diff)}, which are not grid parameters of this "
                             f"study (list them under grid, or use a separate study)")
        if overrides:
            seconds, mem_mb = estimate_cost(self.kind, params, self.resources)
        else:
            cost_key = tuple([tuple(v) if isinstance(v, list) else v
                              for v in (axis_values[a] for a in self.cost_axes)])
            cost = self.costs.get(cost_key)
            if cost is None:
                cost = self.costs[cost_key] = estimate_cost(self.kind, params, self.resources)
            seconds, mem_mb = cost
        self.keys[key] = len(self.study.cells)
        self.study.cells.append(Cell(self.study.name, self.kind, key, params, seconds, mem_mb))


def form_bundles(study: Study, resources: dict) -> None:
    """Group a training study's grid cells into bundles (``Study.bundles``).

    The cells that share every parameter but the study's member axes (its grid axes in
    ``mfpipe.cells.MEMBER_PARAMS``: they need not be the last ones) form a group; every group is
    cut into balanced chunks of at most ``resources.bundle_size`` cells whose summed memory
    estimate stays within ``resources.bundle_mem_mb`` (so shallow groups bundle more cells than
    deep ones).  Extra cells, a study without member axes and a bundle size of 1 leave cells to
    one job each (``Study.unbundled``).
    """
    from mfpipe.cells import MEMBER_PARAMS  # lazy: mfpipe.cells imports this module

    study.bundles = []
    cap = int(resources["bundle_size"])
    member_axes = [a for a in study.axes if a in MEMBER_PARAMS]
    if study.kind != "train" or study.search is not None or cap < 2 or not member_axes:
        return
    groups: dict[str, list[Cell]] = {}
    shared_levels = [i for i, a in enumerate(study.axes) if a not in member_axes]
    for cell in study.cells[:study.n_grid_cells]:  # a grid cell's key: one level per axis
        levels = cell.key.split("/")
        groups.setdefault("/".join([levels[i] for i in shared_levels]), []).append(cell)
    latency = float(resources["seconds_per_layer_step"])
    base_mb = int(resources["mem_mb_base"])
    index = parameter_index(study.kind)
    member_flags = {index[a].flag for a in member_axes}
    for group, members in groups.items():
        if len(members) < 2:
            continue
        shared = " ".join(f for f in _split_flags(members[0].args) if f.split(" ")[0]
                          not in member_flags and f.split(" ")[0].replace("--no-", "--", 1)
                          not in member_flags)
        member_mb = max(c.mem_mb - base_mb for c in members) or 1
        size = max(1, min(cap, (int(resources["bundle_mem_mb"]) - base_mb) // member_mb))
        shared_floor = 3 * members[0].params["steps"] * members[0].params["depth"] * latency
        chunks = [chunk for chunk in balanced_chunks(members, size) if len(chunk) > 1]
        for i, chunk in enumerate(chunks):  # a chunk of one is a cell job
            study.bundles.append(Bundle(
                study.name, group, i, chunk, shared,
                seconds=sum(c.seconds for c in chunk) - (len(chunk) - 1) * shared_floor,
                mem_mb=base_mb + sum(c.mem_mb - base_mb for c in chunk)))


def key_without(key: str, names) -> str:
    """A cell key (``name=value`` levels joined by /) without the levels of ``names``."""
    return "/".join(p for p in key.split("/") if p.split("=", 1)[0] not in names)


def balanced_chunks(items: list, size: int) -> list[list]:
    """``items`` cut into the fewest consecutive chunks of at most ``size``, their lengths
    within 1 of each other (10 by 4: 3, 4, 3)."""
    n_chunks = math.ceil(len(items) / size)
    bounds = [round(i * len(items) / n_chunks) for i in range(n_chunks + 1)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:])]


def _split_flags(args: str) -> list[str]:
    """'--a 1 --b --c 2' -> ['--a 1', '--b', '--c 2'] (flag values never start with --)."""
    out: list[str] = []
    for token in args.split(" "):
        if token.startswith("--") and not token[2:3].isdigit():
            out.append(token)
        else:
            out[-1] += " " + token
    return out


def load_config(path: str | os.PathLike) -> dict:
    import yaml

    try:
        with open(path) as fh:
            config = yaml.safe_load(fh)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise InputError("config", str(path), "an existing YAML file") from None
    except PermissionError:
        raise InputError("config", str(path), "a YAML file this user may read") from None
    except UnicodeDecodeError as err:
        raise InputError("config", f"{path} (not UTF-8 text: {err.reason})", "a YAML file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"{path}, line {mark.line + 1} column {mark.column + 1}" if mark else str(path)
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise InputError("config", f"{where}: {problem}", "valid YAML") from None
    if not isinstance(config, dict):
        raise InputError("config", str(path), "a YAML mapping with a `studies` section")
    return config


def merge_configs(*configs: dict) -> dict:
    """Later configs override earlier ones (nested mappings merged, like Snakemake's)."""
    out: dict = {}
    for config in configs:
        for key, value in (config or {}).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge_configs(out[key], value)
            else:
                out[key] = value
    return out


def build_studies(config: dict, *, check_schema: bool = True) -> dict[str, Study]:
    """All studies of a config, or ConfigError listing every problem (schema and semantics)."""
    problems = schema_problems(config) if check_schema else []
    studies: dict[str, Study] = {}
    if not problems:
        resources = resources_of(config)
        for name, spec in (config.get("studies") or {}).items():
            study, study_problems = build_study(name, spec or {}, resources)
            problems.extend(study_problems)
            studies[name] = study
            if not study_problems:
                form_bundles(study, resources)
            if not study_problems and not study.cells:
                problems.append(InputError(f"studies.{name}", "no cells",
                                           "a grid or extra_cells with at least one cell"))
    if problems:
        raise ConfigError(problems)
    return studies


# ----------------------------------------------------------------------------- `mfpipe cells`

def add_arguments(parser) -> None:
    parser.add_argument("--configfile", action="append", default=None, metavar="YAML",
                        help="config file(s), later ones override (default: config/config.yaml)")
    parser.add_argument("--config-json", default=None, metavar="JSON",
                        help="the config as a JSON string (used by the workflow)")
    parser.add_argument("--study", default=None, help="only this study")
    parser.add_argument("--format", choices=("paths", "csv", "json"), default="paths",
                        help="paths (one per line), csv (one row per cell with its parameters) "
                             "or json lines")
    parser.add_argument("-o", "--output", default=None, help="write here (atomically) instead of stdout")


def config_from_args(args) -> dict:
    if getattr(args, "config_json", None):
        try:
            return json.loads(args.config_json)
        except json.JSONDecodeError as err:
            raise InputError("--config-json", args.config_json[:60], f"valid JSON ({err})") from None
    files = args.configfile or ["config/config.yaml"]
    return merge_configs(*(load_config(f) for f in files))


def run(args) -> int:
    import sys

    config = config_from_args(args)
    studies = build_studies(config)
    if args.study is not None and args.study not in studies:
        raise InputError("--study", args.study, ", ".join(studies))
    chosen = [studies[args.study]] if args.study else list(studies.values())
    lines = []
    if args.format == "paths":
        lines = [c.path for s in chosen for c in s.cells]
    elif args.format == "json":
        lines = [json.dumps({"study": c.study, "kind": c.kind, "path": c.path, "cell_id": c.id,
                             **c.params}) for s in chosen for c in s.cells]
    else:
        import csv
        import io

        names = ["study", "kind", "path", "cell_id"]
        for s in chosen:
            for p in parameters(s.kind):
                if p.name not in names:
                    names.append(p.name)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for s in chosen:
            for c in s.cells:
                writer.writerow({"study": c.study, "kind": c.kind, "path": c.path,
                                 "cell_id": c.id, **{k: value_text(v) for k, v in c.params.items()}})
        lines = buf.getvalue().rstrip("\n").split("\n")
    text = "\n".join(lines) + "\n"
    if args.output:
        from mfpipe.store import atomic_path

        with atomic_path(args.output) as tmp:
            tmp.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


# ----------------------------------------------------------------------------- JSON schema

_NUMBER_TEXT = r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?"
_LR_RULE_TEXT = rf"^\s*{_NUMBER_TEXT}(\s*,\s*\d+\s*:\s*{_NUMBER_TEXT})*\s*$"
_AXIS_TEXT = rf"^\s*{_NUMBER_TEXT}(\s*:\s*{_NUMBER_TEXT}\s*:\s*\d+)?(\s*,\s*{_NUMBER_TEXT}(\s*:\s*{_NUMBER_TEXT}\s*:\s*\d+)?)*\s*$"


def _param_schema(p: Param, *, axis: bool) -> dict:
    """Schema of one parameter as a grid axis (several values) or a single value."""
    if p.type == "str":
        one = {"type": "string", "enum": list(p.allowed)}
        desc = f"one of {', '.join(p.allowed)}"
    elif p.type == "bool":
        one, desc = {"type": "boolean"}, "true or false"
    elif p.type == "int_list":
        one = {"type": "array", "items": {"type": "integer", "minimum": p.minimum or 0}}
        desc = f"a list of integers ≥ {format_number(p.minimum or 0)}"
        if axis:
            return {"description": desc + ", or a list of such lists",
                    "anyOf": [one, {"type": "array", "items": one, "minItems": 1}]}
        return {"description": desc, **one}
    else:
        one = {"type": "integer" if p.type == "int" else "number"}
        for key in ("minimum", "exclusive_minimum", "maximum"):
            value = getattr(p, key)
            if value is not None:
                one["exclusiveMinimum" if key == "exclusive_minimum" else key] = value
        desc = p.describe()
    if not axis:
        return {"description": desc, **one}
    if p.type in ("int", "float"):
        text = {"type": "string", "pattern": _AXIS_TEXT}
        return {"description": f"{desc}; a list, a comma list '1,1.5,2' or a range "
                               f"'start:stop:count'",
                "anyOf": [one, text, {"type": "array", "minItems": 1,
                                      "items": {"anyOf": [one, text]}}]}
    return {"description": f"{desc}, or a list of them",
            "anyOf": [one, {"type": "array", "items": one, "minItems": 1}]}


THEORY_MAP_DEFAULT = {"activation": "tanh", "sigma_w2": "0.5:4.5:81", "sigma_b2": "0:0.3:31",
                      "keep_rate": [1, 0.99, 0.98, 0.94]}
THEORY_ITERATES_DEFAULT = {"activation": "tanh", "sigma_w2": [1.0, 1.5, 1.76, 2.5, 4.0],
                           "sigma_b2": 0.05, "keep_rate": 1, "depth": 60}


def _theory_grid_schema(description: str, default: dict, depth: bool = False) -> dict:
    axis = {"anyOf": [{"type": "number"}, {"type": "string", "pattern": _AXIS_TEXT},
                      {"type": "array", "minItems": 1,
                       "items": {"anyOf": [{"type": "number"},
                                           {"type": "string", "pattern": _AXIS_TEXT}]}}],
            "description": "a number, a list, a comma list or a range start:stop:count"}
    props = {"enabled": {"type": "boolean", "default": True},
             "activation": {"type": "string", "enum": ["tanh", "relu", "erf", "linear",
                                                       "hard_tanh"]},
             "sigma_w2": axis, "sigma_b2": axis, "keep_rate": axis}
    if depth:
        props["depth"] = {"type": "integer", "minimum": 1}
    return {"type": "object", "additionalProperties": False, "description": description,
            "default": dict(default), "properties": props}


def theory_grid_args(spec: dict | None, default: dict, depth: bool = False) -> str:
    """`mfpipe theory` / `mfpipe iterates` flags for a theory section of the config."""
    spec = {**default, **(spec or {})}
    parts = [f"--activation {spec['activation']}"]
    for name in ("sigma_w2", "sigma_b2", "keep_rate"):
        values = parse_values(spec[name], f"theory.{name}")
        parts.append(f"--{name.replace('_', '-')} {','.join(format_number(v) for v in values)}")
    if depth:
        parts.append(f"--depth {int(spec['depth'])}")
    return " ".join(parts)


#: `mfpipe fit` / `mfpipe figures` flags set from the config's fit / figures sections.
FIT_FLAGS = {"bootstrap": "--bootstrap", "threshold": "--threshold", "accuracy": "--accuracy",
             "step": "--step", "boundary": "--boundary", "forms": "--forms", "seed": "--seed"}
FIGURE_FLAGS = {"forms": "--forms", "reference": "--reference"}

#: The figures and the tables each is drawn from, as ``mfpipe figures`` flags: the first it
#: needs ("a|b": either), the others it draws on when given.  ``mfpipe.figures`` renders and
#: checks by it; the workflow wires its tables to it (``drawable_figures``).
FIGURE_TABLES = {"phase_diagram": ("theory",), "iterates": ("iterates",), "dropout_depth": ("theory",),
                 "gradient_norms": ("gradients", "theory"), "trainability": ("fit",),
                 "universality": ("gradients|huang_gradients",), "fit_summary": ("fit",)}


def drawable_figures(files: dict[str, dict]) -> dict[str, dict[str, str]]:
    """figure -> {flag: file} of the figures a workflow draws, from ``files``: per figure, the
    file it has for each flag (None or False: none).  A figure is drawn when a flag it needs
    has a file; it is given the files it has of the flags it reads."""
    out = {}
    for name, (needed, *optional) in FIGURE_TABLES.items():
        have = {flag: path for flag, path in files.get(name, {}).items()
                if path and flag in (*needed.split("|"), *optional)}
        if any(flag in have for flag in needed.split("|")):
            out[name] = have
    return out


def section_flags(config: dict, section: str, flags: dict[str, str]) -> str:
    """The flags of one config section as shell text, every value quoted (the schema already
    restricts what the values may be; quoting keeps a value one argument whatever it holds)."""
    values = config.get(section) or {}
    return " ".join(f"{flag} {shlex.quote(str(values[key]))}" for key, flag in flags.items()
                    if key in values)


def _comma_list_pattern(one: str) -> str:
    """A schema pattern for a comma list of items that each match ``one``."""
    return rf"^\s*({one})(\s*,\s*({one}))*\s*$"


def config_schema() -> dict:
    """The JSON schema of a workflow config (workflow/schemas/config.schema.yaml is this,
    written out by ``python -m mfpipe.grid --write-schema``; a test keeps them equal)."""
    from mfpipe.fit import FORM_ALIASES, FORMS, REFERENCE_RULE
    from mfpipe.search import SEARCH_DEFAULTS

    forms_pattern = _comma_list_pattern("|".join(
        re.escape(name) for name in sorted(list(FORMS) + list(FORM_ALIASES), key=len, reverse=True)))
    form_names = ", ".join(list(FORMS) + list(FORM_ALIASES))
    defs: dict = {}
    kind_names = list(KIND_COMMANDS)
    for kind in kind_names:
        params = parameters(kind)
        grid_props = {p.name: _param_schema(p, axis=True) for p in params}
        settings_props = {p.name: _param_schema(p, axis=False) for p in params}
        if kind == "train":
            settings_props["lr"] = {
                "description": "a number > 0, or a depth rule 'LR0,D1:LR1,…' (LR0 for depth < D1, "
                               "LR1 from D1 on, …; e.g. '1e-3,200:1e-4')",
                "anyOf": [settings_props["lr"], {"type": "string", "pattern": _LR_RULE_TEXT}]}
        defs[f"{kind}_study"] = {
            "type": "object", "additionalProperties": False, "required": ["kind"],
            "properties": {
                "kind": {"const": kind},
                "description": {"type": "string"},
                "grid": {"type": "object", "additionalProperties": False,
                         "description": "Cartesian product over these parameters",
                         "properties": grid_props},
                "settings": {"type": "object", "additionalProperties": False,
                             "description": "single values shared by every cell of the study",
                             "properties": settings_props},
                "extra_cells": {"type": "array", "description": "explicit extra cells",
                                "items": {"type": "object", "additionalProperties": False,
                                          "properties": {p.name: _param_schema(p, axis=False)
                                                         for p in params}}},
            },
        }
        if kind == "train":
            defs[f"{kind}_study"]["properties"]["search"] = {
                "description": "train only the cells that bracket each column's largest "
                               "trainable depth (mfpipe.search): true, or n0 (first guess "
                               "n0·ξ_c) and max_rounds",
                "anyOf": [{"type": "boolean"}, {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "n0": {"type": "number", "exclusiveMinimum": 0,
                               "default": SEARCH_DEFAULTS["n0"]},
                        "max_rounds": {"type": "integer", "minimum": 1,
                                       "default": SEARCH_DEFAULTS["max_rounds"]}}}]}
    resource_props = {
        "gpus_per_cell": {"type": "integer", "minimum": 0, "description": "GPUs per cell job"},
        "flops_per_second": {"type": "number", "exclusiveMinimum": 0,
                             "description": "effective FLOP/s of one cell on the target device"},
        "seconds_per_layer_step": {"type": "number", "minimum": 0,
                                   "description": "latency floor per layer and step (kernel "
                                                  "launches)"},
        "startup_seconds": {"type": "number", "minimum": 0,
                            "description": "process start, imports and data loading per cell"},
        "runtime_safety_factor": {"type": "number", "minimum": 1},
        "min_runtime_minutes": {"type": "integer", "minimum": 1},
        "mem_mb_base": {"type": "integer", "minimum": 100},
        "bundle_size": {"type": "integer", "minimum": 1,
                        "description": "most training cells one job trains as one stacked "
                                       "ensemble (1: one job per cell)"},
        "bundle_mem_mb": {"type": "integer", "minimum": 100,
                          "description": "memory one bundle may plan on its device (MB): "
                                         "deep/wide cells make smaller bundles"},
    }
    for key, value in DEFAULT_RESOURCES.items():
        resource_props[key]["default"] = value
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "mfpipe workflow config",
        "description": "Generated from mfpipe.grid.config_schema(); edit that, then run "
                       "`python -m mfpipe.grid --write-schema`.",
        "type": "object",
        "additionalProperties": False,
        "required": ["studies"],
        "properties": {
            "description": {"type": "string"},
            "data_dir": {"type": "string", "default": "data",
                         "description": "dataset directory (cached arrays under mfpipe-cache/)"},
            "device": {"type": "string", "enum": ["auto", "cpu", "cuda"], "default": "auto",
                       "description": "device of cell jobs: auto, cpu or cuda"},
            "theory": {
                "type": "object", "additionalProperties": False, "default": {},
                "description": "theory tables: the grid's points, a dense map, iterates",
                "properties": {
                    "enabled": {"type": "boolean", "default": True,
                                "description": "theory table of the grid's points"},
                    "map": _theory_grid_schema(
                        "dense table over (σ_w², σ_b², ρ) for the phase diagram and ξ_c(σ_w², ρ)",
                        THEORY_MAP_DEFAULT),
                    "iterates": _theory_grid_schema(
                        "q^l, c^l iterates with fitted depth scales (figure iterates)",
                        THEORY_ITERATES_DEFAULT, depth=True),
                }},
            "aggregate": {"type": "boolean", "default": True,
                          "description": "merge cells into results/<kind>.parquet"},
            "fit": {"type": "object", "additionalProperties": False, "default": {},
                    "description": "options of `mfpipe fit` on results/training.parquet",
                    "properties": {
                        "enabled": {"type": "boolean", "default": True},
                        "bootstrap": {"type": "integer", "minimum": 0,
                                      "description": "bootstrap replicates"},
                        "threshold": {"type": "string",
                                      "pattern": r"^(between|relative|absolute):[0-9.]+$",
                                      "description": "between:F, relative:F or absolute:A"},
                        "accuracy": {"type": "string",
                                     "enum": ["train_accuracy", "batch_accuracy", "test_accuracy"]},
                        "step": {"anyOf": [{"type": "integer", "minimum": 0},
                                           {"type": "string",
                                            "pattern": r"^(all|last|\d+(\s*,\s*\d+)*)$"}],
                                 "description": "all, last or a comma list of steps"},
                        "boundary": {"type": "string", "enum": ["midpoint", "largest"]},
                        "forms": {"type": "string", "pattern": forms_pattern,
                                  "description": f"comma list of fit forms: {form_names}"},
                        "seed": {"type": "integer", "minimum": 0}}},
            "figures": {"type": "object", "additionalProperties": False, "default": {},
                        "description": "options of `mfpipe figures`",
                        "properties": {
                            "enabled": {"type": "boolean", "default": True},
                            "forms": {"type": "string", "pattern": forms_pattern,
                                      "description": f"fitted forms overlaid, comma list: "
                                                     f"{form_names}"},
                            "reference": {"type": "string",
                                          "pattern": _comma_list_pattern(REFERENCE_RULE),
                                          "description": "published rules drawn dotted, e.g. "
                                                         "'6*xi_c' or '12*xi_1,6*xi_c'"}}},
            "resources": {"type": "object", "additionalProperties": False, "default": {},
                          "properties": resource_props},
            "studies": {
                "type": "object", "minProperties": 1,
                "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
                "description": "studies by name (lower-case letters, digits, _)",
                "additionalProperties": {
                    "type": "object", "required": ["kind"],
                    "properties": {"kind": {"enum": kind_names,
                                            "description": f"one of {', '.join(kind_names)}"}},
                    "allOf": [{"if": {"properties": {"kind": {"const": k}}, "required": ["kind"]},
                               "then": {"$ref": f"#/$defs/{k}_study"}} for k in kind_names],
                },
            },
        },
        "$defs": defs,
    }


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write-schema"]:
        import yaml

        target = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("# Generated by `python -m mfpipe.grid --write-schema` from "
                          "mfpipe.grid.config_schema(): edit that.\n"
                          + yaml.safe_dump(config_schema(), sort_keys=False, allow_unicode=True,
                                           width=100))
        print(target)
    else:
        print("usage: python -m mfpipe.grid --write-schema", file=sys.stderr)
        raise SystemExit(2)
