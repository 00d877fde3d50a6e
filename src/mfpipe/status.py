"""`mfpipe status`: what a config's grid has done, what is stale and what is left.

For each study: the number of cells, and how many are

* ``done``: the output exists and Snakemake's record of it (``.snakemake/metadata``) holds the
  cell's current parameters (the flags string and engine version the workflow passes); for a
  bundle member, its bundle's stamp records the cell's current identity (cell_id, engine);
* ``stale``: the output exists but was made with other parameters (a changed study setting, a
  bumped engine version) or its job was interrupted (``.snakemake/incomplete``): the next run
  recomputes it;
* ``missing``: no output yet;

A searched study (mfpipe.search) counts as done the grid cells that hold their current
identity, as stale those whose file holds another, and as missing the cells of its next round
(the rest of its grid is not meant to run); a line per search gives its rounds and columns.

Plus the estimated GPU-hours of the stale and missing cells (``resources`` of the config:
FLOP/s and per-layer latency of the target device, the same model that sets SLURM runtimes).
Outputs without a Snakemake record (copied in, or made outside the workflow) count as done,
as Snakemake itself treats them.

The config is checked exactly as the workflow checks it (same schema, same messages).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from base64 import urlsafe_b64encode
from pathlib import Path

from mfpipe.grid import (KIND_COMMANDS, build_studies, config_from_args, engine_versions,
                         read_stamp, resources_of)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configfile", "--config", action="append", default=None, metavar="YAML",
                        help="config file(s), later ones override (default: config/config.yaml, "
                             "as the Snakefile)")
    parser.add_argument("--config-json", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--directory", "-d", default=".",
                        help="workflow directory holding results/ and .snakemake/ (default: .)")
    parser.add_argument("--study", default=None, help="only this study")
    parser.add_argument("--list", choices=("stale", "missing", "left", "done"), default=None,
                        help="also print the paths of the cells in this state (left = stale + missing)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _record_path(metadata_dir: Path, target: str, max_len: int) -> Path:
    """Where Snakemake's file persistence keeps the record of ``target`` (persistence/file.py)."""
    b64 = urlsafe_b64encode(target.encode()).decode()
    parts = [b64[i:i + max_len - 1] for i in range(0, len(b64), max_len - 1)]
    parts = ["@" + p for p in parts[:-1]] + [parts[-1]]
    return metadata_dir.joinpath(*parts)


def cell_states(studies: dict, directory: str | os.PathLike = ".") -> dict[str, dict[str, list]]:
    """study -> state -> list of cells."""
    root = Path(directory)
    metadata = root / ".snakemake" / "metadata"
    incomplete = root / ".snakemake" / "incomplete"
    try:
        max_len = os.pathconf(root, "PC_NAME_MAX") or 255
    except (OSError, ValueError):
        max_len = 255
    engines = engine_versions()
    out: dict[str, dict[str, list]] = {}
    for study in studies.values():
        states = {"done": [], "stale": [], "missing": []}
        engine = repr(engines[study.kind])
        member_state = _member_states(study, root)
        for cell in study.cells:
            if not (root / cell.path).exists():
                states["missing"].append(cell)
                continue
            if id(cell) in member_state:
                states[member_state[id(cell)]].append(cell)
                continue
            if _record_path(incomplete, cell.path, max_len).exists():
                states["stale"].append(cell)
                continue
            record_file = _record_path(metadata, cell.path, max_len)
            try:
                record = json.loads(record_file.read_text())
            except (OSError, ValueError):
                states["done"].append(cell)  # no record: Snakemake treats it as up to date
                continue
            recorded = record.get("params")
            if recorded is not None and sorted(recorded) != sorted([repr(cell.args), engine]):
                states["stale"].append(cell)
            else:
                states["done"].append(cell)
        out[study.name] = states
    return out


def _member_states(study, root: Path) -> dict[int, str]:
    """id(cell) -> done / stale of the bundle members that have a file.  A member's file is not
    a Snakemake output (its bundle's stamp is): its bundle's stamp records what each member
    holds (``grid.read_stamp``); without a current stamp (a bundle never finished, or another
    engine wrote it) the file is read."""
    from mfpipe.cells import stored_identity_matches

    out = {}
    for bundle in study.bundles:
        recorded = read_stamp(root / bundle.stamp)
        for cell in bundle.cells:
            if not (root / cell.path).exists():
                continue
            if recorded is not None and cell.path not in recorded:
                done = False  # its bundle's finished job did not write it: the job reruns
            elif recorded is None or recorded[cell.path] is None:  # no current stamp, or one
                done = stored_identity_matches(cell.kind, cell.params, root / cell.path)  # of paths only
            else:
                done = recorded[cell.path] == cell.id
            out[id(cell)] = "done" if done else "stale"
    return out


def search_states(studies: dict, config: dict, directory: str | os.PathLike = ".") -> dict:
    """study -> (next round's Plan, its jobs) of every searched study (mfpipe.search)."""
    from mfpipe.search import plan_parts, study_state

    out = {}
    for name, study in studies.items():
        if study.search is not None:
            plan, results = study_state(study, config, str(directory))
            stale = sum(c.key not in results and (Path(directory) / c.path).exists()
                        for c in study.cells)
            out[name] = (plan, plan_parts(study, plan.cells, resources_of(config)),
                         len(results), stale)
    return out


def summarise(studies: dict, states: dict, resources: dict, searches: dict | None = None) -> dict:
    """Per study: cells, done / stale / missing, jobs and GPU-hours left.  A searched study's
    cells are its grid's; what is left is its next round (jobs: its bundles), not the grid."""
    gpus = float(resources["gpus_per_cell"]) or 1.0
    startup = float(resources["startup_seconds"])
    rows = []
    searches = searches or {}
    for name, study in studies.items():
        s = states[name]
        if name in searches:
            plan, parts, done, stale = searches[name]
            seconds = sum(startup + sum(c.seconds for c in part) for part in parts)
            rows.append({"study": name, "kind": study.kind, "cells": len(study.cells),
                         "done": done, "stale": stale,
                         "missing": len(plan.cells), "jobs_left": len(parts),
                         "gpu_hours_left": round(seconds * gpus / 3600.0, 4),
                         "search": plan.summary()})
            continue
        left = {id(c) for c in s["stale"] + s["missing"]}
        # a bundle job trains its stale and missing members together: one start-up, its
        # members' share of the bundle's time (FLOPs plus one shared latency floor)
        jobs, seconds = 0, 0.0
        for bundle in study.bundles:
            todo = sum(id(c) in left for c in bundle.cells)
            if todo:
                jobs += 1
                seconds += startup + bundle.seconds * todo / len(bundle.cells)
        for cell in study.unbundled:
            if id(cell) in left:
                jobs += 1
                seconds += startup + cell.seconds
        rows.append({"study": name, "kind": study.kind, "cells": len(study.cells),
                     "done": len(s["done"]), "stale": len(s["stale"]),
                     "missing": len(s["missing"]), "jobs_left": jobs,
                     "gpu_hours_left": round(seconds * gpus / 3600.0, 4)})
    total = {k: sum(r[k] for r in rows) for k in ("cells", "done", "stale", "missing", "jobs_left")}
    total["gpu_hours_left"] = round(sum(r["gpu_hours_left"] for r in rows), 4)
    return {"studies": rows, "total": total}


def _search_line(name: str, s: dict, directory) -> str:
    from mfpipe.search import rounds_done

    return (f"search {name}: {rounds_done(name, str(directory))} rounds planned; "
            f"{s['columns']} columns: {s['bracketed']} bracketed, {s['censored_above']} censored "
            f"above, {s['censored_below']} censored below, {s['open']} open "
            f"({s['non_monotone']} non-monotone, {s['seeds_disagree']} with seeds that "
            f"disagree); " + ("complete" if s["complete"] else
                              f"next round: {s['cells_to_train']} cells (missing), more may follow"))


def _table(summary: dict) -> str:
    header = ["study", "kind", "cells", "done", "stale", "missing", "jobs left", "GPU-hours left"]
    rows = [[r["study"], r["kind"], r["cells"], r["done"], r["stale"], r["missing"],
             r["jobs_left"], f"{r['gpu_hours_left']:.3g}"] for r in summary["studies"]]
    t = summary["total"]
    rows.append(["total", "", t["cells"], t["done"], t["stale"], t["missing"], t["jobs_left"],
                 f"{t['gpu_hours_left']:.3g}"])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = []
    for i, row in enumerate([header] + rows):
        cells = [str(x).ljust(w) if j < 2 else str(x).rjust(w)
                 for j, (x, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if i == 0 or i == len(rows) - 1:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args) -> int:
    config = config_from_args(args)  # bad YAML: an InputError naming the line
    studies = build_studies(config)
    if args.study is not None:
        if args.study not in studies:
            from mfpipe.errors import InputError

            raise InputError("--study", args.study, ", ".join(studies))
        studies = {args.study: studies[args.study]}
    states = cell_states(studies, args.directory)
    searches = search_states(studies, config, args.directory)
    summary = summarise(studies, states, resources_of(config), searches)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(_table(summary))
        for row in summary["studies"]:
            if "search" in row:
                print(_search_line(row["study"], row["search"], args.directory))
        print(f"GPU-hours: estimates for {', '.join(sorted(KIND_COMMANDS))} cells from "
              f"depth × width × steps at resources.flops_per_second = "
              f"{resources_of(config)['flops_per_second']:.3g} FLOP/s (see mfpipe.grid).")
    if args.list:
        wanted = ["stale", "missing"] if args.list == "left" else [args.list]
        for name in studies:
            for state in wanted:
                for cell in states[name][state]:
                    print(f"{state}\t{cell.path}", file=sys.stdout)
    return 0
