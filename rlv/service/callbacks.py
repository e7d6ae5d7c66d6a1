"""Driver-side Tune callbacks: the store writer, the sweep's status file, and terminal progress.

Results flow one way: trial -> Tune -> these callbacks -> the store. Epoch rows are held per trial
until a report says they are committed (a checkpoint covers them, or the trial finished); if the
trial fails first, they are dropped, because the retry re-runs those epochs from the checkpoint.
Committed rows and finished trials' rows are queued and written on the heartbeat (every
HEARTBEAT_S), one batch file per table; once a trial's row is written, its running checkpoint is
deleted (it keeps its weights only). A driver killed with rows queued loses nothing: their trials
re-run from their checkpoints. The work per result does not grow with the sweep: the status
file, which lists every started trial, is rewritten on the heartbeat, at once only on a failure.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial

from rlv import columns as col
from rlv.errors import RlvError
from rlv.service.trainable import (
    ATTEMPT_KEY,
    CHECKPOINT_KEY,
    COMMITTED_KEY,
    EPOCH_KEY,
    HISTORY_KEY,
    IMAGES_KEY,
    ROW_KEY,
    decode_images,
)
from rlv.store import checkpoints, claim
from rlv.store.files import HEARTBEAT_S, open_store
from rlv.store.writer import StoreWriter

NO_ERROR_TEXT = "failed (no error message recorded)"
# error file -> (its size when read, its last line): Tune appends each failure to the file, so
# the status heartbeat and the progress lines read it again only when it has grown
_error_lines: dict[str, tuple[int, str]] = {}


def last_line(text: str) -> str:
    """The last non-empty line of an error text (the exception and its message), or ""."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def error_line(trial: Trial) -> str:
    """The last non-empty line of the trial's latest error."""
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


class StoreCallback(Callback):
    """Writes epoch rows, trial rows and images through one StoreWriter; keeps the status file."""

    def __init__(self, store: str, sweep: str, keep_model: bool = True) -> None:
        self.store = store
        self.sweep = sweep
        self.keep_model = keep_model
        self._fs, self._root = open_store(store)
        self._writer: StoreWriter | None = None
        self._pending: dict[str, list[dict[str, Any]]] = {}
        # fencing (rlv/store/checkpoints.py): each trial's current attempt, and the attempts
        # seen to fail, whose results (should any still arrive) commit nothing
        self._attempt: dict[str, str] = {}
        self._failed_attempts: set[str] = set()
        # each trial's committed checkpoint (committed.json), read from the store once per trial
        self._committed: dict[str, checkpoints.Committed | None] = {}
        self._last_status = 0.0
        self._last_flush = time.time()

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment
        return {"store": self.store, "sweep": self.sweep, "keep_model": self.keep_model}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["store"], state["sweep"], state["keep_model"])  # type: ignore[misc]

    @property
    def writer(self) -> StoreWriter:
        if self._writer is None:
            self._writer = StoreWriter(self.store, self.sweep)
        return self._writer

    def setup(self, stop: Any = None, num_samples: int | None = None,
              total_num_samples: int | None = None, **info: Any) -> None:
        self.writer  # noqa: B018  (load the store's keys before the first result)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial,
                        result: dict[str, Any], **info: Any) -> None:
        key = trial.trial_id
        attempt = str(result.get(ATTEMPT_KEY, ""))
        if attempt in self._failed_attempts:
            return  # a stale attempt: nothing it reports is committed
        if attempt:
            self._attempt[key] = attempt
        folder = checkpoints.trial_dir(self._root, self.sweep, str(trial))
        if EPOCH_KEY in result:
            self._pending.setdefault(key, []).append(result[EPOCH_KEY])
        if HISTORY_KEY in result:  # a resumed trial's committed epochs: the missing ones land
            self._pending.setdefault(key, []).extend(result.pop(HISTORY_KEY))
        if result.get(COMMITTED_KEY):
            if CHECKPOINT_KEY in result:  # before its epochs: the rows never outrun the pointer
                new = checkpoints.Committed(**result[CHECKPOINT_KEY])
                if key not in self._committed:  # a resumed trial: its pointer from before
                    self._committed[key] = checkpoints.read_committed(self._fs, folder)
                checkpoints.promote(self._fs, folder, new, self._committed[key])
                self._committed[key] = new
            self.writer.queue_epochs(self._pending.pop(key, []))
        if ROW_KEY in result:
            self._committed.pop(key, None)  # done: the writer's flush removes the pointer
            if attempt and self.keep_model:
                checkpoints.promote_model(self._fs, folder, attempt)
            # popped: Tune keeps each trial's last result in memory, and the images are in the
            # store now (the row follows with the next flush)
            self.writer.queue_trial(result[ROW_KEY], decode_images(result.pop(IMAGES_KEY)))

    def _flush(self, force: bool = False) -> None:
        """Write the queued rows; the trials whose rows are in the store keep weights only."""
        now = time.time()
        if not self.writer.queued or (not force and now - self._last_flush < HEARTBEAT_S):
            return
        taken = claim.taken_over(self.store, self.sweep)
        if taken is not None:  # another launch holds the sweep now: its driver writes
            raise RlvError(f"sweep {self.sweep!r} was taken over by {taken.holder()}; this "
                           "driver writes nothing more")
        self._last_flush = now
        for trial_id in self.writer.flush():
            checkpoints.finish(self._fs, self._root, self.sweep, trial_id, self.keep_model)

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        # the heartbeat, throttled to HEARTBEAT_S: Tune ends a step after each event it handles
        # (a result included) and every 0.1 s without one (while every trial is deep in FID)
        self._flush()
        self._write_status(trials)

    def _drop(self, trial: Trial) -> None:
        self._pending.pop(trial.trial_id, None)
        failed = self._attempt.pop(trial.trial_id, None)
        if failed:
            self._failed_attempts.add(failed)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial,
                         **info: Any) -> None:
        self._drop(trial)
        self._write_status(trials, force=True)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        self._drop(trial)
        self._write_status(trials, force=True)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self._flush(force=True)
        self._write_status(trials, force=True, ended=True)

    def _write_status(self, trials: list[Trial], force: bool = False, ended: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_status < HEARTBEAT_S:
            return
        self._last_status = now
        entries = {}
        for t in trials:
            if t.status == Trial.PENDING and not t.num_failures:
                continue  # not started: nothing to say that the store does not
            last = t.last_result or {}
            entry: dict[str, Any] = {"status": t.status, "epoch": last.get(col.EPOCH, 0),
                                     "attempts": t.num_failures + 1}
            if t.status == Trial.ERROR:
                entry["error"] = error_line(t)
            if last.get("node_ip"):  # Tune adds where the trial ran to every result
                entry["node"] = f"{last['node_ip']} pid {last.get('pid', '?')}"
            entries[str(t)] = entry
        status = {"sweep": self.sweep, "updated_at": datetime.now(UTC).isoformat(),
                  "ended": ended, "driver": f"{socket.gethostname()}:{os.getpid()}",
                  "trials": entries}
        self.writer.write_status(status)


class ProgressCallback(Callback):
    """One line per event in the terminal; a running trial's epochs at most every `every_s`."""

    def __init__(self, total: int, echo: Callable[[str], None], every_s: float = 30.0) -> None:
        self.total = total
        self.echo = echo
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._started = time.monotonic()

    def __getstate__(self) -> dict[str, Any]:
        return {"total": self.total, "every_s": self.every_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["total"], print, state["every_s"])  # type: ignore[misc]

    def _counts(self, trials: list[Trial]) -> str:
        done = sum(t.status == Trial.TERMINATED for t in trials)
        running = sum(t.status == Trial.RUNNING for t in trials)
        failed = sum(t.status == Trial.ERROR for t in trials)
        elapsed = time.monotonic() - self._started
        return f"[{done}/{self.total} done, {running} running, {failed} failed, {elapsed:.0f} s]"

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        self.echo(f"{self._counts(trials)} {trial} started")

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial,
                        result: dict[str, Any], **info: Any) -> None:
        if ROW_KEY in result:
            return
        row, now = result.get(EPOCH_KEY, {}), time.monotonic()
        name = str(trial)
        if now - self._last.get(name, 0.0) >= self.every_s:
            self._last[name] = now
            self.echo(f"{self._counts(trials)} {name} epoch {row.get(col.EPOCH)}: neg ELBO "
                      f"{row.get(col.TRAIN_NEG_ELBO, float('nan')):.3f}  "
                      f"{row.get(col.EPOCH_TIME_S, 0.0):.2f} s/epoch")

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial,
                          **info: Any) -> None:
        row = (trial.last_result or {}).get(ROW_KEY, {})
        self.echo(f"{self._counts(trials)} {trial} finished in {row.get(col.TRIAL_SECONDS, 0):.0f} s: "
                  f"test neg ELBO {row.get(col.TEST_NEG_ELBO, float('nan')):.3f}, "
                  f"{col.fid_text(row.get(col.FID))}")

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial,
                         **info: Any) -> None:
        self.echo(f"{self._counts(trials)} {trial} failed (attempt {trial.num_failures}); "
                  f"retrying from its last checkpoint: {error_line(trial)}")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        self.echo(f"{self._counts(trials)} {trial} FAILED: {error_line(trial)}")
