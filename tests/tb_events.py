"""Reading the learning curves' TensorBoard event files back with TensorBoard's own reader
(EventAccumulator, the dev extra): independent of tensorboardX, which writes them."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing import event_accumulator as ea

EVENT_FILES = "events.out.tfevents.*"


def _read(path: Path, *, purge: bool) -> ea.EventAccumulator:
    """Every event of `path` (a run's folder: its files in name order; or one event file).
    `purge`: a SessionLog START at step k hides the points at steps >= k read before it."""
    accumulator = ea.EventAccumulator(str(path), size_guidance={ea.SCALARS: 0},  # 0: keep all
                                      purge_orphaned_data=purge)
    accumulator.Reload()
    return accumulator


def _steps(accumulator: ea.EventAccumulator, tag: str) -> list[ea.ScalarEvent]:
    return accumulator.Scalars(tag) if tag in accumulator.Tags()[ea.SCALARS] else []


def scalars(run: Path) -> dict[str, dict[int, float]]:
    """tag -> step -> value of one run, as TensorBoard shows it: its files in name order, and a
    writer opened again with purge_step=k (a retried trial) hides the points at steps >= k
    that earlier files hold."""
    accumulator = _read(run, purge=True)
    return {tag: {e.step: e.value for e in _steps(accumulator, tag)}
            for tag in accumulator.Tags()[ea.SCALARS]}


def attempts(run: Path, tag: str = "train/neg_elbo") -> list[list[int]]:
    """The steps of `tag` in each event file of one run, in the order each file holds them
    (nothing purged), oldest file (by its first event's wall time) first: the driver opens one
    file per attempt of a trial (rlv/service/curves.py)."""
    files = []
    for file in run.glob(EVENT_FILES):
        accumulator = _read(file, purge=False)
        files.append((accumulator.FirstEventTimestamp(), [e.step for e in _steps(accumulator, tag)]))
    return [steps for _, steps in sorted(files)]
