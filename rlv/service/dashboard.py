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
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


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


def board_class() -> Any:
    import ray

    # no CPU: it must never take a trial's slot; it lives as long as the driver's handle
    return ray.remote(num_cpus=0, max_restarts=0)(SweepBoard)
