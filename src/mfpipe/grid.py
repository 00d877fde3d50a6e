"""Config → cells; stable cell ids and paths.  The single source of truth for cell identity.

A cell is a dict of plain parameters (str/int/float/bool).  Its identity is its parameters
with numbers in canonical form (``format_number``), so ``1``, ``1.0`` and ``1.00`` are one cell.
"""

from __future__ import annotations

import hashlib
import json

from mfpipe.values import clean_float, format_number


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
