"""The rounds of a sweep with `until:`: one small Parquet table, one file per round.

    STORE/rounds/sweep=NAME/round-00001.parquet     one row: what round 1 ran and decided

A round is the seeds per cell it ran, the metric model's residual sd, the seeds per cell `rlv plan`
asks for, the power those seeds give, and the decision (grow to `next_seeds`, or stop: power
reached, max_seeds reached). The driver writes a round once its trials are all in the store,
exactly once (the file's name is its number; an existing one is never rewritten), so a driver
killed in any round continues from here: the next round's seeds are the last round's
`next_seeds`. pandas reads the table like the others: pd.read_parquet("results/rounds").
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rlv import columns as col
from rlv.errors import RlvError
from rlv.store.files import first_line
from rlv.store.store import Store
from rlv.sweep.spec import SweepSpec
from rlv.sweep.until import grow_seeds

# decisions: the first one grows the sweep, the others end it
GROW = "grow"
POWER_REACHED = "power reached"
MAX_SEEDS_REACHED = "max_seeds reached"
PLAN_REACHED = "planned seeds reached"  # only where missing trials keep the power below the plan's
NO_ANALYSIS = "no power analysis"  # a constant metric, or no residual variance: ", why" follows

ROUND_SCHEMA = pa.schema([
    (col.ROUND, pa.int64()), (col.ROUND_SEEDS, pa.int64()), (col.ROUND_TRIALS, pa.int64()),
    (col.SIGMA, pa.float64()), (col.PLANNED_SEEDS, pa.int64()), (col.POWER, pa.float64()),
    (col.NEXT_SEEDS, pa.int64()), (col.DECISION, pa.string()), (col.UNTIL, pa.string()),
    (col.DECIDED_AT, pa.timestamp("us", tz="UTC")),
])  # fmt: skip


@dataclass(frozen=True)
class Round:
    """What one round ran (seeds per cell, trials) and what it decided."""

    round: int
    seeds: int
    trials: int
    sigma: float  # NaN: no residual df yet
    planned_seeds: int | None  # None: no sigma yet, or more than `rlv plan` searches
    power: float  # at `seeds`, for the question's delta (NaN without sigma)
    next_seeds: int  # == seeds: the sweep stops here
    decision: str
    until: str = ""  # the question, Until.to_json()
    decided_at: datetime | None = None

    @property
    def done(self) -> bool:
        return self.next_seeds <= self.seeds

    def describe(self) -> str:
        sigma = f"sigma {self.sigma:.4g}" if math.isfinite(self.sigma) else "no sigma yet (no residual df)"
        power = f", power {self.power:.3f}" if math.isfinite(self.power) else ""
        plan = (f"; plan: {self.planned_seeds} seeds per cell" if self.planned_seeds is not None
                else "; plan: beyond any seed count searched" if math.isfinite(self.sigma) else "")
        then = f"grow to {self.next_seeds} seeds" if not self.done else f"stop ({self.decision})"
        return (f"round {self.round}: {self.seeds} seeds per cell ({self.trials} trials), "
                f"{sigma}{power}{plan}; {then}")

    def row(self) -> dict[str, object]:
        return {col.ROUND: self.round, col.ROUND_SEEDS: self.seeds, col.ROUND_TRIALS: self.trials,
                col.SIGMA: self.sigma, col.PLANNED_SEEDS: self.planned_seeds, col.POWER: self.power,
                col.NEXT_SEEDS: self.next_seeds, col.DECISION: self.decision,
                col.UNTIL: self.until, col.DECIDED_AT: self.decided_at}


def _file(number: int) -> str:
    return f"round-{number:05d}.parquet"


def read_rounds(store: Store, sweep: str) -> list[Round]:
    """The sweep's rounds in order (none where it has none, or the store does not exist)."""
    fs, folder = store.fs, store.partition(col.ROUNDS_TABLE, sweep)
    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except OSError as exc:
        raise RlvError(f"cannot read the store at {folder}: {first_line(exc)}") from None
    rounds = []
    for info in sorted(infos, key=lambda f: f.base_name):
        if info.type != pafs.FileType.File or not info.base_name.startswith("round-"):
            continue
        try:
            (row,) = pq.read_table(info.path, filesystem=fs).to_pylist()
        except (OSError, ValueError, pa.ArrowInvalid) as exc:
            raise RlvError(f"corrupt round file {info.path} ({first_line(exc)}); move it away "
                           "and launch again: the round is decided again from the store") from None
        rounds.append(Round(round=int(row[col.ROUND]), seeds=int(row[col.ROUND_SEEDS]),
                            trials=int(row[col.ROUND_TRIALS]), sigma=float(row[col.SIGMA]),
                            planned_seeds=row[col.PLANNED_SEEDS], power=float(row[col.POWER]),
                            next_seeds=int(row[col.NEXT_SEEDS]), decision=str(row[col.DECISION]),
                            until=str(row[col.UNTIL]), decided_at=row[col.DECIDED_AT]))
    return sorted(rounds, key=lambda r: r.round)


def write_round(store: Store, sweep: str, decided: Round) -> Round:
    """Write round `decided.round` (stamped now) unless its file exists; returns what the store
    holds for it."""
    path = f"{store.partition(col.ROUNDS_TABLE, sweep)}/{_file(decided.round)}"
    if store.fs.get_file_info(path).type != pafs.FileType.NotFound:
        return next(r for r in read_rounds(store, sweep) if r.round == decided.round)
    stamped = dataclasses.replace(decided, decided_at=datetime.now(UTC))
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([stamped.row()], schema=ROUND_SCHEMA), buffer)
    store.write_bytes(path, buffer.getvalue())
    return stamped


def current_seeds(spec: SweepSpec, rounds: list[Round]) -> int:
    """Seeds per cell the sweep runs now: the file's, or where rounds ran, the last one's next
    (never past max_seeds, never fewer than the file's)."""
    count = len(spec.seeds)
    if spec.until is None or not rounds:
        return count
    return max(count, min(rounds[-1].next_seeds, spec.until.max_seeds))


def spec_at_rounds(spec: SweepSpec, store: Store) -> SweepSpec:
    """`spec` with the seeds its rounds have grown it to (itself without `until:` or rounds)."""
    if spec.until is None:
        return spec
    seeds = grow_seeds(spec.seeds, current_seeds(spec, read_rounds(store, spec.name)))
    return dataclasses.replace(spec, seeds=seeds)


def rounds_lines(spec: SweepSpec, rounds: list[Round]) -> list[str]:
    """What `rlv status` and `rlv check` say of the rounds: the question, each round, what next."""
    if spec.until is None:
        return []
    first = rounds[0].seeds if rounds else len(spec.seeds)
    lines = [spec.until.describe(first)]
    lines += [f"  {r.describe()}" for r in rounds]
    if not rounds:
        lines.append(f"  round 1 runs {len(spec.seeds)} seeds per cell (no round decided yet)")
    elif not rounds[-1].done:
        lines.append(f"  round {rounds[-1].round + 1} runs {current_seeds(spec, rounds)} seeds "
                     "per cell")
    return lines


def until_check(spec: SweepSpec, store: Store) -> list[str]:
    """What `rlv check` adds for `until:`: the rounds so far, and the worst case (every cell at
    max_seeds): its trials and the time the store's timings predict for them."""
    if spec.until is None:
        return []
    from rlv.store.estimate import remaining_time  # estimate imports status, which imports us
    from rlv.store.plan import plan_sweep

    lines = rounds_lines(spec, read_rounds(store, spec.name))
    worst = dataclasses.replace(spec, seeds=grow_seeds(spec.seeds, spec.until.max_seeds))
    plan = plan_sweep(worst, store)
    lines.append(f"worst case, max_seeds {spec.until.max_seeds}: {plan.total:,} trials, "
                 f"{len(plan.to_run):,} of them not in the store; {remaining_time(plan)}")
    return lines
