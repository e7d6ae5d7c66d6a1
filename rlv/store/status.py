"""`rlv status`: where a sweep stands, from the store alone (its manifest, its rows and the status
file its driver keeps)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rlv.errors import RlvError
from rlv.store.files import STALE_S, read_status
from rlv.store.manifest import read_manifest, stored_sweeps
from rlv.store.plan import SweepPlan, plan_sweep, require_store
from rlv.store.rounds import read_rounds, rounds_lines, spec_at_rounds
from rlv.store.store import Store
from rlv.sweep.spec import SweepSpec, parse_sweep


def driver_alive(saved: dict[str, Any]) -> bool:
    """Whether the driver that wrote status file `saved` still runs the sweep: on this machine,
    whether its process exists; elsewhere, whether it was heard from in the last STALE_S."""
    if not saved.get("updated_at") or saved.get("ended"):
        return False
    host, _, pid = str(saved.get("driver", "")).rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it exists, as another user's process
        return True
    age = (datetime.now(UTC) - datetime.fromisoformat(saved["updated_at"])).total_seconds()
    return age < STALE_S


# a trial's state in the driver's status file (Tune's own words, as older stores hold them)
RUNNING, FAILED, FINISHED, PENDING = "RUNNING", "ERROR", "TERMINATED", "PENDING"


def progress_counts(finished: int, running: int, failed: int, pending: int, total: int) -> str:
    """The sweep's progress in words: the one text the terminal, the dashboard's progress actor,
    `rlv board` and `rlv status` show."""
    return (f"{finished} finished, {running} running, {failed} failed, {pending} pending "
            f"(of {total})")


@dataclass
class SweepStatus:
    sweep: str
    store: str
    total: int
    finished: list[str] = field(default_factory=list)
    running: dict[str, int] = field(default_factory=dict)  # trial -> epochs done
    nodes: dict[str, str] = field(default_factory=dict)  # running trial -> "IP pid N"
    failed: dict[str, str] = field(default_factory=dict)  # trial -> error
    pending: int = 0  # to run (none of them running now)
    resumable: int = 0  # of the pending and failed: trials with a checkpoint to resume from
    outside: int = 0  # stored trials the sweep's grid no longer holds
    driver: str = ""
    updated_at: str = ""
    driver_alive: bool = False
    ended: bool = False
    until: list[str] = field(default_factory=list)  # a sweep with until: its rounds
    question_open: bool = False  # a sweep with until: whose rounds have not stopped yet

    def lines(self) -> list[str]:
        counts = progress_counts(len(self.finished), len(self.running), len(self.failed),
                                 self.pending, self.total)
        out = [f"sweep {self.sweep}: {counts}",
               f"store: {self.store}"]
        if self.resumable:
            out.append(f"{self.resumable} unfinished trials resume from their checkpoints")
        if self.outside:
            out.append(f"{self.outside} stored trials are no longer in the grid (kept as they are)")
        out += self.until
        if self.ended:
            out.append(f"last run ended {self.updated_at} (driver {self.driver})")
        elif self.updated_at:
            state = "running" if self.driver_alive else "gone (rlv launch resumes the sweep)"
            out.append(f"driver {self.driver}: {state}; last update {self.updated_at}")
        for name, epoch in sorted(self.running.items()):
            if self.nodes.get(name):
                out.append(f"  running  {name} (epoch {epoch}, on {self.nodes[name]})")
            elif epoch:
                out.append(f"  running  {name} (epoch {epoch})")
            else:  # started, and not heard from yet: its first report says where it runs
                out.append(f"  running  {name} (starting)")
        for name, error in sorted(self.failed.items()):
            out.append(f"  failed   {name}: {error}")
        return out


def spec_from_store(store: Store, sweep: str) -> SweepSpec:
    """The spec a sweep was last launched with, from the store alone."""
    require_store(store)
    manifest = read_manifest(store, sweep)
    if manifest is None:
        held = ", ".join(stored_sweeps(store)) or "none"
        raise RlvError(f"store {store} holds no sweep {sweep!r} (sweeps there: {held})")
    return parse_sweep(manifest.spec, source=f"sweep {sweep!r} in store {store}")


def status_of(plan: SweepPlan) -> SweepStatus:
    """Where the planned sweep stands: its rows, and its driver's status file."""
    saved = read_status(plan.store, plan.spec.name)
    report = SweepStatus(plan.spec.name, str(plan.store), total=plan.total,
                         finished=sorted(plan.done.values()), resumable=plan.resumable(),
                         outside=plan.outside, driver=saved.get("driver", ""),
                         updated_at=saved.get("updated_at", ""), ended=bool(saved.get("ended")))
    report.driver_alive = driver_alive(saved)
    if plan.spec.until is not None:
        rounds = read_rounds(plan.store, plan.spec.name)
        report.until = rounds_lines(plan.spec, rounds)
        report.question_open = not rounds or not rounds[-1].done
        if report.ended and report.question_open:  # a round ended: its driver decides the next
            report.driver_alive = driver_alive({**saved, "ended": False})
            report.ended = not report.driver_alive
    unfinished = plan.to_run_names()
    for name, entry in saved.get("trials", {}).items():
        if name not in unfinished:
            continue
        if entry.get("status") == FAILED:
            report.failed[name] = entry.get("error", "failed")
        elif entry.get("status") == RUNNING and report.driver_alive:
            report.running[name] = int(entry.get("epoch", 0))
            report.nodes[name] = str(entry.get("node", ""))
    report.pending = len(plan.to_run) - len(report.running) - len(report.failed)
    return report


def sweep_status(spec: SweepSpec, store: Store) -> SweepStatus:
    require_store(store)
    return status_of(plan_sweep(spec_at_rounds(spec, store), store))


def sweep_over(report: SweepStatus) -> bool:
    """Whether a watched sweep will change no more: its driver ended it, every trial is in the
    store, or the driver that ran it is gone (`rlv launch` resumes it; watch that one then)."""
    if report.ended or (len(report.finished) == report.total and not report.question_open):
        return True
    return bool(report.updated_at) and not report.driver_alive


MAX_EVERY_S = 86_400.0  # a day between refreshes: more is surely a typo


def watch_status(spec: SweepSpec, store: Store, echo: Callable[[str], None], every_s: float = 5.0,
                 clear: bool = False) -> SweepStatus:
    """Print the sweep's status every `every_s` seconds until it is over; return the last one.
    Before its driver first writes the status file, the sweep shows as all pending, and waits."""
    if not 0 < every_s <= MAX_EVERY_S:  # also refuses NaN and inf (time.sleep overflows on them)
        raise RlvError(f"--every must be a number of seconds above 0 and at most {MAX_EVERY_S:g}, "
                       f"not {every_s}")
    while True:
        report = sweep_status(spec, store)
        # a terminal is redrawn in place (ANSI clear + home); a pipe or file gets one block per refresh
        echo("\x1b[H\x1b[2J" if clear else f"--- {datetime.now(UTC).strftime('%H:%M:%S')} UTC")
        for line in report.lines():
            echo(line)
        if not report.updated_at:
            echo("no driver has written this sweep's status yet: waiting for `rlv launch` "
                 "(Ctrl-C stops watching)")
        if sweep_over(report):
            return report
        time.sleep(every_s)
