"""The store's sink: what the recorder's events mean for the store (the driver's only writer).

A commit promotes its checkpoint (checkpoints.promote) before its epoch rows are queued, so the
rows never outrun the pointer; a finished trial's model is promoted and its images written, its
row queued. Queued rows are written on the heartbeat (every HEARTBEAT_S), one batch file per table,
through one StoreWriter; a trial whose row is written keeps its weights only. A driver killed
with rows queued loses nothing: their trials re-run from their checkpoints. The status file is
rewritten on the heartbeat and at once when a trial fails. A driver whose claim was taken over
writes nothing more.
"""

from __future__ import annotations

from rlv.errors import RlvError
from rlv.service.recorder import END, FAIL, HEARTBEAT, RESULT, RETRY, Event, SweepView
from rlv.store import checkpoints, claim
from rlv.store.store import Store
from rlv.store.writer import StoreWriter


class StoreSink:
    def __init__(self, store: Store, sweep: str, keep_model: bool = True) -> None:
        self.store = store
        self.sweep = sweep
        self.keep_model = keep_model
        self.writer = StoreWriter(store, sweep)  # lists the keys the store holds, once
        # each trial's committed checkpoint (committed.json), read from the store once per trial
        self._committed: dict[str, checkpoints.Committed | None] = {}

    def handle(self, event: Event, view: SweepView) -> None:
        if event.kind == RESULT:
            self._result(event)
        elif event.kind == HEARTBEAT:
            self._flush()
            self.writer.write_status(view.status_file())
        elif event.kind in (RETRY, FAIL):
            self._committed.pop(event.trial, None)  # the retry reads the pointer it finds
            self.writer.write_status(view.status_file())
        elif event.kind == END:
            self._flush()
            self.writer.write_status(view.status_file())

    def _result(self, event: Event) -> None:
        folder = checkpoints.trial_dir(self.store.root, self.sweep, event.trial)
        if event.checkpoint is not None:
            if event.trial not in self._committed:  # a resumed trial: its pointer from before
                self._committed[event.trial] = checkpoints.read_committed(self.store.fs, folder)
            checkpoints.promote(self.store.fs, folder, event.checkpoint,
                                self._committed[event.trial])
            self._committed[event.trial] = event.checkpoint
        if event.committed:
            self.writer.queue_epochs(dict(row) for row in event.committed)
        if event.row is not None:
            self._committed.pop(event.trial, None)  # done: the flush removes the pointer
            if event.attempt and self.keep_model:
                checkpoints.promote_model(self.store.fs, folder, event.attempt)
            self.writer.queue_trial(dict(event.row), dict(event.images))

    def _flush(self) -> None:
        """Write the queued rows; the trials whose rows are in the store keep weights only."""
        if not self.writer.queued:
            return
        taken = claim.taken_over(self.store, self.sweep)
        if taken is not None:  # another launch holds the sweep now: its driver writes
            raise RlvError(f"sweep {self.sweep!r} was taken over by {taken.holder()}; this "
                           "driver writes nothing more")
        for trial_id in self.writer.flush():
            checkpoints.finish(self.store, self.sweep, trial_id, self.keep_model)
