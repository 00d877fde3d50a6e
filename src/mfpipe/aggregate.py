"""`mfpipe aggregate`: merge per-cell parquet files into one dataset per kind.

Kinds and where they go (the workflow's convention)::

    results/cells/training/...  -> results/training.parquet   (one row per cell × checkpoint step)
    results/cells/gradients/... -> results/gradients.parquet  (one row per cell × layer × mode …)
    theory tables of the grid   -> results/theory.parquet     (one row per grid point)

Inputs are directories (searched recursively for ``*.parquet``), parquet files, or ``@FILE`` /
``--inputs-from FILE`` naming a text file with one path per line (a 100k-cell grid does not fit
on a command line).  Every file's schema is checked against the kind's column contract
(DESIGN.md) before anything is read: a file with a missing or mistyped column is an error that
names the file.  Two files claiming the same ``cell_id`` (training/gradients) or the same grid
point with different values (theory) are an error naming both files.

The data are streamed file by file with pyarrow (``pyarrow.dataset`` scan → ``ParquetWriter``)
against the unified schema of all inputs, so 100k cell files never become 100k pandas frames
and memory stays bounded.  The output is written atomically (nothing is left on error).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from mfpipe.errors import InputError
from mfpipe.grid import path_params, value_text
from mfpipe.store import atomic_path, check_output, schema_problems

_PARAMS = {
    "activation": "string",
    "keep_rate": "number",
    "sigma_w2": "number",
    "sigma_b2": "number",
    "depth": "integer",
    "width": "integer",
}

#: Column contracts per kind: (required, optional) -> column name: type family.
CONTRACTS: dict[str, tuple[dict, dict]] = {
    "training": (
        {"cell_id": "string", **_PARAMS, "dataset": "string", "optimizer": "string",
         "seed": "integer", "step": "integer", "train_accuracy": "number"},
        {"batch_accuracy": "number", "test_accuracy": "number", "train_loss": "number",
         "diverged": "bool", "steps": "integer", "batch_size": "integer", "init": "string",
         "noise": "string"},
    ),
    "gradients": (
        {"cell_id": "string", **_PARAMS, "layer": "integer", "mode": "string",
         "grad_sq_norm": "number"},
        {"g_aa": "number", "g_ab": "number", "g_ab_abs": "number", "q_l": "number",
         "c_l": "number", "seed": "integer", "init": "string", "dataset": "string",
         "noise": "string"},
    ),
    "theory": (
        {"activation": "string", "noise": "string", "sigma_w2": "number", "sigma_b2": "number",
         "keep_rate": "number", "q_star": "number", "c_star": "number", "chi_1": "number",
         "chi_c": "number", "xi_q": "number", "xi_c": "number", "xi_grad": "number"},
        {"noise_var": "number"},
    ),
}

#: Columns that identify one theory grid point (those present are used).
THEORY_KEY = ("activation", "noise", "noise_var", "sigma_w2", "sigma_b2", "keep_rate")

_MAX_NAMED = 10  # how many offending files an error message lists
_ROW_GROUP = 1 << 16  # rows per output row group


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="per-cell parquet files, directories (searched recursively for "
                             "*.parquet), or @FILE with one path per line")
    parser.add_argument("--inputs-from", metavar="FILE", action="append", default=[],
                        help="text file with one input path per line (repeatable)")
    parser.add_argument("--kind", choices=sorted(CONTRACTS) + ["auto"], default="auto",
                        help="which column contract the inputs follow (default: detected from "
                             "the first file's columns)")
    parser.add_argument("-o", "--output", required=True, help="output .parquet file")


def run(args: argparse.Namespace) -> int:
    files = collect_inputs(list(args.inputs), list(args.inputs_from))
    start = time.perf_counter()
    summary = aggregate(files, args.output, kind=args.kind)
    print(f"mfpipe aggregate: {summary['kind']}: {summary['files']} files, {summary['rows']} rows, "
          f"{summary['cells']} cells -> {args.output} ({time.perf_counter() - start:.1f} s)",
          file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------

def collect_inputs(inputs: list[str], inputs_from: list[str] | None = None) -> list[Path]:
    """Expand directories, ``@FILE`` lists and ``--inputs-from`` files into parquet paths."""
    items: list[str] = []
    for entry in inputs:
        if entry.startswith("@"):
            items.extend(_read_list_file(entry[1:]))
        else:
            items.append(entry)
    for list_file in inputs_from or []:
        items.extend(_read_list_file(list_file))
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*.parquet") if not p.name.startswith(".")))
        elif path.is_file():
            files.append(path)
        else:
            raise InputError("input", item, "an existing parquet file, a directory, or @FILE")
    if not files:
        raise InputError("inputs", inputs + (inputs_from or []),
                         "at least one parquet file (directories are searched for *.parquet)")
    return files


def _read_list_file(list_file: str) -> list[str]:
    path = Path(list_file)
    if not path.is_file():
        raise InputError("inputs-from", list_file, "a text file with one path per line")
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def detect_kind(schemas) -> str:
    """The kind most of the files' columns say (a broken file is then named by the checks)."""
    if isinstance(schemas, pa.Schema):
        schemas = [schemas]
    votes: dict[str, int] = {}
    for schema in schemas:
        names = set(schema.names)
        for kind, marks in (("training", {"step", "train_accuracy"}), ("gradients", {"layer", "grad_sq_norm"}),
                            ("theory", {"xi_c", "chi_1"})):
            if marks <= names:
                votes[kind] = votes.get(kind, 0) + 1
                break
    if votes:
        return max(votes, key=votes.get)
    raise InputError("kind", "auto", "training (has step, train_accuracy), gradients (has layer, "
                     "grad_sq_norm) or theory (has xi_c, chi_1); pass --kind")


def read_schemas(files: list[Path]) -> list[pa.Schema]:
    """Parquet footers of all files (threads: footer reads are I/O bound)."""
    def one(path):
        try:
            return pq.read_schema(path).remove_metadata()  # pandas metadata: KBs per file
        except (pa.ArrowInvalid, OSError) as err:
            raise InputError("input", str(path), f"a readable parquet file ({err})") from None
    if len(files) < 64:
        return [one(p) for p in files]
    with ThreadPoolExecutor(max_workers=min(16, 4 * (os.cpu_count() or 2))) as pool:
        return list(pool.map(one, files, chunksize=256))


def check_schemas(files: list[Path], schemas: list[pa.Schema], kind: str) -> None:
    """Raise InputError naming the files whose columns break the kind's contract."""
    required, optional = CONTRACTS[kind]
    bad: list[str] = []
    # Many cell files share one schema: check each distinct schema once.
    verdicts: dict[pa.Schema, list[str]] = {}
    for path, schema in zip(files, schemas):
        key = schema.remove_metadata()
        if key not in verdicts:
            verdicts[key] = schema_problems(key, required, optional)
        if verdicts[key]:
            bad.append(f"{path}: {'; '.join(verdicts[key])}")
    if bad:
        more = f" (and {len(bad) - _MAX_NAMED} more files)" if len(bad) > _MAX_NAMED else ""
        raise InputError(f"{kind} cell files", " | ".join(bad[:_MAX_NAMED]) + more,
                         "files with the columns of the contract: "
                         + ", ".join(f"{k} ({v})" for k, v in required.items()))


def unified_schema(schemas: list[pa.Schema]) -> pa.Schema:
    distinct = list({s.remove_metadata(): None for s in schemas})
    try:
        schema = pa.unify_schemas(distinct, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise InputError("column types", str(err), "the same type for a column in every file") from None
    # Strings: one type for all (some writers use string, pandas 3 uses large_string).
    fields = [pa.field(f.name, pa.large_string()) if pa.types.is_string(f.type) else f
              for f in schema]
    return pa.schema(fields)


def aggregate(files: list[Path], output: str | os.PathLike, kind: str = "auto") -> dict:
    """Merge ``files`` into ``output`` (parquet).  Returns counts {kind, files, rows, cells}."""
    files = [Path(f) for f in files]
    if not files:
        raise InputError("inputs", [], "at least one parquet file")
    check_output(output, "output", (".parquet",))  # before reading 100k files
    schemas = read_schemas(files)
    if kind == "auto":
        kind = detect_kind(schemas)
    if kind not in CONTRACTS:
        raise InputError("kind", kind, ", ".join(sorted(CONTRACTS)))
    check_schemas(files, schemas, kind)
    schema = unified_schema(schemas)
    if kind == "theory":
        return _aggregate_theory(files, schema, output)

    owner: dict[str, str] = {}  # cell_id -> file that holds it
    duplicates: dict[str, set[str]] = {}
    rows = 0
    pending: list[pa.RecordBatch] = []  # cell files are small: write row groups of ≥ 64k rows
    pending_rows = 0
    claims: dict[str, list[tuple[str, str]]] = {}  # file -> (column, value) its path claims
    wrong: dict[str, list[str]] = {}  # file -> how its rows contradict its path
    with atomic_path(output) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for tagged in _scan(files, schema):
                batch = tagged.record_batch
                if batch.num_rows == 0:
                    continue
                path = tagged.fragment.path
                if path not in claims:
                    claims[path] = [(name, text) for name, text
                                    in path_params(path, IDENTITY_COLUMNS).items()
                                    if name in batch.schema.names]
                for name, text in claims[path]:
                    found = _mismatch(batch.column(name), text)
                    if found is not None:
                        wrong.setdefault(path, []).append(f"{name}={found} in its rows, {name}={text} in its path")
                ids = batch.column("cell_id")
                if ids.null_count:
                    raise InputError("cell_id", None, f"a cell id in every row (empty in {path})")
                for cid in pc.unique(ids).to_pylist():
                    first = owner.setdefault(cid, path)
                    if first != path:
                        duplicates.setdefault(cid, {first}).add(path)
                pending.append(batch)
                pending_rows += batch.num_rows
                rows += batch.num_rows
                if pending_rows >= _ROW_GROUP:
                    writer.write_table(pa.Table.from_batches(pending, schema), row_group_size=_ROW_GROUP)
                    pending, pending_rows = [], 0
            if pending:
                writer.write_table(pa.Table.from_batches(pending, schema), row_group_size=_ROW_GROUP)
        if wrong:
            lines = [f"{path}: {'; '.join(why)}" for path, why in list(wrong.items())[:_MAX_NAMED]]
            more = f" (and {len(wrong) - _MAX_NAMED} more files)" if len(wrong) > _MAX_NAMED else ""
            raise InputError(f"{kind} cell files", " | ".join(lines) + more,
                             "files whose rows hold the parameters their path names (key=value "
                             "folders, results/cells/<study>/<param>=<value>/…): a file moved or "
                             "copied to another cell's place; remove it and rerun")
        if duplicates:
            lines = [f"cell {cid} in {', '.join(sorted(paths))}"
                     for cid, paths in list(duplicates.items())[:_MAX_NAMED]]
            more = f" (and {len(duplicates) - _MAX_NAMED} more cells)" if len(duplicates) > _MAX_NAMED else ""
            raise InputError("cell_id", " | ".join(lines) + more,
                             "each cell in exactly one file (remove the stale copies)")
    return {"kind": kind, "files": len(files), "rows": rows, "cells": len(owner)}


#: Parameters a cell path's ``name=value`` folders may claim and the rows must hold (grid.py
#: PATH_ORDER).  Left out: batch_size, eval_size, steps, checkpoints and inits, which a cell may
#: record as what it really used rather than what its path asked for.
IDENTITY_COLUMNS = ("dataset", "preprocess", "loss", "n_inputs", "activation", "noise", "noise_var",
                    "dropout_input", "init", "optimizer", "lr", "width", "depth", "sigma_w2",
                    "sigma_b2", "keep_rate", "seed")


def _mismatch(column, text: str):
    """None when every value of ``column`` is spelled ``text`` (canonical numbers), else the
    offending values as text."""
    values = pc.unique(column).to_pylist()
    bad = [v for v in values if v is None or value_text(v) != text]
    if not bad:
        return None
    return ",".join("null" if v is None else value_text(v) for v in bad[:3])


def _scan(files: list[Path], schema: pa.Schema, chunk: int = 2048):
    """Record batches tagged with their file, a few thousand files per dataset at a time (a
    dataset keeps every fragment's metadata: one over 100k files would hold GBs)."""
    for lo in range(0, len(files), chunk):
        dataset = ds.dataset([str(f) for f in files[lo:lo + chunk]], schema=schema, format="parquet")
        yield from dataset.scanner(batch_size=1 << 16, fragment_readahead=16).scan_batches()


def _aggregate_theory(files: list[Path], schema: pa.Schema, output) -> dict:
    """Theory tables are small: concatenate, drop exact repeats of a grid point, and refuse a
    grid point that two files give different values for."""
    tables = []
    for i, path in enumerate(files):
        table = pq.read_table(path).cast(_subschema(schema, pq.read_schema(path)))
        for name in schema.names:
            if name not in table.column_names:
                table = table.append_column(name, pa.nulls(table.num_rows, schema.field(name).type))
        table = table.select(schema.names)
        tables.append(table.append_column("__file", pa.array([i] * table.num_rows, pa.int32())))
    frame = pa.concat_tables(tables).to_pandas()
    key = [c for c in THEORY_KEY if c in frame.columns]
    values = [c for c in frame.columns if c not in key and c != "__file"
              and c not in ("mfpipe_version", "git_commit")]
    deduped = frame.drop_duplicates(subset=key + values)
    clash = deduped[deduped.duplicated(subset=key, keep=False)]
    if not clash.empty:
        lines = []
        for point, grp in list(clash.groupby(key, dropna=False))[:_MAX_NAMED]:
            names = sorted({str(files[i]) for i in grp["__file"]})
            lines.append(f"{dict(zip(key, point))} differs between {', '.join(names)}")
        raise InputError("theory grid point", " | ".join(lines),
                         "one set of values per grid point (regenerate the stale theory file)")
    out = pa.Table.from_pandas(deduped.drop(columns="__file").sort_values(key), schema=schema,
                               preserve_index=False)
    with atomic_path(output) as tmp:
        pq.write_table(out, tmp, compression="zstd")
    return {"kind": "theory", "files": len(files), "rows": out.num_rows, "cells": out.num_rows}


def _subschema(schema: pa.Schema, present: pa.Schema) -> pa.Schema:
    return pa.schema([schema.field(name) for name in present.remove_metadata().names])
