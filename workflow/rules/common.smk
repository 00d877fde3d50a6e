# Config → cells (mfpipe.grid), lookups the rules use, and the targets.
#
# Staleness (Snakemake's default rerun triggers: mtime, params, input, code, software-env):
# * A cell's output path names its grid parameters
#   (results/cells/<study>/dataset=mnist5k/…/depth=16/…/seed=0.parquet, canonical numbers).
#   A new grid value or seed adds paths: only those cells run.  Removing a value leaves the old
#   files alone (they are no longer aggregated: `mfpipe aggregate` reads the study's cell list).
# * A cell's params are ONE string of `mfpipe` flags holding every parameter (defaults included,
#   settings such as steps / lr / batch_size, canonical numbers) and the kind's engine version.
#   A changed study setting changes the string of every cell of that study, and only those
#   cells rerun (params trigger); a bumped engine version (mfpipe.cells.ENGINE_VERSIONS, read
#   through mfpipe.grid.engine_versions) reruns every cell of that kind.
# * Rules are `shell:` rules: the code trigger compares the command template only, so editing
#   mfpipe's Python code (plotting, fitting, …) never reruns a cell.  Keep the templates stable.
# * Params are plain str/int (numpy scalars would be silently left out of change detection).

import json
import os
import shlex
import shutil
import sys
from importlib.util import find_spec

from snakemake.exceptions import WorkflowError

from mfpipe.errors import InputError
from mfpipe.values import format_number
from mfpipe.grid import (FIGURE_FLAGS, FIT_FLAGS, KIND_COMMANDS, KIND_DATASETS,
                         THEORY_ITERATES_DEFAULT, THEORY_MAP_DEFAULT, build_studies,
                         drawable_figures, engine_versions, resources_of, runtime_minutes,
                         section_flags, theory_grid_args)

try:
    STUDIES = build_studies(config)
except InputError as _err:
    raise WorkflowError(str(_err)) from None

# The mfpipe executable of this Python (the venv's, also when it is not on PATH).
MFPIPE = shutil.which("mfpipe", path=os.path.dirname(sys.executable)) or "mfpipe"
RESOURCES = resources_of(config)
ENGINE = engine_versions()
DATA_DIR = str(config.get("data_dir", "data"))
DEVICE = str(config.get("device", "auto"))


def _data_cache(dataset):
    from mfpipe.data import cache_path

    return str(cache_path(dataset, DATA_DIR))


# Per-cell lookups, keyed "<study>/<cell path>": computed once, O(1) per job.
CELL_ARGS = {}
CELL_MEM_MB = {}
CELL_SECONDS = {}
CELL_PATHS = {kind: [] for kind in KIND_COMMANDS}
STUDY_NAMES = {kind: [] for kind in KIND_COMMANDS}
# Bundles (mfpipe.grid.form_bundles): one job trains the cells of one bundle as one stacked
# ensemble.  One rule serves them all; its output is the bundle's small stamp file
# (results/bundles/<study>/<group>/bundle<i>.json, rewritten by every run; the aggregate depends
# on it), and the job writes its members' cell files, keeping (--skip-existing) those whose
# stored identity already matches.
BUNDLES = {}  # (study, group, index) -> Bundle
BUNDLE_STAMPS = {kind: [] for kind in KIND_COMMANDS}
# Cells a finished job (a bundle, a search round's part) wrote and that have vanished since:
# asked for by name and retrained one job each by train_cell (Snakemake reruns a job only for
# outputs it declares).  They stay inputs of the aggregate once retrained (their file is newer
# than the job's stamp), so that its input list does not change back (mfpipe.grid.after_job).
VANISHED = {}  # study -> cell paths to retrain alone
RETRAINED = {}  # study -> cell paths retrained alone since their job: vanished + rewritten
SEARCHED = {name: s for name, s in STUDIES.items() if s.search}


def _cell_lookups(study, cells):
    for cell in cells:
        key = f"{study.name}/{cell.key}"
        CELL_ARGS[key] = cell.args
        CELL_MEM_MB[key] = cell.mem_mb
        CELL_SECONDS[key] = cell.seconds


def _after_jobs(study):
    """(vanished, rewritten) cells of the study's finished jobs (``grid.after_job``): its
    bundles', or its search parts' (``search.after_rounds``)."""
    if study.search:
        from mfpipe.search import after_rounds  # lazy: pandas, for searched studies only

        return after_rounds(study)
    found = [b.after_job() for b in study.bundles]
    return [c for v, _ in found for c in v], [c for _, r in found for c in r]


for _study in STUDIES.values():
    STUDY_NAMES[_study.kind].append(_study.name)
    CELL_PATHS[_study.kind] += [_cell.path for _cell in _study.cells]
    for _bundle in _study.bundles:
        BUNDLES[(_study.name, _bundle.group, _bundle.index)] = _bundle
        BUNDLE_STAMPS[_study.kind].append(_bundle.stamp)
    # a searched study's rounds train the cells they pick (search.smk)
    _cell_lookups(_study, _study.cells if _study.search else _study.unbundled)
    _vanished, _rewritten = _after_jobs(_study)
    if not _study.search:
        _cell_lookups(_study, _vanished + _rewritten)
    VANISHED[_study.name] = [_cell.path for _cell in _vanished]
    RETRAINED[_study.name] = [_cell.path for _cell in _vanished + _rewritten]


def cell_list_of(study):
    """The cell list the aggregate reads: the grid's, or what a search has trained."""
    return f"results/search/{study}/cells.txt" if study in SEARCHED else f"results/cells/{study}.cells.txt"


def bundle_of(wildcards):
    return BUNDLES[(wildcards.study, wildcards.group, int(wildcards.index))]


def bundle_data(wildcards):
    return DATA_FILE.format(dataset=bundle_of(wildcards).cells[0].params["dataset"])


def bundle_args(wildcards):
    """The members' shared flags and their cell files (each member's path gives the rest)."""
    bundle = bundle_of(wildcards)
    return f"{bundle.args} --outputs " + " ".join(shlex.quote(c.path) for c in bundle.cells)


def bundle_cells_to_train(wildcards):
    """For `snakemake -n`: how many members the job will really train (no file, or a file
    whose stored identity is not this cell's) of how many."""
    from mfpipe.cells import stored_identity_matches

    members = bundle_of(wildcards).cells
    todo = sum(not stored_identity_matches(c.kind, c.params, c.path) for c in members)
    return f"{todo}/{len(members)}"


def bundle_priority(wildcards):
    return 1.0 + round(float(bundle_of(wildcards).seconds), 3)

# Tight wildcard constraints keep the DAG cheap (no rule tries to match what it cannot make).
CELL_RE = r"[a-z][a-z0-9_]*=[^/]+(?:/[a-z][a-z0-9_]*=[^/]+)*"


def _alternatives(names):
    return "|".join(names) if names else "(?!x)x"  # matches nothing


# Cell paths are results/cells/<study>/dataset=<name>/<rest>: the rules' wildcards are
# study, dataset and cell (the rest); the data file comes from the dataset wildcard.
def cell_key(wildcards):
    return f"{wildcards.study}/dataset={wildcards.dataset}/{wildcards.cell}"


def cell_args(wildcards):
    return CELL_ARGS[cell_key(wildcards)]


def cell_mem_mb(wildcards, attempt):
    return CELL_MEM_MB[cell_key(wildcards)]


def cell_runtime(wildcards, attempt):
    """Minutes: (start-up + estimate from depth × width × steps) × safety, doubled per retry."""
    return runtime_minutes(CELL_SECONDS[cell_key(wildcards)], RESOURCES, attempt)


# Job order (Snakemake priorities; the greedy scheduler runs the highest ready job first):
# 1. preparing a dataset, which every cell of it waits for;
# 2. work that waits for no training cell: first the light commands (theory tables, cell lists:
#    no torch, no matplotlib), which run in their client while the warm pool server of the
#    other jobs is still starting (`mfpipe pool`); then gradient cells, their aggregate and the
#    figures of theory and gradients.  Done early, this leaves only training's own short chain
#    (aggregate → fit → figures) after the last cell;
# 3. training cells, longest first (by their estimated seconds), so the last cells to run are
#    the short ones and no core (or GPU) idles long at the end waiting for a straggler.
PREPARE_DATA_PRIORITY = 10**9
LIGHT_PRIORITY = 2 * 10**8
EARLY_PRIORITY = 10**8


def cell_priority(wildcards):
    return 1.0 + round(float(CELL_SECONDS[cell_key(wildcards)]), 3)


def grad_cell_priority(wildcards):
    return EARLY_PRIORITY + cell_priority(wildcards)


def start_pool_server():
    """On a local run, start the warm worker server of the jobs' `mfpipe` (`mfpipe pool`) while
    Snakemake prepares the first jobs, so that torch and matplotlib are imported meanwhile.  On
    a cluster run the few jobs on the submit host (theory, aggregate, fit, figures) run in their
    own processes instead (MFPIPE_POOL=0, unless set): no ~700 MB server on a login node."""
    if not workflow.local_exec:
        os.environ.setdefault("MFPIPE_POOL", "0")
        return
    try:
        shell("{MFPIPE} pool --start")
    except Exception as err:  # the first job starts one, or runs without
        print(f"mfpipe: the warm worker server did not start early: {err}", file=sys.stderr)


# What a cluster scheduler needs per cell (the SLURM profile reads these; locally only cores
# limit the jobs): memory and runtime estimated from depth × width × steps, the runtime
# doubling with each retry, and the GPUs of `resources.gpus_per_cell`.
CELL_RESOURCES = {"mem_mb": cell_mem_mb, "runtime": cell_runtime,
                  "gpu": RESOURCES["gpus_per_cell"]}
DATA_FILE = _data_cache("{dataset}")
_DATASETS = {c.params["dataset"] for s in STUDIES.values() for c in s.cells}
DATASET_RE = "|".join(sorted(_DATASETS - {"gaussian"})) or "(?!x)x"
GRAD_DATASET_RE = "|".join(sorted(_DATASETS)) or "(?!x)x"


def grad_cell_data(wildcards):
    return [] if wildcards.dataset == "gaussian" else [DATA_FILE.format(dataset=wildcards.dataset)]


# Snakemake asks for the parameters of every per-job function several times per job
# (inspect.signature, ~40 µs): of the rules' functions and of its own resource evaluators, ~9
# times per cell, which made the dry-run of a 100k-cell grid 1.6× that of a trivial one-rule
# workflow.  A function's parameters never change: remember them (keyed by the function, and for
# a bound method by its function).  Without these Snakemake internals nothing changes but speed.
def _remember_function_params():
    import snakemake.common as smk_common

    inspect_params = getattr(smk_common, "get_function_params", None)
    if inspect_params is None or getattr(inspect_params, "_mfpipe_cached", False):
        return
    known = {}

    def get_function_params(func):
        key = (getattr(func, "__func__", func), hasattr(func, "__func__"))
        try:
            return known[key]
        except KeyError:
            params = known[key] = inspect_params(func)
            return params
        except TypeError:  # unhashable callable
            return inspect_params(func)

    get_function_params._mfpipe_cached = True
    for name in ("snakemake.common", "snakemake.rules", "snakemake.jobs"):
        user = sys.modules.get(name)
        if getattr(user, "get_function_params", None) is inspect_params:
            user.get_function_params = get_function_params


_remember_function_params()


def study_config_json(wildcards):
    """The one study's spec (what its cell list depends on) as JSON for `mfpipe cells`."""
    return json.dumps({"studies": {wildcards.study: config["studies"][wildcards.study]}},
                      sort_keys=True, separators=(",", ":"))


def stage_available(module):
    """Stages whose code has not landed yet are left out of the targets."""
    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def theory_api_available():
    try:
        import mfpipe.theory as theory
    except ImportError:
        return False
    return hasattr(theory, "depth_scales")


HAS_THEORY = bool(config.get("theory", {}).get("enabled", True)) and stage_available("mfpipe.theory.cli")
DO_AGGREGATE = bool(config.get("aggregate", True))
HAS_FIT = (DO_AGGREGATE and bool(config.get("fit", {}).get("enabled", True))
           and bool(CELL_PATHS["train"]) and stage_available("mfpipe.fit")
           and theory_api_available())
HAS_FIGURES = (DO_AGGREGATE and bool(config.get("figures", {}).get("enabled", True))
               and stage_available("mfpipe.figures"))


# Theory tables: per study and (activation, noise), the product of its σ_w², σ_b², ρ (or noise
# variance) values — a superset of its cells' points, computed in one vectorised call.
THEORY_ARGS = {}
for _study in STUDIES.values():
    _points = {}
    for _cell in _study.cells:
        _p = _cell.params
        _noise = _p.get("noise", "dropout")
        _vals = _points.setdefault((_p["activation"], _noise), (set(), set(), set()))
        _vals[0].add(_p["sigma_w2"])
        _vals[1].add(_p["sigma_b2"])
        _vals[2].add(_p["keep_rate"] if _noise == "dropout" else _p.get("noise_var", 0.0))
    for (_activation, _noise), (_sw, _sb, _third) in sorted(_points.items()):
        _fmt = lambda values: ",".join(format_number(v) for v in sorted(values))
        THEORY_ARGS[f"{_study.name}/{_activation}-{_noise}"] = (
            f"--activation {_activation} --noise {_noise} --sigma-w2 {_fmt(_sw)} "
            f"--sigma-b2 {_fmt(_sb)} "
            + (f"--keep-rate {_fmt(_third)}" if _noise == "dropout" else f"--noise-var {_fmt(_third)}"))
THEORY_TABLES = [f"results/theory/{key}.parquet" for key in THEORY_ARGS]

THEORY_CONFIG = config.get("theory", {})
THEORY_MAP_ARGS = theory_grid_args(THEORY_CONFIG.get("map"), THEORY_MAP_DEFAULT)
THEORY_ITERATES_ARGS = theory_grid_args(THEORY_CONFIG.get("iterates"), THEORY_ITERATES_DEFAULT,
                                        depth=True)
HAS_MAP = stage_available("mfpipe.theory.cli") and THEORY_CONFIG.get("map", {}).get("enabled", True)
HAS_ITERATES = (stage_available("mfpipe.theory.cli_iterates")
                and THEORY_CONFIG.get("iterates", {}).get("enabled", True))

# Figures and the tables each is drawn from (`mfpipe figures` flag -> file): what each figure
# needs is mfpipe.grid.FIGURE_TABLES; here, which of the workflow's tables feeds which flag.
FIT_TABLES = ["results/fit.parquet", "results/fit.boundaries.parquet", "results/fit.cells.parquet",
              "results/fit.curves.parquet"]
_THEORY_MAP = HAS_MAP and "results/theory_map.parquet"
_GRADIENTS = bool(CELL_PATHS["grad"]) and "results/gradients.parquet"
_FIT = HAS_FIT and "results/fit.parquet"
FIGURE_INPUTS = drawable_figures({
    "phase_diagram": {"theory": _THEORY_MAP},
    "dropout_depth": {"theory": _THEORY_MAP},
    "iterates": {"iterates": HAS_ITERATES and "results/iterates.parquet"},
    "gradient_norms": {"gradients": _GRADIENTS, "theory": HAS_THEORY and "results/theory.parquet"},
    # per-layer variances across initialisations: drawn only from studies with ≥ 2 inits
    "universality": {"gradients": any(c.params["inits"] >= 2 for s in STUDIES.values()
                                      if s.kind == "grad" for c in s.cells) and _GRADIENTS},
    "trainability": {"fit": _FIT},
    "fit_summary": {"fit": _FIT},
}) if HAS_FIGURES else {}
FIGURE_OPTIONS = section_flags(config, "figures", FIGURE_FLAGS)


def figure_inputs(name):
    inputs = dict(FIGURE_INPUTS[name])
    if "fit" in inputs:
        inputs["fit_tables"] = FIT_TABLES
    return inputs


def figure_flags(name):
    return " ".join(f"--{flag.replace('_', '-')} {shlex.quote(path)}"
                    for flag, path in sorted(FIGURE_INPUTS[name].items()))


# Cells are targets themselves, not only inputs of their aggregate: Snakemake (≥ 7.7) does not
# rebuild a missing input whose consumer is up to date, so a deleted cell file would stay
# missing (and its rows stay in the aggregate).  A one-cell job's file, a bundle's stamp and a
# vanished member of a finished bundle or search round are targets; as targets they are rebuilt,
# and the aggregate, the fit and the figures after them.
ALL_TARGETS = [c.path for s in STUDIES.values() for c in s.unbundled]
# A searched study's target is its cell list, written after its last round (search.smk).
ALL_TARGETS += [f"results/search/{name}/cells.txt" for name in SEARCHED]
ALL_TARGETS += [path for paths in VANISHED.values() for path in paths]
ALL_TARGETS += [b.stamp for s in STUDIES.values() for b in s.bundles]
if DO_AGGREGATE:
    ALL_TARGETS += [f"results/{KIND_DATASETS[kind]}.parquet" for kind in KIND_COMMANDS
                    if CELL_PATHS[kind]]
if HAS_THEORY and DO_AGGREGATE:
    ALL_TARGETS.append("results/theory.parquet")
if HAS_FIT:
    ALL_TARGETS.append("results/fit.parquet")
ALL_TARGETS += [f"results/figures/{name}.png" for name in FIGURE_INPUTS]
