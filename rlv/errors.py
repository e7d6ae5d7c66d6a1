"""The one exception rlv raises for user mistakes; the CLI prints it as one line."""

from __future__ import annotations


class RlvError(Exception):
    """A bad input or environment that the user can fix (message says what and how)."""

    exit_code = 2  # what the CLI exits with after printing the message


class SweepBusy(RlvError):
    """The sweep is another driver's (its claim in the store): nothing wrong with the input,
    the launch just does not run; exit 1, as for a sweep whose trials failed."""

    exit_code = 1
