"""The one exception rlv raises for user mistakes; the CLI prints it as one line."""

from __future__ import annotations


class RlvError(Exception):
    """A bad input or environment that the user can fix (message says what and how)."""
