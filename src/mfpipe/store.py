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
from mfpipe.errors import InputError


def current_umask() -> int:
    """The process umask (read from /proc where possible: setting it to read it is racy)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def output_mode() -> int:
    """Permissions a new output file gets: 0666 less the umask (0644 with umask 022), as for
    any file a program creates with open()."""
    return 0o666 & ~current_umask()


def _unwritable(path: Path, field: str, err: OSError) -> InputError:
    reason = err.strerror or str(err)
    where = f" ({err.filename})" if getattr(err, "filename", None) and str(err.filename) != str(path) else ""
    return InputError(field, str(path), f"a path whose directory exists or can be created and is "
                                        f"writable; here: {reason}{where}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, field: str = "output") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The file gets the permissions the umask gives (0644 with umask 022; the temporary file is
    created owner-only and widened just before the rename).  On any exception the temporary
    file is removed and ``path`` is left untouched.  A directory that cannot be made or written
    raises ``InputError`` naming ``field`` and the path (exit 2), not a traceback.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _unwritable(path, field, err) from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:  # name the directory, not the temporary file
        raise _unwritable(path, field, OSError(err.errno, err.strerror, str(path.parent))) from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            if tmp_path.exists():
                os.chmod(tmp_path, output_mode())
            os.replace(tmp_path, path)
        except OSError as err:
            raise _unwritable(path, field, err) from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def check_output(path: str | os.PathLike, field: str = "output",
                 suffixes: tuple[str, ...] | None = (".parquet", ".csv")) -> Path:
    """Check, before any work, that ``path`` can be written by ``atomic_path``; return it.

    Raises ``InputError`` naming ``field`` when the suffix is not one of ``suffixes`` (None:
    any), the path is a directory, or its directory neither exists nor can be created, or is
    not writable (probed by creating and removing a temporary file in the nearest existing
    directory, so read-only mounts are caught even for root).  Creates nothing.
    """
    out = Path(path)
    if suffixes is not None and out.suffix.lower() not in tuple(s.lower() for s in suffixes):
        raise InputError(field, str(path), "a path ending in " + " or ".join(suffixes))
    if out.is_dir():
        raise InputError(field, str(path), "a file path (this is a directory)")
    parent = out.parent
    while not parent.exists():
        if parent.is_symlink():
            raise InputError(field, str(path), f"a path whose directory can be created ({parent} is a "
                                                "broken link)")
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(field, str(path), f"a path whose directory can be created ({parent} is a file)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".mfpipe-write-check.", dir=parent)
    except OSError as err:
        raise _unwritable(out, field, OSError(err.errno, err.strerror, str(parent))) from None
    os.close(fd)
    os.unlink(probe)
    return out


def write_table_atomic(table, path: str | os.PathLike, field: str = "output") -> Path:
    """Write a pandas DataFrame or pyarrow Table to ``path`` (.parquet or .csv) atomically
    (``field`` names the path in the error when its directory is not writable)."""
    path = Path(path)
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_path(path, field) as tmp:
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


# ---------------------------------------------------------------------------------------------
# Reading tables and checking their columns (used by aggregate, fit and figures).
# ---------------------------------------------------------------------------------------------

#: Type families a column contract can ask for.  ``number`` accepts any integer or float
#: column (an integer σ_w² of 2 is still a number); ``integer`` only integers; ``bool`` only
#: booleans; ``string`` any (large) string or dictionary-of-strings column.
TYPE_FAMILIES = ("number", "integer", "float", "bool", "string")


def arrow_type_family(arrow_type) -> str:
    """The type family (one of ``TYPE_FAMILIES`` or ``other``/``null``) of a pyarrow type."""
    import pyarrow.types as pat

    if pat.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pat.is_boolean(arrow_type):
        return "bool"
    if pat.is_integer(arrow_type):
        return "integer"
    if pat.is_floating(arrow_type):
        return "float"
    if pat.is_string(arrow_type) or pat.is_large_string(arrow_type) or pat.is_string_view(arrow_type):
        return "string"
    if pat.is_null(arrow_type):
        return "null"
    return "other"


def family_accepts(wanted: str, found: str) -> bool:
    """Whether a column of family ``found`` satisfies a contract asking for ``wanted``.

    An all-null column (``null``) is accepted for anything: it carries no wrong values."""
    if found == "null" or wanted == found:
        return True
    if wanted == "number":
        return found in ("integer", "float")
    if wanted == "float":
        return found == "integer"
    return False


def schema_problems(schema, required: dict, optional: dict | None = None) -> list[str]:
    """Problems of a pyarrow schema against a column contract.

    ``required`` and ``optional`` map column name -> type family.  Returns human-readable
    problems (missing required columns, columns of the wrong family); empty when it conforms.
    """
    names = set(schema.names)
    problems = [f"missing column {name!r} ({family})" for name, family in required.items()
                if name not in names]
    for name, family in {**(optional or {}), **required}.items():
        if name in names:
            found = arrow_type_family(schema.field(name).type)
            if not family_accepts(family, found):
                problems.append(f"column {name!r} is {schema.field(name).type} but must be {family}")
    return problems


def frame_problems(frame, required: dict, optional: dict | None = None) -> list[str]:
    """``schema_problems`` for a pandas DataFrame."""
    import pyarrow as pa

    schema = pa.Schema.from_pandas(frame.head(0), preserve_index=False)
    return schema_problems(schema, required, optional)


def read_table(path: str | os.PathLike, columns: list[str] | None = None):
    """Read one .parquet or .csv (optionally .csv.gz) file into a pandas DataFrame.

    ``columns`` restricts what is read (every listed column must exist).  Raises ``InputError``
    naming the file for a missing file, an unknown suffix or missing columns.
    """
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise InputError("input", str(path), "an existing .parquet or .csv file")
    name = path.name.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        if columns is not None:
            present = set(pq.read_schema(path).names)
            missing = [c for c in columns if c not in present]
            if missing:
                raise InputError(f"columns of {path}", missing, f"columns present: {sorted(present)}")
        return pq.read_table(path, columns=columns).to_pandas()
    if name.endswith(".csv") or name.endswith(".csv.gz"):
        frame = pd.read_csv(path, low_memory=False)
        if columns is not None:
            missing = [c for c in columns if c not in frame.columns]
            if missing:
                raise InputError(f"columns of {path}", missing, f"columns present: {sorted(frame.columns)}")
            frame = frame[columns]
        return frame
    raise InputError("input", str(path), "a .parquet, .csv or .csv.gz file")
