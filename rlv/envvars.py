"""Environment variables set for a while and then put back: the CLI's commands run in-process
under the tests (CliRunner), and a launch's driver lives on in a notebook, so nothing rlv sets
for one command may outlive it. Imports nothing heavy (no torch, no Ray)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def temporary_env(name: str, value: str | None) -> Iterator[None]:
    """$`name` is `value` inside the block, then as it was: its old value back, or unset again
    if it was unset. `value` None leaves the variable alone (an option not given)."""
    if value is None:
        yield
        return
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
