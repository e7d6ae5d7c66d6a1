"""Waiting on observable states, and holding trials where a test needs them (rlv/service/hold.py).

A test that kills or races holds a trial at a checkpointed epoch, waits until the trial says it is
held, acts, then releases it: no guessed time decides what the test sees.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

from rlv.service.hold import HOLD_ENV

__all__ = ["HOLD_ENV", "Gates", "alive", "checkpoint_epoch", "descends_from", "wait_for"]


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `predicate` until it holds; fail naming `what` after `timeout_s` (a bound, not a
    guess: the state comes much sooner on any machine the suite runs on)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False


def descends_from(pid: int, ancestor: int) -> bool:
    """Whether `ancestor` is `pid` or one of its parents: so a test kills only what it started."""
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(_stat(pid)[1])
        except OSError:
            return False
    return False


def checkpoint_epoch(store: Path, sweep: str, trial: str) -> int:
    """The epoch of the committed checkpoint a trial keeps in the store: the one the driver's
    committed.json names in an attempt's folder (rlv/store/checkpoints.py); 0 if none yet. The
    driver writes the pointer when it handles the report, after the trial has gone on (or is
    held): wait for the epoch expected rather than read it once."""
    import json

    import torch

    folder = store / "_checkpoints" / sweep / trial
    try:
        committed = json.loads((folder / "committed.json").read_text())
    except FileNotFoundError:
        return 0  # nothing committed yet
    state = (folder / f"attempt-{committed['attempt']}" / committed["file"]).read_bytes()
    return int(torch.load(io.BytesIO(state), weights_only=True)["epoch"])


class Gates:
    """A $RLV_HOLD_DIR folder: hold trials, see them held, release them, read what each trained."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder

    @property
    def env(self) -> dict[str, str]:
        return {HOLD_ENV: str(self.folder)}

    def hold(self, trial: str, epoch: int) -> None:
        (self.folder / f"{trial}.hold").write_text(str(epoch))

    def held(self) -> dict[str, int]:
        """Trial -> PID of each trial held now or before."""
        return {p.stem: int(p.read_text()) for p in self.folder.glob("*.held")}

    def release(self, trial: str) -> None:
        (self.folder / f"{trial}.hold").unlink()

    def trained_by(self, trial: str, pid: int) -> list[int]:
        """The epochs process `pid` trained of `trial`."""
        path = self.folder / f"{trial}.epochs"
        lines = path.read_text().splitlines() if path.exists() else []
        return [int(e) for e, p in (line.split() for line in lines) if int(p) == pid]

    def attempts(self, trial: str) -> list[list[int]]:
        """The epochs each process of `trial` trained, in the order the processes ran."""
        runs: dict[str, list[int]] = {}
        for line in (self.folder / f"{trial}.epochs").read_text().splitlines():
            epoch, pid = line.split()
            runs.setdefault(pid, []).append(int(epoch))
        return list(runs.values())
