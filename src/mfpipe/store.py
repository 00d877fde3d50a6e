"""Parquet files: atomic writes and provenance.

``write_table_atomic`` writes to a temporary file in the target's directory and renames it
into place, so a killed job never leaves a partial output file (Snakemake treats any existing
output as done).  ``provenance`` gives the columns every result row carries.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from mfpipe import __version__


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_table_atomic(table, path: str | os.PathLike) -> Path:
    """Write a pandas DataFrame or pyarrow Table to ``path`` (.parquet or .csv) atomically."""
    path = Path(path)
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_path(path) as tmp:
        if path.suffix == ".csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, tmp)
        else:
            pq.write_table(table, tmp)
    return path


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The git commit of the mfpipe source tree, or '' when not in a git checkout."""
    src = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def provenance(**extra) -> dict:
    """Provenance columns for result rows: mfpipe version, git commit, plus what the caller adds
    (torch version, device, wall time...)."""
    return {"mfpipe_version": __version__, "git_commit": git_commit(), **extra}
