"""The terminal's sink: one line per trial event, and a running trial's epochs at most every
`every_s`, each line led by the sweep's progress (the words `rlv status` uses) and the time."""

from __future__ import annotations

import time
from collections.abc import Callable

from rlv import columns as col
from rlv.service.recorder import FAIL, FINISH, RESULT, RETRY, START, Event, SweepView


class TerminalSink:
    def __init__(self, echo: Callable[[str], None], every_s: float = 30.0) -> None:
        self.echo = echo
        self.every_s = every_s
        self._last: dict[str, float] = {}  # trial -> when its last epoch line was printed

    def handle(self, event: Event, view: SweepView) -> None:
        lead = f"[{view.progress()}, {time.monotonic() - view.started:.0f} s] {event.trial}"
        state = view.trials.get(event.trial)
        if event.kind == START:
            self.echo(f"{lead} started")
        elif event.kind == RESULT and not event.epoch_row and event.committed and event.row is None:
            # a resumed attempt's first report: the epochs its checkpoint holds
            self.echo(f"{lead} resumed after epoch {event.committed[-1].get(col.EPOCH)} (its "
                      "last checkpoint)")
        elif event.kind == RESULT and event.epoch_row and event.row is None:
            now = time.monotonic()
            if now - self._last.get(event.trial, 0.0) >= self.every_s:
                self._last[event.trial] = now
                row = event.epoch_row
                self.echo(f"{lead} epoch {row.get(col.EPOCH)}: neg ELBO "
                          f"{row.get(col.TRAIN_NEG_ELBO, float('nan')):.3f}  "
                          f"{row.get(col.EPOCH_TIME_S, 0.0):.2f} s/epoch")
        elif event.kind == FINISH:
            self._last.pop(event.trial, None)
            row = event.row or {}
            self.echo(f"{lead} finished in {row.get(col.TRIAL_SECONDS, 0):.0f} s: test neg ELBO "
                      f"{row.get(col.TEST_NEG_ELBO, float('nan')):.3f}, "
                      f"{col.fid_text(row.get(col.FID))}")
        elif event.kind == RETRY and state is not None:
            self.echo(f"{lead} failed (attempt {state.attempts - 1}); retrying from its last "
                      f"checkpoint: {state.error}")
        elif event.kind == FAIL and state is not None:
            self.echo(f"{lead} FAILED: {state.error}")
