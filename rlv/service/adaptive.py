"""`rlv launch` of a sweep with `until:`: rounds of the ordinary launch, growing the seeds.

Each round launches the grid at the current seeds per cell (rlv/service/launch/run.py run_grid: the
store's finished trials are not run again, unfinished ones resume from their checkpoints), then,
once every trial of the grid is in the store, fits the metric's model to them and decides
(rlv/analysis/adaptive.py): stop, or grow by `step` seeds. The round goes to the store
(rlv/store/rounds.py) before the next one starts, so the store says where the sweep stands: a
driver killed in any round and launched again continues at the last round's next seeds, and a
round decided before is not written again. A round whose trials failed ends the launch (exit 1)
without a decision; launching again retries them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from rlv import columns as col
from rlv.errors import RlvError
from rlv.service.launch.plan import Launch
from rlv.service.launch.ray_session import LaunchOptions
from rlv.service.launch.report import SweepOutcome
from rlv.service.launch.run import run_grid
from rlv.store.plan import plan_sweep
from rlv.store.rounds import Round, current_seeds, read_rounds, write_round
from rlv.store.store import Store
from rlv.sweep.spec import SweepSpec
from rlv.sweep.until import grow_seeds


def _decide(spec: SweepSpec, store: Store, number: int) -> Round:
    """The round of `spec`'s grid, every trial of which is in the store."""
    from rlv.analysis.adaptive import decide  # pandas and statsmodels, once trials are done
    from rlv.analysis.load import load_store

    assert spec.until is not None, "only a sweep with until: has rounds"
    plan = plan_sweep(spec, store)
    if plan.to_run:
        raise RlvError(f"sweep {spec.name}: {len(plan.to_run)} trials of the round's grid are not "
                       "in the store; launch again to run them")
    trials = load_store(store, spec.name).trials
    trials = trials[trials[col.TRIAL_ID].isin(set(plan.done.values()))]
    return decide(trials, spec.until, len(spec.seeds), number)


def run_until(launch: Launch, options: LaunchOptions,
              echo: Callable[[str], None]) -> SweepOutcome:
    """Run the sweep's rounds from where the store says it stands until its question is
    answered or max_seeds is reached; returns the trials all rounds of this launch ran."""
    spec, store = launch.spec, launch.store
    assert spec.until is not None, "run_until runs a sweep with until:"
    rounds = read_rounds(store, spec.name)
    total: SweepOutcome | None = None
    while True:
        seeds = current_seeds(spec, rounds)
        grid = dataclasses.replace(spec, seeds=grow_seeds(spec.seeds, seeds))
        last = rounds[-1] if rounds else None
        if last is not None and last.done and last.seeds == seeds:
            echo(f"sweep {spec.name}: its rounds stopped at round {last.round} ({last.decision}, "
                 f"{seeds} seeds per cell); checking its grid")
        else:
            echo(f"sweep {spec.name}: round {len(rounds) + 1}, {seeds} seeds per cell "
                 f"({grid.size():,} trials)")
        outcome = run_grid(dataclasses.replace(launch, spec=grid), options, echo)
        if total is None:
            total = outcome
        else:
            total.add(outcome)
        if not outcome.ok:
            return total
        decided = _decide(grid, store, len(rounds) + 1)
        if last is not None and (last.seeds, last.next_seeds, last.decision) == (
                decided.seeds, decided.next_seeds, decided.decision):
            echo(f"sweep {spec.name}: {last.describe()} (decided before)")
            return total
        decided = write_round(store, spec.name, decided)
        rounds.append(decided)
        echo(f"sweep {spec.name}: {decided.describe()}")
        if decided.done:
            return total
