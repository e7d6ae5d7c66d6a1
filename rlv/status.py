"""`rlv status`: where a sweep stands, from the store and the status file its driver keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from rlv.store import StoreWriter, read_status
from rlv.sweep import SweepSpec

STALE_S = 120.0  # a driver that has not written its status for this long is taken as gone


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
    finished = StoreWriter(store, spec.name).trials_written
    saved = read_status(store, spec.name)
    report = SweepStatus(spec.name, store, total=len(names), driver=saved.get("driver", ""),
                         updated_at=saved.get("updated_at", ""), ended=bool(saved.get("ended")))
    if report.updated_at:
        age = (datetime.now(UTC) - datetime.fromisoformat(report.updated_at)).total_seconds()
        report.driver_alive = not saved.get("ended") and age < STALE_S
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
