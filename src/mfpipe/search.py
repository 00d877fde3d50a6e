"""Boundary search: the largest trainable depth of every column with a fraction of the grid.

A study with a ``search`` section trains, instead of its whole Cartesian grid, only the cells
needed to bracket the trainability boundary of each *column* (every grid parameter but depth;
seeds pooled, as in the fit) between two adjacent values of the study's depth axis.  The cells
it trains are the grid's own cells (same paths, identities and bundles), so a cell a full grid
computed is reused by a search and the other way round.

Rounds.  Each round looks at every cell of the study that exists and holds its current identity
(``mfpipe.cells.stored_identity_matches``), classifies them with the fit's own rule
(``mfpipe.fit.verdict_panels``: mean accuracy over seeds against the panel's threshold, diverged
runs at chance), and picks per column the next depths, every seed of each:

* calibrate first: the theory's n₀ (``n0``, default 6) is often off by a factor of 2 or more,
  and every column that starts from it pays for that.  So per panel only a few *pilot* columns
  start in round 0 — about √m of its m columns, evenly spread over σ_w², both ends included
  (``pilot_columns``); every other column waits until the pilots beside it (the nearest on each
  side in σ_w² order) are settled (bracketed or censored), then starts from the panel's own n̂;
* n̂ of L = n̂·ξ_c (``multiplier_trend``): a robust line in log n against log σ_w² through the
  panel's bracketed columns (n = the bracket's identric mean / ξ_c, as the fit takes it; one
  column: its n), since n drifts smoothly with σ_w²; none yet: n₀;
* nothing known yet: the two depths around the prediction n̂·ξ_c (a pilot: n₀·ξ_c); a
  prediction at or beyond the deepest depth (a critical column, ξ_c = ∞, among them) trains
  only the deepest depth, one below the axis only the shallowest (the only depth beside it: a
  censored column is settled with one depth);
* every known depth trains: widen upwards — straight to n̂·ξ_c when that lies beyond, else by
  1, 2, 4, … depth values (one step first: the guess is usually close, and deep cells cost the
  most); none trains: downwards alike;
* a trainable depth below a failing one: bisect (in log depth) until they are adjacent;
* trouble is sampled more densely and reported: a failing depth below a trainable one
  (``non_monotone``: every depth between them is trained), seeds that disagree at a bracket end
  (``seeds_disagree``: the depth beside that end, outside the bracket, is trained too);
* a depth some seeds have and others lack (a new seed value) gets its missing seeds;
* the fit's threshold is relative to the panel's best cell, which a full grid finds at a shallow
  depth: per panel, the column with the largest ξ_c also trains its shallowest depth.

A column is ``bracketed`` (adjacent trainable / failing depths), ``censored_above`` (the deepest
depth still trains: the boundary is at least that), ``censored_below`` (the shallowest fails) or
still ``open`` (so is a column that waits for its pilots, with no depth to train yet).  The
search ends when no column needs a cell, or after ``max_rounds`` rounds.  The planner keeps no
state of its own: a round is a function of the config and the cells that exist (which columns
are pilots follows from the grid), so an interrupted, edited or extended search simply
continues.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mfpipe.errors import InputError
from mfpipe.grid import (after_job, balanced_chunks, build_studies, config_from_args, key_without,
                         read_stamp, resources_of, runtime_minutes)
from mfpipe.values import clean_float

#: The ``search`` section of a study: the prediction's multiplier n₀ and the most rounds.
SEARCH_DEFAULTS = {"n0": 6.0, "max_rounds": 16}
#: Column states.
STATES = ("bracketed", "censored_above", "censored_below", "open")


def search_options(spec, where: str) -> dict | None:
    """A study's ``search`` section (``true`` for the defaults) as a dict, or None."""
    if spec is None or spec is False:
        return None
    if spec is True:
        return dict(SEARCH_DEFAULTS)
    if not isinstance(spec, dict):
        raise InputError(where, spec, "true, or a mapping with n0 (> 0) and max_rounds (≥ 1)")
    unknown = sorted(set(spec) - set(SEARCH_DEFAULTS))
    if unknown:
        raise InputError(f"{where}.{unknown[0]}", spec[unknown[0]], "n0 or max_rounds")
    out = {**SEARCH_DEFAULTS, **spec}
    if isinstance(out["n0"], bool) or not isinstance(out["n0"], (int, float)) or not out["n0"] > 0:
        raise InputError(f"{where}.n0", out["n0"], "a number > 0 (the prediction n₀·ξ_c)")
    if (isinstance(out["max_rounds"], bool) or not isinstance(out["max_rounds"], int)
            or out["max_rounds"] < 1):
        raise InputError(f"{where}.max_rounds", out["max_rounds"], "an integer ≥ 1")
    return {"n0": float(out["n0"]), "max_rounds": int(out["max_rounds"])}


# ----------------------------------------------------------------------------- columns

@dataclass
class Column:
    """One column of a searched study: its cells by depth (one per seed), depth ascending."""

    key: str  # the cells' path without its depth and seed levels
    panel: str  # the key without σ_w²: the columns the fit's threshold pools
    depths: list[int]
    cells: list[list]  # per depth index, the cells of every seed
    sigma_w2: float
    xi_c: float = math.nan
    state: str = "open"
    non_monotone: bool = False
    seeds_disagree: bool = False
    bracket: tuple = (None, None)  # (largest trainable depth, next failing depth)
    probe: list = field(default_factory=list)  # depth indices the next round trains


def columns_of(study, n0: float) -> list[Column]:
    """The columns of a study's grid cells (extra cells are not searched), with ξ_c and the
    prediction n₀·ξ_c from the theory at each column's activation, σ_w², σ_b², ρ and noise."""
    from mfpipe.fit import xi_columns

    if study.kind != "train" or "depth" not in study.axes:
        raise InputError(f"studies.{study.name}.search", "search",
                         "a train study with depth as a grid axis")
    by_key: dict[str, dict[int, list]] = {}
    for cell in study.cells[:study.n_grid_cells]:
        column = by_key.setdefault(key_without(cell.key, ("depth", "seed")), {})
        column.setdefault(int(cell.params["depth"]), []).append(cell)
    columns = []
    for key, per_depth in by_key.items():
        depths = sorted(per_depth)
        first = per_depth[depths[0]][0].params
        columns.append(Column(key, key_without(key, ("sigma_w2",)), depths,
                              [per_depth[d] for d in depths], float(first["sigma_w2"])))
    theory_in = pd.DataFrame([{k: c.cells[0][0].params.get(k, d) for k, d in
                               (("activation", "tanh"), ("sigma_w2", 1.0), ("sigma_b2", 0.0),
                                ("keep_rate", 1.0), ("noise", "dropout"), ("noise_var", 0.0))}
                              for c in columns])
    if columns:
        xi = xi_columns(theory_in)["xi_c"].to_numpy(float)
        for column, value in zip(columns, xi):
            column.xi_c = float(value)
    return columns


def predicted_index(depths: list[int], prediction: float) -> int:
    """Index of the deepest depth ≤ the prediction (0 when every depth is deeper)."""
    below = [i for i, d in enumerate(depths) if d <= prediction]
    return below[-1] if below else 0


def _log_middle(depths, lo: int, hi: int) -> int:
    target = 0.5 * (math.log(depths[lo]) + math.log(depths[hi]))
    return min(range(lo + 1, hi), key=lambda i: abs(math.log(depths[i]) - target))


def _widening(n_known: int) -> int:
    """Depth values to step beyond the known ones, all on one side of the boundary: 1 after
    the first round's pair (the guess was close: a deep cell costs the most), then 2, 4, …"""
    return 2 ** max(n_known - 2, 0)


def first_probe(depths: list[int], prediction: float) -> list[int]:
    """Depth indices a column without cells starts with: the two around the prediction, or only
    the deepest (shallowest) depth when the prediction is at or beyond (below) the axis."""
    m = len(depths)
    if prediction >= depths[-1]:
        return [m - 1]
    if prediction < depths[0]:
        return [0]
    p = min(predicted_index(depths, prediction), max(m - 2, 0))
    return sorted({p, min(p + 1, m - 1)})


def next_probe(column: Column, trainable: list, mixed: list, n0: float,
               n_estimate: float | None = None) -> None:
    """Set the column's state, flags, bracket and the depth indices to train next from its
    per-depth verdicts (``trainable[i]``: True / False, None when untested; ``mixed[i]``: its
    seeds disagree).  ``n_estimate``: the multiplier n of L = n·ξ_c that the panel's bracketed
    columns show at this column (``multiplier_trend``); a column without cells starts around
    n_estimate·ξ_c instead of n0·ξ_c, one that must widen jumps to it instead of stepping."""
    depths, m = column.depths, len(column.depths)
    finite = np.isfinite(column.xi_c) and column.xi_c > 0
    n = n0 if n_estimate is None else n_estimate
    target = m - 1  # the depth closest to the prediction n·ξ_c (ξ_c = ∞: the deepest)
    if finite:
        goal = math.log(n * column.xi_c)
        target = min(range(m), key=lambda i: abs(math.log(depths[i]) - goal))
    known = [i for i in range(m) if trainable[i] is not None]
    probe: set[int] = set()
    column.non_monotone = column.seeds_disagree = False
    column.bracket = (None, None)
    if not known:
        column.state = "open"
        column.probe = first_probe(depths, n * column.xi_c if finite else math.inf)
        return
    good = [i for i in known if trainable[i]]
    bad = [i for i in known if not trainable[i]]
    if not good:
        lowest = min(bad)
        column.bracket = (None, depths[lowest])
        if lowest == 0:
            column.state = "censored_below"
        else:
            column.state = "open"
            step = min(lowest - (1 if n_estimate is not None else _widening(len(bad))), target)
            probe.add(max(0, step))
    else:
        top = max(good)
        above = [i for i in bad if i > top]
        if not above:
            column.bracket = (depths[top], None)
            if top == m - 1:
                column.state = "censored_above"
            else:
                column.state = "open"
                step = max(top + (1 if n_estimate is not None else _widening(len(good))), target)
                probe.add(min(m - 1, step))
        else:
            fail = min(above)
            column.bracket = (depths[top], depths[fail])
            if fail - top > 1:
                column.state = "open"
                probe.add(_log_middle(depths, top, fail))
            else:
                column.state = "bracketed"
            # seeds that disagree at a bracket end: the depth beside it on that side as well
            # (below a trainable end that some seeds fail, above a failing end some seeds train)
            if mixed[top] or mixed[fail]:
                column.seeds_disagree = True
                probe.update(i for i, trouble in ((top - 1, mixed[top]), (fail + 1, mixed[fail]))
                             if trouble and 0 <= i < m)
        # a failing depth below a trainable one: every depth between them
        below = [i for i in bad if i < top]
        if below:
            column.non_monotone = True
            probe.update(range(min(below) + 1, top))
    column.probe = sorted(i for i in probe if trainable[i] is None)


# ----------------------------------------------------------------------------- a round

def multiplier_trend(columns: list[Column]) -> dict:
    """column key -> n̂ of L = n̂·ξ_c for every column of a panel, from its bracketed columns with
    a finite ξ_c (n = the bracket's identric mean / ξ_c, as the fit takes the boundary): the
    robust (Theil–Sen) line of log n against log σ_w² (n drifts smoothly with σ_w²), the median
    n when there is one σ_w², {} when none."""
    from mfpipe.fit import identric_mean

    points = [(math.log(c.sigma_w2), math.log(float(identric_mean(*c.bracket)) / c.xi_c))
              for c in columns if c.state == "bracketed" and np.isfinite(c.xi_c) and c.xi_c > 0
              and c.sigma_w2 > 0]
    if not points:
        return {}
    x, y = np.array(points).T
    if np.ptp(x) == 0:
        return {c.key: float(np.exp(np.median(y))) for c in columns}
    # Theil–Sen: the median of the pairwise slopes and of the intercepts they leave, so that a
    # column far off the line (near criticality the boundary is set by the training budget, not
    # by ξ_c: its n is tiny) does not tilt it
    i, j = np.triu_indices(len(x), 1)
    apart = x[i] != x[j]
    slope = float(np.median((y[j] - y[i])[apart] / (x[j] - x[i])[apart]))
    intercept = float(np.median(y - slope * x))
    return {c.key: float(np.exp(intercept + slope * math.log(c.sigma_w2)))
            for c in columns if c.sigma_w2 > 0}


def pilot_columns(columns: list[Column]) -> set[str]:
    """Keys of a panel's pilots (``columns`` in σ_w² order): about √m of its m columns, evenly
    spread, both ends included, so that every other column has a pilot on each side."""
    m = len(columns)
    k = min(m, max(2, round(math.sqrt(m))))
    picks = {round(j * (m - 1) / (k - 1)) for j in range(k)} if k > 1 else {0}
    return {columns[i].key for i in picks}


def _waits(columns: list[Column], i: int, pilots: set[str]) -> bool:
    """Whether column i (σ_w² order), no pilot and without cells, still waits: a pilot beside
    it (the nearest on each side) is still open."""
    below = next((c for c in reversed(columns[:i]) if c.key in pilots), None)
    above = next((c for c in columns[i + 1:] if c.key in pilots), None)
    return any(c is not None and c.state == "open" for c in (below, above))


@dataclass
class Plan:
    """One round: every column's state and the cells to train (none: the search is done)."""

    columns: list[Column]
    cells: list  # grid cells to train, column by column
    round: int
    max_rounds: int

    def summary(self) -> dict:
        counts = {s: sum(c.state == s for c in self.columns) for s in STATES}
        return {"round": self.round, "max_rounds": self.max_rounds, "columns": len(self.columns),
                **counts, "non_monotone": sum(c.non_monotone for c in self.columns),
                "seeds_disagree": sum(c.seeds_disagree for c in self.columns),
                "cells_to_train": len(self.cells), "complete": not self.cells}

    def column_records(self) -> list[dict]:
        return [{"column": c.key, "sigma_w2": c.sigma_w2, "xi_c": c.xi_c, "state": c.state,
                 "depth_max_trainable": c.bracket[0], "depth_min_untrainable": c.bracket[1],
                 "non_monotone": c.non_monotone, "seeds_disagree": c.seeds_disagree,
                 "next_depths": [c.depths[i] for i in c.probe]} for c in self.columns]


def fit_options(config: dict) -> dict:
    """The fit settings of a config that decide trainability (``mfpipe fit``'s defaults)."""
    fit = config.get("fit") or {}
    step = str(fit.get("step", "last"))
    return {"accuracy": str(fit.get("accuracy", "train_accuracy")),
            # the fit of every step fits each step apart; the search brackets the last one
            "step": "last" if step == "all" else step,
            "threshold": str(fit.get("threshold", "between:0.5"))}


def plan_round(study, columns: list[Column], results: dict, options: dict, fit: dict,
               round_index: int) -> Plan:
    """Classify the known cells (``results``: cell key -> its rows) and pick the next cells."""
    from mfpipe.fit import verdict_panels

    panels: dict[str, list[Column]] = {}
    for column in columns:
        panels.setdefault(column.panel, []).append(column)
    for members in panels.values():
        frames = [results[c.key] for col in members for cells in col.cells for c in cells
                  if c.key in results]
        verdict = {}  # (σ_w², depth) -> (trainable, seeds disagree)
        if frames:
            found = verdict_panels(pd.concat(frames, ignore_index=True), **fit)
            if len(found) != 1:  # a searched panel is one fit panel by construction
                raise RuntimeError(f"search: {len(found)} fit panels in one search panel")
            p = found[0]
            ran = np.isfinite(p.acc)
            with np.errstate(invalid="ignore"):  # the fraction of seeds that train
                frac = (ran & (p.acc >= p.threshold)).sum(axis=0) / ran.sum(axis=0)
            for ci, sigma in enumerate(p.sigma):
                for di, depth in enumerate(p.depths):
                    if p.tested[ci, di]:
                        verdict[(clean_float(sigma), int(depth))] = (
                            bool(p.trainable[ci, di]), 0.0 < frac[ci, di] < 1.0)
        members = sorted(members, key=lambda c: c.sigma_w2)
        verdicts = {}
        for column in members:
            sigma = clean_float(column.sigma_w2)
            known = [verdict.get((sigma, d)) for d in column.depths]
            verdicts[column.key] = ([s[0] if s else None for s in known],
                                    [bool(s and s[1]) for s in known])
        # twice: first every column's state, then the n̂ its bracketed columns show, from which
        # a column starts (once its pilots are settled) or to which it jumps when it must widen
        for column in members:
            next_probe(column, *verdicts[column.key], options["n0"])
        trend = multiplier_trend(members)
        pilots = pilot_columns(members)
        for i, column in enumerate(members):
            fresh = all(v is None for v in verdicts[column.key][0])
            if fresh and column.key not in pilots and _waits(members, i, pilots):
                column.state, column.probe = "open", []
            else:
                next_probe(column, *verdicts[column.key], options["n0"], trend.get(column.key))
        # The fit's threshold is relative to the panel's best cell, which a full grid finds at a
        # shallow depth: the column likeliest to hold it (the largest ξ_c) also trains its
        # shallowest depth, so that the search judges with the threshold the full grid would.
        anchor = max(members, key=lambda c: c.xi_c if np.isfinite(c.xi_c) else math.inf)
        if (clean_float(anchor.sigma_w2), anchor.depths[0]) not in verdict and 0 not in anchor.probe:
            anchor.probe = [0] + anchor.probe
    cells = []
    if round_index < options["max_rounds"]:
        for column in columns:
            wanted = set(column.probe)
            # a tested depth lacking some seeds (a new seed value) gets them
            wanted.update(i for i, seeds in enumerate(column.cells)
                          if any(c.key in results for c in seeds))
            for i in sorted(wanted):
                cells += [c for c in column.cells[i] if c.key not in results]
    return Plan(columns, cells, round_index, options["max_rounds"])


def simulate(study, options: dict, fit: dict, oracle, results: dict | None = None) -> list[Plan]:
    """Run the search to its end with ``oracle(cell) -> rows`` in place of training (what the
    tests and ``benchmarks/search.py`` feed a synthetic trainability rule); ``results`` (cell
    key -> rows, updated) holds what exists beforehand.  Returns every round's plan."""
    results = {} if results is None else results
    columns = columns_of(study, options["n0"])
    plans = []
    for round_index in range(options["max_rounds"] + 1):
        plan = plan_round(study, columns, results, options, fit, round_index)
        plans.append(plan)
        if not plan.cells:
            break
        for cell in plan.cells:
            results[cell.key] = oracle(cell)
    return plans


def oracle_rows(cell, trainable: bool, rng) -> pd.DataFrame:
    """A training cell's result row as a synthetic oracle reports it: accuracy ≈ 0.95 when
    ``trainable``, else ≈ chance (0.1), with a little noise."""
    params = {k: v for k, v in cell.params.items() if k != "checkpoints"}
    accuracy = (0.95 if trainable else 0.1) + float(rng.normal(0, 0.01))
    return pd.DataFrame([{**params, "step": params["steps"], "train_accuracy": accuracy,
                          "train_loss": 0.2 if trainable else 2.3, "diverged": False}])


def load_results(study, columns: list[Column], root: str = ".") -> dict:
    """cell key -> rows of every grid cell whose file (under ``root``) exists and holds its
    current identity."""
    from mfpipe.cells import stored_identity_matches
    from mfpipe.store import read_table

    out = {}
    for column in columns:
        for cells in column.cells:
            for cell in cells:
                path = os.path.join(root, cell.path)
                if os.path.exists(path) and stored_identity_matches(cell.kind, cell.params, path):
                    out[cell.key] = read_table(path)
    return out


def rounds_done(name: str, root: str = ".") -> int:
    """How many rounds of a study's search have a plan on disk (results/search/<study>)."""
    from pathlib import Path

    base = Path(root, "results", "search", name)
    return sum(1 for p in base.glob("round*") if p.name[5:].isdigit() and (p / "plan.json").exists())


def after_rounds(study, root: str = ".") -> tuple[list, list]:
    """(vanished, rewritten) cells of the study's finished search parts (``grid.after_job``:
    each part's stamp lists the cells it trained and kept; a part whose cells are not all this
    study's belongs to another grid: the search replans it)."""
    by_path = {c.path: c for c in study.cells}
    vanished, rewritten = [], []
    stamps = os.path.join(root, "results", "search", study.name, "trained")
    for name in sorted(os.listdir(stamps)) if os.path.isdir(stamps) else ():
        stamp = os.path.join(stamps, name)
        recorded = read_stamp(stamp) if name.endswith(".json") else None
        if recorded is not None and all(p in by_path for p in recorded):
            v, r = after_job(stamp, {p: by_path[p] for p in recorded}, recorded=recorded)
            vanished += v
            rewritten += r
    return vanished, rewritten


def study_state(study, config: dict, root: str = ".", round_index: int | None = None
                ) -> tuple[Plan, dict]:
    """(the plan of round ``round_index`` — default: the round after those on disk — and the
    results it saw: cell key -> rows) of a searched study, from what exists under ``root``."""
    columns = columns_of(study, study.search["n0"])
    results = load_results(study, columns, root)
    if round_index is None:
        round_index = rounds_done(study.name, root)
    return plan_round(study, columns, results, study.search, fit_options(config),
                      round_index), results


# ----------------------------------------------------------------------------- jobs

def plan_parts(study, cells: list, resources: dict) -> list[list]:
    """The round's cells as jobs: one per bundle (cells that share everything but the member
    parameters, at most ``resources.bundle_size``), so that a round runs in parallel."""
    from mfpipe.cells import bundle_key

    cap = max(1, int(resources["bundle_size"]))
    groups: dict[str, list] = {}
    for cell in cells:
        groups.setdefault(bundle_key(cell.kind, cell.params), []).append(cell)
    return [part for group in groups.values() for part in balanced_chunks(group, cap)]


def write_round(directory: str, plan: Plan, parts: list[list], resources: dict) -> None:
    """``DIR/plan.json`` (the columns, the summary, the jobs) and ``DIR/part<i>.json`` (the
    cells of job i, in the form of ``mfpipe train-cell --cells-file``), written atomically."""
    from mfpipe.store import atomic_path

    os.makedirs(directory, exist_ok=True)
    jobs = []
    base = int(resources["mem_mb_base"])
    for i, part in enumerate(parts):
        cells = [{**c.params, "output": c.path} for c in part]
        with atomic_path(os.path.join(directory, f"part{i}.json")) as tmp:
            tmp.write_text(json.dumps(cells, indent=1) + "\n")
        seconds = sum(c.seconds for c in part)
        jobs.append({"part": i, "cells": len(part), "dataset": part[0].params["dataset"],
                     "seconds": seconds,
                     "mem_mb": base + sum(c.mem_mb - base for c in part),
                     "runtime_minutes": runtime_minutes(seconds, resources)})
    record = {"summary": plan.summary(), "jobs": jobs, "columns": plan.column_records()}
    with atomic_path(os.path.join(directory, "plan.json")) as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=_json_default) + "\n")


def prune_rounds(directory: str, last_round: int) -> list[str]:
    """Remove what an earlier, longer or wider chain of rounds left in ``directory``
    (results/search/<study>): round directories after ``last_round`` and job stamps that no
    plan of rounds 0…last_round names, so that only the search's current record remains.
    Returns the removed paths."""
    import shutil
    from pathlib import Path

    root = Path(directory)
    keep = set()
    for r in range(last_round + 1):
        with open(root / f"round{r}" / "plan.json") as fh:
            keep.update(f"round{r}-part{job['part']}.json" for job in json.load(fh)["jobs"])
    removed = []
    for path in sorted(root.glob("round*")):
        if path.is_dir() and path.name[5:].isdigit() and int(path.name[5:]) > last_round:
            shutil.rmtree(path)
            removed.append(str(path))
    for path in sorted((root / "trained").glob("*.json")) if (root / "trained").is_dir() else ():
        if path.name not in keep:
            path.unlink()
            removed.append(str(path))
    return removed


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if not np.isfinite(value) else float(value)
    raise TypeError(type(value).__name__)


# ----------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configfile", "--config", action="append", default=None, metavar="YAML",
                        help="config file(s), later ones override (default: config/config.yaml)")
    parser.add_argument("--config-json", default=None, help="the config as JSON (the workflow's)")
    parser.add_argument("--study", required=True, help="the searched study")
    parser.add_argument("--round", type=int, default=None,
                        help="plan this round into the directory -o (plan.json, part<i>.json)")
    parser.add_argument("--list-cells", action="store_true",
                        help="write the study's cells that exist (what the aggregate reads) to -o")
    parser.add_argument("--last-round", type=int, default=None,
                        help="with --list-cells: the search ended with this round; remove the "
                             "rounds and job stamps an earlier search left beyond it")
    parser.add_argument("-o", "--output", default=None, help="round directory or cell list")
    parser.add_argument("--json", action="store_true", help="print the state as JSON")


def searched_study(config: dict, name: str):
    """A config's study ``name``, which must have a search section."""
    studies = build_studies(config)
    if name not in studies:
        raise InputError("study", name, ", ".join(studies))
    if studies[name].search is None:
        raise InputError("study", name, "a study with a search section: "
                         + ", ".join(n for n, s in studies.items() if s.search))
    return studies[name]


def run(args) -> int:
    from mfpipe.store import atomic_path, check_output

    config = config_from_args(args)
    if args.round is not None and args.round < 0:
        raise InputError("round", args.round, "an integer ≥ 0")
    if (args.round is not None or args.list_cells) and not args.output:
        raise InputError("output", None, "-o DIR (with --round) or -o FILE (with --list-cells)")
    if args.list_cells:
        check_output(args.output, "output", suffixes=(".txt",))
    study = searched_study(config, args.study)
    plan, results = study_state(study, config, round_index=args.round or 0)
    if args.round is not None:
        resources = resources_of(config)
        write_round(args.output, plan, plan_parts(study, plan.cells, resources), resources)
    if args.list_cells:  # the grid cells that hold their current identity, in grid order
        done = [c.path for c in study.cells if c.key in results]
        with atomic_path(args.output) as tmp:
            tmp.write_text("".join(p + "\n" for p in done))
        if args.last_round is not None:
            prune_rounds(os.path.join("results", "search", args.study), args.last_round)
    summary = plan.summary()
    if args.json:
        print(json.dumps({"summary": summary, "columns": plan.column_records()}, indent=1,
                         default=_json_default))
    else:
        print(f"search {args.study}: {summary['columns']} columns: {summary['bracketed']} "
              f"bracketed, {summary['censored_above']} censored above, "
              f"{summary['censored_below']} censored below, {summary['open']} open "
              f"({summary['non_monotone']} non-monotone, {summary['seeds_disagree']} with seeds "
              f"that disagree); next: {summary['cells_to_train']} cells")
    return 0
