"""The driver's one Tune callback: each Tune event becomes one Event, handed with the sweep's
state (a SweepView) to the sinks, in order: the store (store_sink.py), the TensorBoard curves
(curves.py), the dashboard's progress actor (dashboard_sink.py), the terminal (terminal.py).

Results flow one way: trial -> tune.report -> Tune -> SweepRecorder.on_trial_result -> Event ->
StoreSink -> StoreWriter -> a Parquet batch file. The recorder alone reads Tune's results and
decides what they mean:
- fencing (rlv/store/checkpoints.py): each report carries its attempt's token; once an attempt
  is seen to fail, whatever it still reports is ignored;
- commits: a trial's epoch rows are held until a report says a checkpoint covers them (or the
  trial finished); they then travel as the event's `committed` rows with that checkpoint. A
  trial that fails first loses them: its retry re-runs those epochs from the checkpoint;
- the trials' states (started, running at epoch E on node N, retrying, failed, finished), kept
  as counts too, so that no event costs work that grows with the sweep;
- one heartbeat, every HEARTBEAT_S: the store's flush and status file, a remote store's curves
  and the progress actor all move on it.
Sinks only read what they are handed; none changes Tune's results. After every sink has had a
result, the recorder drops its images and a resumed trial's history from it: Tune keeps each
trial's last result for the rest of the sweep, and they are in the store by then.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from ray.tune import Callback
from ray.tune.experiment import Trial

from rlv import columns as col
from rlv.service.errors import error_line
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
from rlv.store.checkpoints import Committed
from rlv.store.files import HEARTBEAT_S
from rlv.store.status import FAILED, FINISHED, PENDING, RUNNING, SweepStatus, progress_counts

# Event kinds
START, RESULT, FINISH, RETRY, FAIL, HEARTBEAT, END = (
    "start", "result", "finish", "retry", "fail", "heartbeat", "end")


@dataclass
class TrialState:
    status: str = RUNNING  # rlv.store.status's words: RUNNING, PENDING (to retry), FAILED, ...
    epoch: int = 0  # the last epoch it reported
    attempts: int = 1
    node: str = ""  # "IP pid N": where it runs (the pid of its ImplicitFunc actor)
    error: str = ""  # its last failure, one line


@dataclass(frozen=True)
class Event:
    kind: str
    trial: str = ""  # the trial id
    attempt: str = ""  # the reporting attempt's token
    epoch_row: Mapping[str, Any] | None = None  # an epoch just trained (committed or not yet)
    committed: Sequence[Mapping[str, Any]] = ()  # epoch rows this report commits: write them
    checkpoint: Committed | None = None  # the checkpoint that commits them: promote it first
    row: Mapping[str, Any] | None = None  # the finished trial's row (RESULT, FINISH)
    images: Mapping[str, bytes] = field(default_factory=dict)  # its PNGs (RESULT with a row)


@dataclass
class SweepView:
    """The sweep as this launch's driver sees it: every grid trial is in the store already
    (`stored`), started by this launch (`trials`), or pending."""

    sweep: str
    store: str
    total: int  # grid trials
    stored: tuple[str, ...] = ()  # the grid's trials in the store before this launch
    trials: dict[str, TrialState] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    ended: bool = False
    trial_s: float = 0.0  # the finished trials' own wall time, summed
    _counts: Counter[str] = field(default_factory=Counter)

    def set(self, name: str, status: str, **changes: Any) -> TrialState:
        state = self.trials.get(name)
        if state is None:
            state = self.trials[name] = TrialState(status=status)
            self._counts[status] += 1
        elif state.status != status:
            self._counts[state.status] -= 1
            self._counts[status] += 1
            state.status = status
        for key, value in changes.items():
            setattr(state, key, value)
        return state

    def count(self, status: str) -> int:
        return self._counts[status]

    def progress(self) -> str:
        finished = len(self.stored) + self.count(FINISHED)
        running, failed = self.count(RUNNING), self.count(FAILED)
        return progress_counts(finished, running, failed,
                               self.total - finished - running - failed, self.total)

    def names(self, status: str) -> list[str]:
        return sorted(name for name, s in self.trials.items() if s.status == status)

    def status(self) -> SweepStatus:
        """In the shape `rlv status` prints (its lines are the dashboard's progress)."""
        report = SweepStatus(self.sweep, self.store, total=self.total,
                             finished=[*self.stored, *self.names(FINISHED)],
                             driver=f"{socket.gethostname()}:{os.getpid()}",
                             updated_at=datetime.now(UTC).isoformat(timespec="seconds"),
                             driver_alive=not self.ended, ended=self.ended)
        for name, state in self.trials.items():
            if state.status == RUNNING:
                report.running[name] = state.epoch
                report.nodes[name] = state.node
            elif state.status == FAILED:
                report.failed[name] = state.error
        report.pending = (self.total - len(report.finished) - len(report.running)
                          - len(report.failed))
        return report

    def status_file(self) -> dict[str, Any]:
        """The driver's status file (STORE/_status/SWEEP.json): every trial this launch started."""
        entries = {}
        for name, state in self.trials.items():
            entry: dict[str, Any] = {"status": state.status, "epoch": state.epoch,
                                     "attempts": state.attempts}
            if state.status == FAILED:
                entry["error"] = state.error
            if state.node:
                entry["node"] = state.node
            entries[name] = entry
        return {"sweep": self.sweep, "updated_at": datetime.now(UTC).isoformat(),
                "ended": self.ended, "driver": f"{socket.gethostname()}:{os.getpid()}",
                "trials": entries}


class Sink(Protocol):
    def handle(self, event: Event, view: SweepView) -> None: ...


def trial_node(result: Mapping[str, Any]) -> str:
    """Where a trial runs, from what Tune adds to every result: "IP pid N"."""
    return f"{result['node_ip']} pid {result.get('pid', '?')}" if result.get("node_ip") else ""


class SweepRecorder(Callback):
    """Tune's events -> Events for the sinks (see the module's docstring)."""

    def __init__(self, view: SweepView, sinks: Sequence[Sink]) -> None:
        self.view = view
        self.sinks = list(sinks)
        self._attempt: dict[str, str] = {}  # trial -> its current attempt's token
        self._failed_attempts: set[str] = set()  # their results commit nothing
        self._pending: dict[str, list[Mapping[str, Any]]] = {}  # trial -> uncommitted epoch rows
        self._rows: dict[str, Mapping[str, Any]] = {}  # trial -> its row, until it completes
        self._beat = time.monotonic()

    def __getstate__(self) -> dict[str, Any]:
        # Tune saves its run config (callbacks included) with the experiment; rlv never restores
        # a Tuner (the store resumes a sweep), so the copy carries nothing
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(SweepView("", "", 0), [])  # type: ignore[misc]

    def _emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.handle(event, self.view)

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        self.view.set(str(trial), RUNNING, attempts=trial.num_failures + 1, node="")
        self._emit(Event(START, str(trial)))

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial,
                        result: dict[str, Any], **info: Any) -> None:
        name = str(trial)
        attempt = str(result.get(ATTEMPT_KEY, ""))
        if attempt in self._failed_attempts:
            return  # a stale attempt: nothing it reports is committed
        if attempt:
            self._attempt[name] = attempt
        self.view.set(name, RUNNING, epoch=int(result.get(col.EPOCH, 0) or 0),
                      node=trial_node(result))
        pending = self._pending.setdefault(name, [])
        epoch_row = result.get(EPOCH_KEY)
        if epoch_row:
            pending.append(epoch_row)
        pending.extend(result.get(HISTORY_KEY, ()))  # a resumed trial's committed epochs
        committed: list[Mapping[str, Any]] = []
        checkpoint = None
        if result.get(COMMITTED_KEY):
            committed = self._pending.pop(name)
            if CHECKPOINT_KEY in result:
                checkpoint = Committed(**result[CHECKPOINT_KEY])
        row = result.get(ROW_KEY)
        images = decode_images(result.get(IMAGES_KEY, {})) if row else {}
        if row:
            self._rows[name] = row
        self._emit(Event(RESULT, name, attempt, epoch_row, committed, checkpoint, row, images))
        result.pop(IMAGES_KEY, None)  # in the store now; Tune would keep them to the end
        result.pop(HISTORY_KEY, None)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial,
                          **info: Any) -> None:
        name = str(trial)
        row = self._rows.pop(name, None) or {}
        self.view.trial_s += float(row.get(col.TRIAL_SECONDS, 0.0))
        self.view.set(name, FINISHED, epoch=int(row.get(col.EPOCHS, 0) or 0))
        self._attempt.pop(name, None)
        self._emit(Event(FINISH, name, row=row))

    def _failed(self, trial: Trial, status: str, kind: str) -> None:
        name = str(trial)
        self._pending.pop(name, None)
        self._rows.pop(name, None)
        failed = self._attempt.pop(name, None)
        if failed:
            self._failed_attempts.add(failed)
        self.view.set(name, status, attempts=trial.num_failures + 1, error=error_line(trial),
                      node="")
        self._emit(Event(kind, name))

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial,
                         **info: Any) -> None:
        self._failed(trial, PENDING, RETRY)  # Tune retries it from its last checkpoint

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        self._failed(trial, FAILED, FAIL)

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        # Tune ends a step after each event it handles and every 0.1 s without one
        now = time.monotonic()
        if now - self._beat >= HEARTBEAT_S:
            self._beat = now
            self._emit(Event(HEARTBEAT))

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self.view.ended = True
        self._emit(Event(END))
