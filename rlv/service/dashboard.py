"""What the Ray dashboard shows of a sweep, and how a newcomer gets into it.

What Ray 2.60's dashboard can show, read from its installed code (dashboard/client, http_server_head):
- the Jobs table has a "Job name" column, filled from the `job_name` key of the job's metadata,
  and a job's page shows all of its metadata: the embedded driver sets it with
  `ray.init(job_config=JobConfig(metadata=...))`, the Ray Jobs path with `submit_job(metadata=...,
  submission_id=...)`. That makes the sweep findable by name, on either path;
- a job's page shows its driver's log only for jobs submitted through the Jobs API (the embedded
  driver's page says so), and metadata cannot change after the job starts. What every path does
  show is an actor's own log, on its page (Actors > the actor > Logs). So the driver keeps one small
  named actor per sweep, `rlv-sweep:SWEEP` (no CPU), and sends it the sweep's progress; the actor
  prints it, and its page shows it while the sweep runs: trials finished / running / failed /
  pending, each failure's one-line reason, and where each running trial is (node and the pid of
  the `ImplicitFunc` actor that the Actors table lists with its node). The text is the same as
  `rlv status` prints (rlv.store.status.SweepStatus.lines). All of it is public Ray API.
- token authentication (Ray 2.60's default for a new local cluster) opens the dashboard on an
  "Authentication Token Required" box; `auth_hint` says where the token is.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ray.tune import Callback

from rlv import columns as col
from rlv.store.status import SweepStatus

BOARD_EVERY_S = 5.0  # the progress actor gets the sweep's state at most this often (and on events)


def job_name(sweep: str) -> str:
    """The sweep's name as the Jobs table shows it."""
    return f"rlv sweep {sweep}"


def job_metadata(sweep: str, store: str = "") -> dict[str, str]:
    """Job metadata: `job_name` is the dashboard's Job name column; `rlv_sweep` for scripts;
    `rlv_board` the line that serves the sweep's live board (`rlv board`), where the store is
    known."""
    from rlv.board.config import board_command  # no Ray, no pandas: a line of text

    metadata = {"job_name": job_name(sweep), "rlv_sweep": sweep}
    if store:
        metadata["rlv_board"] = board_command(store, sweep)
    return metadata


def submission_id(sweep: str) -> str:
    """A Ray Job's id that names its sweep and when it was sent, unique per submission (Ray
    refuses a reused id): the random tail keeps two launches in the same second apart."""
    return f"rlv-{sweep}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"


def board_name(sweep: str) -> str:
    """The progress actor's name, as the Actors table shows it."""
    return f"rlv-sweep:{sweep}"


def token_location() -> str:
    """Where Ray reads this machine's token from, in Ray's own order of precedence."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "the RAY_AUTH_TOKEN environment variable"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return f"the file {path}"


def auth_mode(dashboard: str) -> str:
    """'token' or 'disabled', as the dashboard itself says (an endpoint open without a token);
    '' where it does not answer."""
    try:
        with urllib.request.urlopen(f"{dashboard.rstrip('/')}/api/authentication_mode",
                                    timeout=5) as response:
            return str(json.loads(response.read().decode()).get("authentication_mode", ""))
    except (OSError, ValueError):
        return ""


def dashboard_lines(dashboard: str, sweep: str, jobs_path: bool = False) -> list[str]:
    """What `rlv launch` prints under the dashboard's link: how to get past its token box, and
    where the sweep and its progress are."""
    mode = auth_mode(dashboard)
    if mode == "disabled":
        lines = ["  no token needed: this cluster runs without token authentication"]
    else:
        lines = [f"  {'it asks for a token' if mode == 'token' else 'if it asks for a token'}: "
                 f"paste what `ray get-auth-token` prints (Ray reads it from {token_location()})"]
    logs = "the job's Logs, or " if jobs_path else ""
    lines.append(f"  the sweep: Jobs > Job name '{job_name(sweep)}'; its progress: {logs}Actors > "
                 f"{board_name(sweep)} > Logs")
    return lines


def job_config(sweep: str, store: str = "") -> Any:
    """The embedded driver's JobConfig: the job carries the sweep's name and its board line."""
    from ray.job_config import JobConfig

    return JobConfig(metadata=job_metadata(sweep, store))


class SweepBoard:
    """The progress actor: prints each state of the sweep it is sent, so that its log, on its
    page in the dashboard, is the sweep's progress."""

    def __init__(self, sweep: str) -> None:
        self.sweep = sweep

    def __repr__(self) -> str:  # the Actors table's Repr column
        return job_name(self.sweep)

    def show(self, lines: list[str]) -> None:
        print(f"--- {datetime.now(UTC).strftime('%H:%M:%S')} UTC", flush=True)
        print("\n".join(lines), flush=True)


def _board_class() -> Any:
    import ray

    # no CPU: it must never take a trial's slot; it lives as long as the driver's handle
    return ray.remote(num_cpus=0, max_restarts=0)(SweepBoard)


def trial_node(result: dict[str, Any]) -> str:
    """Where a trial runs, from what Tune adds to every result: "IP pid N" (the pid is the one
    the Actors table lists for the trial's ImplicitFunc actor)."""
    return f"{result['node_ip']} pid {result.get('pid', '?')}" if result.get("node_ip") else ""


def sweep_state(sweep: str, store: str, trials: list[Any], ended: bool = False,
                stored: tuple[str, ...] = ()) -> SweepStatus:
    """The sweep as Tune sees it now, in the shape `rlv status` prints; `stored` are the trials
    that were in the store before this launch (Tune runs only the others)."""
    from ray.tune.experiment import Trial

    from rlv.service.callbacks import error_line

    state = SweepStatus(sweep, store, total=len(trials) + len(stored), finished=list(stored),
                        driver=f"{socket.gethostname()}:"
                        f"{os.getpid()}", updated_at=datetime.now(UTC).isoformat(timespec="seconds"),
                        driver_alive=not ended, ended=ended)
    for t in trials:
        name, last = str(t), t.last_result or {}
        if t.status == Trial.TERMINATED:
            state.finished.append(name)
        elif t.status == Trial.ERROR:
            state.failed[name] = error_line(t)
        elif t.status == Trial.RUNNING:
            state.running[name] = int(last.get(col.EPOCH, 0) or 0)
            state.nodes[name] = trial_node(last)
        else:
            state.pending += 1
    return state


class DashboardCallback(Callback):
    """Keeps the sweep's progress actor up to date: on every trial event, and every
    BOARD_EVERY_S while trials run. Sending never blocks the driver; the store stays the record."""

    def __init__(self, store: str, sweep: str, stored: tuple[str, ...] = ()) -> None:
        self.store = store
        self.sweep = sweep
        self.stored = stored  # finished before this launch
        self._actor: Any = None
        self._last = 0.0
        self._placed: set[str] = set()  # trials whose node the board has shown
        self._shown: list[str] = []

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment
        return {"store": self.store, "sweep": self.sweep, "stored": self.stored}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["store"], state["sweep"], state["stored"])  # type: ignore[misc]

    def _show(self, trials: list[Any], force: bool = False, ended: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < BOARD_EVERY_S:
            return
        self._last = now
        if self._actor is None:
            self._actor = _board_class().options(name=board_name(self.sweep),
                                                 get_if_exists=True).remote(self.sweep)
        lines = sweep_state(self.sweep, self.store, trials, ended, self.stored).lines()
        news = [line for line in lines if not line.startswith("driver ")]  # not its timestamp
        if news == self._shown:
            return  # the log gets a block only when the sweep moved
        self._shown = news
        self._actor.show.remote(lines)  # fire and forget

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self._show(trials)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._show(trials, force=True)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any,
                        result: dict[str, Any], **info: Any) -> None:
        # a trial's first result says where it runs: show that at once
        if str(trial) not in self._placed and result.get("node_ip"):
            self._placed.add(str(trial))
            self._show(trials, force=True)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any,
                          **info: Any) -> None:
        self._show(trials, force=True)

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any,
                         **info: Any) -> None:
        self._placed.discard(str(trial))  # the retry may run elsewhere
        self._show(trials, force=True)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._show(trials, force=True)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self._show(trials, force=True, ended=True)
