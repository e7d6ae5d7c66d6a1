"""The board's settings (their defaults live here only) and the line that starts it."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field

from rlv.errors import RlvError

HOST = "127.0.0.1"  # the board has no authentication: it never listens on another interface
DEFAULT_PORT = 8266  # beside Ray's dashboard (8265)
RAY_DASHBOARD_PORT = 8265  # Ray's default, and the local end of `rlv launch --cluster`'s tunnel


def default_dashboard() -> str:
    """The Ray dashboard as this machine reaches it: Ray's port, or the tunnel's
    ($RLV_DASHBOARD_PORT, what `rlv launch --cluster` forwards the head's dashboard to)."""
    return f"http://{HOST}:{os.environ.get('RLV_DASHBOARD_PORT') or RAY_DASHBOARD_PORT}"


@dataclass(frozen=True)
class BoardConfig:
    """What `rlv board` serves, and how."""

    store: str = "results"  # a folder or a URI (s3://, gs://, ...), as `rlv launch` wrote it
    sweep: str | None = None  # None: the store's only sweep
    port: int = DEFAULT_PORT  # on 127.0.0.1; 0 picks a free port (the line printed names it)
    refresh_s: float = 2.0  # how often the page asks for news (a cheap listing when none)
    dashboard: str = field(default_factory=default_dashboard)  # the Ray dashboard's link

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise RlvError(f"--port {self.port}: a port is a number from 1 to 65535 (0: any free one)")
        if not 0.2 <= self.refresh_s <= 3600:  # also refuses NaN
            raise RlvError(f"refresh every {self.refresh_s} s: give 0.2 to 3600 seconds")


def board_command(store: str, sweep: str, dashboard: str = "") -> str:
    """The `rlv board` line for a sweep (what `rlv launch` prints and puts in the job's metadata);
    `dashboard`: the Ray dashboard's address, named only where it is not the default one."""
    line = f"rlv board {shlex.quote(store)} --sweep {shlex.quote(sweep)}"
    if dashboard and dashboard.rstrip("/") != default_dashboard():
        line += f" --dashboard {shlex.quote(dashboard.rstrip('/'))}"
    return line


def board_url(port: int = DEFAULT_PORT) -> str:
    return f"http://{HOST}:{port}"
