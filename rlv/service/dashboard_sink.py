"""The dashboard's sink: the sweep's progress, as `rlv status` words it, printed by the sweep's
progress actor (its log is on its page in the Ray dashboard: dashboard.py)."""

from __future__ import annotations

from typing import Any

from rlv.service.dashboard import board_class, board_name
from rlv.service.recorder import RESULT, RETRY, Event, SweepView


class DashboardSink:
    """Keeps the sweep's progress actor up to date: on every trial event, a running trial's first
    result (where it runs) and the heartbeat. The actor is made at the first event, so it runs
    while the sweep does (a trial started and not heard from yet shows as starting). Sending
    never blocks the driver; the store stays the record."""

    def __init__(self, sweep: str) -> None:
        self.sweep = sweep
        self._actor: Any = None
        self._placed: set[str] = set()  # trials whose node the actor has shown
        self._shown: list[str] = []

    def handle(self, event: Event, view: SweepView) -> None:
        if event.kind == RESULT:
            # a trial's first result says where it runs: show that at once
            state = view.trials.get(event.trial)
            if event.trial in self._placed or state is None or not state.node:
                return
            self._placed.add(event.trial)
        elif event.kind == RETRY:
            self._placed.discard(event.trial)  # the retry may run elsewhere
        self._show(view)

    def _show(self, view: SweepView) -> None:
        if self._actor is None:
            self._actor = board_class().options(name=board_name(self.sweep),
                                                 get_if_exists=True).remote(self.sweep)
        lines = view.status().lines()
        news = [line for line in lines if not line.startswith("driver ")]  # not its timestamp
        if news == self._shown:
            return  # the log gets a block only when the sweep moved
        self._shown = news
        self._actor.show.remote(lines)  # fire and forget
