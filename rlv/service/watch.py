"""How `rlv launch` lets a sweep be watched: what it prints, and the driver's callbacks for it.

Two views, both fed by the driver (trials never write the store): the Ray dashboard (the job named
after the sweep, and its progress actor: dashboard.py) and TensorBoard (one run per trial under
STORE/tensorboard/SWEEP: curves.py). `rlv status [--watch]` prints the same progress in a terminal.
"""

from __future__ import annotations

from ray.tune import Callback

from rlv.service.curves import CurvesCallback, tensorboard_command
from rlv.service.dashboard import DashboardCallback, dashboard_lines


def watch_callbacks(store: str, sweep: str, stored: tuple[str, ...] = ()) -> list[Callback]:
    """The driver's callbacks that keep the dashboard's progress and the learning curves live;
    `stored`: the sweep's trials already in the store (counted as finished)."""
    return [CurvesCallback(store, sweep), DashboardCallback(store, sweep, stored)]


def watch_lines(dashboard: str, store: str, sweep: str) -> list[str]:
    """Printed under the dashboard's link: getting in, finding the sweep, its curves."""
    lines = dashboard_lines(dashboard, sweep) if dashboard else []
    return [*lines, f"learning curves: {tensorboard_command(store, sweep)}  (then "
                    "http://127.0.0.1:6006)"]
