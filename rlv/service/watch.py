"""What `rlv launch` prints so that a sweep can be watched: the dashboard (the job named after the
sweep, and its progress actor: dashboard.py) and TensorBoard (one run per trial under
STORE/tensorboard/SWEEP: curves.py). `rlv status [--watch]` and `rlv board` read the store."""

from __future__ import annotations

from rlv.service.curves import tensorboard_command
from rlv.service.dashboard import dashboard_lines


def watch_lines(dashboard: str, store: str, sweep: str) -> list[str]:
    """Printed under the dashboard's link: getting in, finding the sweep, its curves."""
    lines = dashboard_lines(dashboard, sweep) if dashboard else []
    return [*lines, f"learning curves: {tensorboard_command(store, sweep)}  (then "
                    "http://127.0.0.1:6006)"]
