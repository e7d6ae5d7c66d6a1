"""`rlv check` against the store: how many trials are done, running and to run, and how long the
rest will take, from the epoch and evaluation (FID) times the sweep's finished trials measured."""

from __future__ import annotations

from collections import Counter, defaultdict
from statistics import fmean

from rlv import columns as col
from rlv.errors import RlvError
from rlv.store.files import first_line
from rlv.store.plan import SweepPlan, plan_sweep
from rlv.store.status import status_of
from rlv.store.store import Store
from rlv.sweep.spec import SweepSpec

_MEASURED = [col.TRIAL_ID, col.EPOCHS, col.EPOCH_TIME_S, col.TRIAL_SECONDS, col.FID_SAMPLES]


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _measured(plan: SweepPlan) -> list[dict[str, float | int | str]]:
    """The timing columns of the sweep's finished trials (one read of those columns)."""
    import pyarrow.dataset as ds

    folder = plan.store.partition(col.TRIALS_TABLE, plan.spec.name)
    if not plan.done and not plan.outside:
        return []
    try:
        table = ds.dataset(folder, format="parquet", filesystem=plan.store.fs).to_table(columns=_MEASURED)
    except (OSError, ValueError, KeyError) as exc:
        raise RlvError(f"cannot read {folder}: {first_line(exc)}") from None
    return table.to_pylist()


def remaining_time(plan: SweepPlan) -> str:
    """One line: the trial time the trials to run still need, or why there is no estimate."""
    if not plan.to_run:
        return "nothing left to run"
    rows = [r for r in _measured(plan) if r[col.EPOCH_TIME_S] is not None]
    if not rows:
        return ("remaining time: no estimate yet (the store holds no measured epoch or FID times "
                "of this sweep; they come with its first finished trial)")
    cell_of = {trial_id: key.rsplit("-s", 1)[0] for trial_id, key in plan.manifest.trials.items()}
    epoch_s: dict[str, list[float]] = defaultdict(list)
    rest_s: dict[int, list[float]] = defaultdict(list)  # fid_samples -> evaluation + FID seconds
    for r in rows:
        epoch_s[cell_of.get(str(r[col.TRIAL_ID]), "")].append(float(r[col.EPOCH_TIME_S]))
        rest = float(r[col.TRIAL_SECONDS]) - int(r[col.EPOCHS]) * float(r[col.EPOCH_TIME_S])
        rest_s[int(r[col.FID_SAMPLES])].append(max(rest, 0.0))
    every_epoch = fmean(v for values in epoch_s.values() for v in values)
    every_rest = fmean(v for values in rest_s.values() for v in values)
    per_cell = Counter(p.cell for p in plan.to_run)
    total = 0.0
    guessed = 0  # trials in cells (or FID sizes) that nothing measured yet
    for index, count in per_cell.items():
        cfg = plan.cell_configs[index]
        cell = plan.cell_keys[index]
        epoch = fmean(epoch_s[cell]) if epoch_s.get(cell) else every_epoch
        fid = cfg.eval.fid_samples
        rest = fmean(rest_s[fid]) if rest_s.get(fid) else every_rest
        guessed += count * (not epoch_s.get(cell) or not rest_s.get(fid))
        total += count * (cfg.train.epochs * epoch + rest)
    line = (f"remaining: about {_duration(total)} of trial time for {len(plan.to_run):,} trials "
            f"(from {len(rows):,} finished trials: {every_epoch:.2f} s per epoch, "
            f"{every_rest:.1f} s of evaluation and FID per trial on average), shared by the trials "
            "that run at once; checkpoints shorten it")
    if guessed:
        line += f"; {guessed:,} trials are in cells not measured yet (sweep averages used)"
    return line


def check_store(spec: SweepSpec, store: Store) -> list[str]:
    """What `rlv check` adds about the store: counts and the remaining time."""
    if not store.exists():
        return [f"store {store}: not created yet; all {spec.size():,} trials to run",
                "remaining time: no estimate (no measured epoch or FID times yet)"]
    plan = plan_sweep(spec, store)
    status = status_of(plan)
    to_run = len(plan.to_run) - len(status.running)
    lines = [f"store {store}: {len(plan.done):,} done, {len(status.running):,} running, "
             f"{to_run:,} to run ({plan.resumable():,} resume from checkpoints)"]
    if plan.outside:
        lines.append(f"{plan.outside:,} stored trials are no longer in the grid (kept as they are)")
    return [*lines, remaining_time(plan)]
