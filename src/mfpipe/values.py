"""Parsing and canonical formatting of grid values.

Grid arguments (CLI and config) accept a single number, a comma list ``1,1.5,2`` and an
inclusive range ``start:stop:count`` (``1:4:31`` gives 1.0, 1.1, …, 4.0).  Values are plain
Python ``float``/``int`` (never numpy scalars: Snakemake ignores those in change detection),
rounded to 12 significant digits so ``np.linspace`` noise (0.09999999999999999) never leaks
into cell identities or paths.  ``format_number`` is the one canonical spelling of a number
in paths and ids: ``1``, ``1.0`` and ``1.00`` are the same cell.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Iterable

from mfpipe.errors import InputError

SIGNIFICANT_DIGITS = 12
#: Most values one range ``start:stop:count`` may give (checked before the list is built: a
#: count of 10^9 would otherwise fill memory before any other check could run).
MAX_RANGE_COUNT = 1_000_000


def count_text(n: int) -> str:
    """A count people can read at a glance: ``100,000,000 (10^8)``."""
    n = int(n)
    if n >= 1000 and 10 ** (len(str(n)) - 1) == n:
        return f"{n:,} (10^{len(str(n)) - 1})"
    return f"{n:,}"


def clean_float(x: float) -> float:
    """Round to 12 significant digits and return a plain float (−0.0 becomes 0.0)."""
    x = float(x)
    if not math.isfinite(x) or x == 0.0:
        return 0.0 if x == 0.0 else x
    return float(f"{x:.{SIGNIFICANT_DIGITS}g}") + 0.0


def format_number(x: float | int) -> str:
    """Canonical text of a number: shortest round-trip form, integers without a decimal point.

    >>> format_number(1.0), format_number(2), format_number(0.1 + 0.2), format_number(1e-4)
    ('1', '2', '0.3', '0.0001')
    """
    x = clean_float(x)
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return format(Decimal(repr(x)), "f")  # 1e-05 -> 0.00001: readable in paths


def parse_values(text: str | float | int | Iterable, field: str, *, integer: bool = False) -> list:
    """Parse ``1,1.5,2`` / ``1:4:31`` / a number / a list into a list of plain numbers.

    Raises ``InputError`` naming ``field`` for anything malformed.
    """
    allowed = "a number, a comma list like 1,1.5,2, or an inclusive range start:stop:count like 1:4:31"
    if isinstance(text, bool):
        raise InputError(field, text, allowed)
    if isinstance(text, (int, float)):
        items: list = [text]
    elif isinstance(text, str):
        items = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                raise InputError(field, text, allowed)
            if ":" in part:
                items.extend(_parse_range(part, field, allowed))
            else:
                items.append(_parse_number(part, field, allowed, text))
    else:
        items = []
        for part in text:
            items.extend(parse_values(part, field, integer=integer))
    out = []
    for v in items:
        if integer:
            if float(v) != int(float(v)):
                raise InputError(field, v, "integers")
            out.append(int(float(v)))
        else:
            out.append(clean_float(v))
    return out


def _parse_number(part: str, field: str, allowed: str, whole: str) -> float:
    try:
        v = float(part)
    except ValueError:
        raise InputError(field, whole, allowed) from None
    if not math.isfinite(v):
        raise InputError(field, whole, allowed + " (finite)")
    return v


def _parse_range(part: str, field: str, allowed: str) -> list[float]:
    pieces = part.split(":")
    if len(pieces) != 3:
        raise InputError(field, part, allowed)
    start, stop = (_parse_number(p, field, allowed, part) for p in pieces[:2])
    try:
        count = int(pieces[2])
    except ValueError:
        raise InputError(field, part, allowed + " (count must be an integer ≥ 1)") from None
    if count < 1 or (count == 1 and start != stop):
        raise InputError(field, part, allowed + " (count ≥ 2 unless start == stop)")
    if count > MAX_RANGE_COUNT:
        raise InputError(field, part, f"a range of at most {count_text(MAX_RANGE_COUNT)} values "
                                      f"(this one asks for {count_text(count)})")
    if count == 1:
        return [start]
    step = (stop - start) / (count - 1)
    return [start + i * step for i in range(count)]
