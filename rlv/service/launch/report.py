"""The launch's last step: what it did, in the terminal, and its exit code."""

from __future__ import annotations

import resource
from dataclasses import dataclass, field


@dataclass
class SweepOutcome:
    sweep: str
    store: str
    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # trial -> its error, one line
    # trials this launch ran that neither finished nor failed: the run was stopped (Ctrl-C, which
    # Tune turns into a graceful stop) while they ran or waited; each resumes from its checkpoint
    stopped: list[str] = field(default_factory=list)
    wall_s: float = 0.0  # this launch's time in Tune
    trial_s: float = 0.0  # sum of the wall times of the trials this launch ran
    slots: int = 1  # trials that fit on the cluster at once
    skipped: int = 0  # grid trials already in the store (not run by this launch)

    @property
    def overhead_per_trial_s(self) -> float:
        """What Ray and Tune add per trial this launch ran: its slot-seconds not spent inside a
        trial, per trial (trials of earlier launches count in neither)."""
        n = len(self.finished)
        return (self.wall_s * self.slots - self.trial_s) / n if n else 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.stopped

    @property
    def exit_code(self) -> int:
        """`rlv launch`'s: 0 when every trial it ran finished, 1 when one failed, 130 (a shell's
        code for Ctrl-C) when the run was stopped before its trials ended."""
        return 130 if self.stopped else 0 if self.ok else 1

    def summary(self) -> list[str]:
        """What `rlv launch` prints at the end: counts, times, memory, the store, failures."""
        n = len(self.finished) + len(self.failed) + len(self.stopped)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        if not n:
            return [f"sweep {self.sweep}: nothing to run, all {self.skipped} trials are in the "
                    f"store", f"store: {self.store}  (pandas: pd.read_parquet('{self.store}/trials'))"]
        stopped = (f"stopped (Ctrl-C) with {len(self.stopped)} trials unfinished; "
                   if self.stopped else "")
        lines = [f"sweep {self.sweep}: {stopped}{len(self.finished)}/{n} trials finished in "
                 f"{self.wall_s:.0f} s; trials' own time {self.trial_s:.0f} s on {self.slots} "
                 f"slots, Ray adds {self.overhead_per_trial_s:.2f} s per trial; driver peak "
                 f"memory {peak_mb:.0f} MB",
                 f"store: {self.store}  (pandas: pd.read_parquet('{self.store}/trials'))"]
        lines += [f"FAILED {trial}: {error}" for trial, error in sorted(self.failed.items())]
        if self.failed:
            lines.append("rerun the same command to retry the failed trials from their last "
                         "checkpoints")
        if self.stopped:
            lines.append(f"rerun the same command to resume the {len(self.stopped)} unfinished "
                         "trials from their last checkpoints")
        if self.skipped:
            lines.append(f"{self.skipped} trials of the grid were in the store already (not run)")
        return lines

    def add(self, part: SweepOutcome) -> None:
        """Count a further run of the same launch (a round of `until:`) in this outcome."""
        self.finished += part.finished
        self.failed.update(part.failed)
        self.stopped += part.stopped
        self.wall_s += part.wall_s
        self.trial_s += part.trial_s
        self.slots = max(self.slots, part.slots)
