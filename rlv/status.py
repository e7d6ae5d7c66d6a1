"""`rlv status`: where a sweep stands, from the store and the status file its driver keeps."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rlv.store import STALE_S, finished_trials, read_status
from rlv.sweep import SweepSpec


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


@dataclass
class SweepStatus:
    sweep: str
    store: str
    total: int
    finished: list[str] = field(default_factory=list)
    running: dict[str, int] = field(default_factory=dict)  # trial -> epochs done
    failed: dict[str, str] = field(default_factory=dict)  # trial -> error
    pending: list[str] = field(default_factory=list)
    driver: str = ""
    updated_at: str = ""
    driver_alive: bool = False
    ended: bool = False

    def lines(self) -> list[str]:
        out = [f"sweep {self.sweep}: {len(self.finished)} finished, {len(self.running)} running, "
               f"{len(self.failed)} failed, {len(self.pending)} pending (of {self.total})",
               f"store: {self.store}"]
        if self.ended:
            out.append(f"last run ended {self.updated_at} (driver {self.driver})")
        elif self.updated_at:
            state = "running" if self.driver_alive else "gone (rlv launch resumes the sweep)"
            out.append(f"driver {self.driver}: {state}; last update {self.updated_at}")
        for name, epoch in sorted(self.running.items()):
            out.append(f"  running  {name} (epoch {epoch})")
        for name, error in sorted(self.failed.items()):
            out.append(f"  failed   {name}: {error}")
        return out


def sweep_status(spec: SweepSpec, store: str) -> SweepStatus:
    names = [cfg.name for cfg in spec.trials()]
    finished = finished_trials(store, spec.name)
    saved = read_status(store, spec.name)
    report = SweepStatus(spec.name, store, total=len(names), driver=saved.get("driver", ""),
                         updated_at=saved.get("updated_at", ""), ended=bool(saved.get("ended")))
    report.driver_alive = driver_alive(saved)
    trials = saved.get("trials", {})
    for name in names:
        entry = trials.get(name, {})
        if name in finished:
            report.finished.append(name)
        elif entry.get("status") == "ERROR":
            report.failed[name] = entry.get("error", "failed")
        elif entry.get("status") == "RUNNING" and report.driver_alive:
            report.running[name] = int(entry.get("epoch", 0))
        else:
            report.pending.append(name)
    return report
