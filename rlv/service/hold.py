"""A test hook: record the epochs each attempt of a trial trains, and hold a trial at an epoch.

Tests that kill a trial or a driver must act while a trial is certainly mid-run with a checkpoint,
and must see which epochs a resumed attempt trained; neither may rest on a guessed time. Off (one
environment lookup per epoch) unless $RLV_HOLD_DIR names a folder on the trial's machine; the
driver passes the variable on to its trials with rlv's other path variables. In that folder:

- TRIAL_ID.epochs gets a line "EPOCH PID" after every epoch a process of that trial trains, so a
  resumed attempt's first line shows where it resumed (its checkpoint's epoch + 1);
- TRIAL_ID.hold, holding an epoch number E, stops the trial after epoch E is checkpointed and
  reported: it writes TRIAL_ID.held (its PID) and waits until TRIAL_ID.hold is removed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

HOLD_ENV = "RLV_HOLD_DIR"
POLL_S = 0.1


def _folder() -> Path | None:
    value = os.environ.get(HOLD_ENV)
    return Path(value) if value else None


def trained(trial_id: str, epoch: int) -> None:
    """Note that this process trained `epoch` of `trial_id`."""
    folder = _folder()
    if folder is not None:
        with open(folder / f"{trial_id}.epochs", "a") as f:
            f.write(f"{epoch} {os.getpid()}\n")


def hold_after(trial_id: str, epoch: int) -> None:
    """Wait here while TRIAL_ID.hold asks to hold this trial after `epoch`."""
    folder = _folder()
    if folder is None:
        return
    gate = folder / f"{trial_id}.hold"
    try:
        wanted = int(gate.read_text().strip())
    except (OSError, ValueError):
        return
    if wanted != epoch:
        return
    held = folder / f"{trial_id}.held"
    held.with_suffix(".tmp").write_text(str(os.getpid()))
    held.with_suffix(".tmp").rename(held)  # whole, never half-written, when the test reads it
    while gate.exists():
        time.sleep(POLL_S)
