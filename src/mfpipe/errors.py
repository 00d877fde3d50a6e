"""Errors that carry the name of the offending field and what it allows.

Every bad input in mfpipe (CLI argument, config field, cell parameter, table column) raises
``InputError``; the CLI turns it into exit code 2 with the message on stderr.
"""

from __future__ import annotations


class InputError(ValueError):
    """A bad value for a named field: the message names the field and the allowed values."""

    def __init__(self, field: str, value: object, allowed: str):
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}: got {value!r}; allowed: {allowed}")
