"""A failed trial's reason in one line, read from the error file Tune keeps for it."""

from __future__ import annotations

import os
from typing import Any

NO_ERROR_TEXT = "failed (no error message recorded)"
# error file -> (its size when read, its last line): Tune appends each failure to the file, so
# it is read again only when it has grown
_error_lines: dict[str, tuple[int, str]] = {}


def last_line(text: str) -> str:
    """The last non-empty line of an error text (the exception and its message), or ""."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def error_line(trial: Any) -> str:
    """The last non-empty line of the Tune trial's latest error."""
    path = getattr(trial, "error_file", None) or ""
    try:
        size = os.stat(path).st_size if path else -1
    except OSError:
        size = -1
    if size < 0:
        return NO_ERROR_TEXT
    cached = _error_lines.get(path)
    if cached is None or cached[0] != size:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            return NO_ERROR_TEXT
        cached = _error_lines[path] = (size, last_line(text) or NO_ERROR_TEXT)
    return cached[1]
