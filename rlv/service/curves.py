"""Live learning curves: TensorBoard event files, one run per trial, written by the driver.

    STORE/tensorboard/SWEEP/TRIAL_ID/events.out.tfevents.*      tensorboard --logdir STORE/tensorboard/SWEEP

Why a sink of the driver's recorder (recorder.py) with tensorboardX's SummaryWriter, and not
Tune's TBXLoggerCallback nor torch's SummaryWriter in the trial:
- trials write only their own checkpoints in the store; the epoch metrics reach the driver anyway;
- Tune's logger writes into Tune's per-experiment trial folders, which change when a sweep is
  launched again (each launch may be a new experiment), and names every tag after Tune's result
  keys; here a trial's run is STORE/tensorboard/SWEEP/TRIAL_ID whatever launch ran it, and the
  tags are stable names built from rlv/columns.py;
- tensorboardX is already installed with ray[tune] and needs neither TensorBoard nor torch to
  write (torch.utils.tensorboard imports TensorBoard itself); TensorBoard is only the viewer.
A trial that is retried or resumed from a checkpoint at epoch k opens its writer again with
`purge_step=k`: TensorBoard then hides the points of the epochs that were run again. A remote
store gets what the event files gained on the driver's heartbeat and when a trial ends.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from tensorboardX import SummaryWriter

from rlv import columns as col
from rlv.service.recorder import END, FAIL, HEARTBEAT, RESULT, RETRY, Event, SweepView
from rlv.store.store import Store

CURVES_DIR = "tensorboard"  # STORE/tensorboard/SWEEP/TRIAL_ID

# tag -> column: per epoch (step = epoch) and once at the end (step = the last epoch)
EPOCH_TAGS = {
    "train/neg_elbo": col.TRAIN_NEG_ELBO,
    "train/re": col.TRAIN_RE,
    "train/rt": col.TRAIN_RT,
    "train/flow_logdet": col.FLOW_LOGDET,
    "train/epoch_time_s": col.EPOCH_TIME_S,
    # eval.test_every: the test split during training, on the same tags as the final values
    "test/neg_elbo": col.TEST_NEG_ELBO,
    "test/re": col.TEST_RE,
    "test/rt": col.TEST_RT,
}
FINAL_TAGS = {
    "test/neg_elbo": col.TEST_NEG_ELBO,
    "test/re": col.TEST_RE,
    "test/rt": col.TEST_RT,
    "test/rt_elbo": col.TEST_RT_ELBO,
    "test/flow_logdet": col.FLOW_LOGDET,
    "test/fid": col.FID,
}


def curves_location(store: str, sweep: str) -> str:
    """The sweep's TensorBoard log folder (a path, or a URI for a remote store)."""
    return f"{store.rstrip('/')}/{CURVES_DIR}/{sweep}"


def tensorboard_command(store: str, sweep: str) -> str:
    """The line `rlv launch` prints: how to watch the sweep's curves."""
    location = curves_location(store, sweep)
    if "://" not in location:
        location = os.path.abspath(os.path.expanduser(location))
    return f"tensorboard --logdir {location} --host 127.0.0.1"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return None if col.is_nan(value) else value  # NaN (FID skipped): no point


class CurvesSink:
    """Writes each trial's epoch metrics, and its test metrics and FID at the end."""

    def __init__(self, store: Store, sweep: str) -> None:
        self.store = store
        self.sweep = sweep
        self._writers: dict[str, SummaryWriter] = {}
        target = store.path(CURVES_DIR, sweep)
        self._remote = target if store.remote else None
        # a remote store's event files are written here first, then sent in parts
        self._local = tempfile.mkdtemp(prefix=f"rlv-curves-{sweep}-") if store.remote else target
        # a remote store's copy of each local event file is a series of parts, NAME.000000,
        # NAME.000001, ...: each sync sends the bytes written since the last one as a new part
        # (object stores cannot append), so nothing already sent is sent again. TensorBoard
        # reads a run's files in name order, which is the parts' order. local path -> (bytes
        # sent, parts sent)
        self._sent: dict[str, tuple[int, int]] = {}
        # trials whose event files changed since the last copy to a remote store: a sync sends
        # only those, so its cost follows the running trials, not the size of the sweep
        self._dirty: set[str] = set()

    def _writer(self, trial_id: str, epoch: int) -> SummaryWriter:
        writer = self._writers.get(trial_id)
        if writer is None:
            # first result since this trial (re)started at `epoch`: hide later points of earlier
            # runs; a file of its own per attempt, in creation order even within one second:
            # TensorBoard reads a run's files in name order, and tensorboardX names them by second
            writer = SummaryWriter(os.path.join(self._local, trial_id), purge_step=epoch,
                                   flush_secs=10, filename_suffix=f".{time.time_ns()}")
            self._writers[trial_id] = writer
        self._dirty.add(trial_id)
        return writer

    def _close(self, trial_id: str) -> None:
        writer = self._writers.pop(trial_id, None)
        if writer is not None:
            writer.close()  # writes what was still queued: the run changed since the last copy
            self._dirty.add(trial_id)
            self.sync()

    def handle(self, event: Event, view: SweepView) -> None:
        if event.kind == RESULT:
            self._result(event)
        elif event.kind in (RETRY, FAIL):
            # the retry resumes from a checkpoint: its first result reopens the run with purge_step
            self._close(event.trial)
        elif event.kind == HEARTBEAT:
            self.sync()
        elif event.kind == END:
            for trial_id in list(self._writers):
                self._close(trial_id)
            self.sync()

    def _result(self, event: Event) -> None:
        row = event.epoch_row
        if row:
            step = int(row[col.EPOCH])
            writer = self._writer(event.trial, step)
            for tag, column in EPOCH_TAGS.items():
                value = _number(row.get(column))
                if value is not None:
                    writer.add_scalar(tag, value, step)
            writer.flush()  # an epoch takes seconds or more: show it now
        final = event.row
        if final:
            step = int(final[col.EPOCHS])
            writer = self._writer(event.trial, step)
            for tag, column in FINAL_TAGS.items():
                value = _number(final.get(column))
                if value is not None:
                    writer.add_scalar(tag, value, step)
            self._close(event.trial)

    def sync(self) -> None:
        """Send what the local event files gained since the last sync to a remote store, each
        file's new bytes as its next part (flushed first, so every part ends on a record)."""
        # a running trial's file may have grown since the last sync even without a new result:
        # tensorboardX writes its events from a thread of its own
        changed = self._dirty | self._writers.keys()
        if self._remote is None or not changed:
            return
        for writer in self._writers.values():
            writer.flush()
        for trial_id in sorted(changed):
            folder = os.path.join(self._local, trial_id)
            for name in sorted(os.listdir(folder)):
                path = os.path.join(folder, name)
                sent, parts = self._sent.get(path, (0, 0))
                with open(path, "rb") as f:
                    f.seek(sent)
                    new = f.read()
                if new:
                    self.store.write_bytes(f"{self._remote}/{trial_id}/{name}.{parts:06d}", new)
                    self._sent[path] = (sent + len(new), parts + 1)
        self._dirty.clear()
