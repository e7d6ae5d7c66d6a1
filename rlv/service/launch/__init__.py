"""`rlv launch`: run the trials of a sweep's grid x seeds that the store does not hold yet.

The store is the sweep's truth (rlv/store/plan.py): each launch matches the grid against it by
content, leaves out every trial whose row is there, and runs exactly the rest. A trial that
started before resumes from its checkpoint in the store, on any node. A grown sweep file (more
seeds, a new level) runs only the new trials; a changed setting is refused before anything runs.
A launch is four steps, each a module of this package:

    plan    the grid against the store, and what the trials need here (plan.py)
    claim   one driver per sweep, held to the end (claim.py)
    run     the trials on Ray, as one Tune experiment (run.py; Ray itself: ray_session.py)
    report  what ran, and the exit code (report.py)

The cluster path (a cluster.yaml, or an http:// address) submits this same command as a Ray Job:
see rlv/service/cluster.py.
"""

from __future__ import annotations

from collections.abc import Callable

from rlv.service.launch.claim import claim_sweep
from rlv.service.launch.plan import plan_launch
from rlv.service.launch.ray_session import LaunchOptions, check_options
from rlv.service.launch.report import SweepOutcome
from rlv.service.launch.run import run_grid, trial_points, trial_search
from rlv.sweep.spec import SweepSpec

__all__ = ["LaunchOptions", "SweepOutcome", "run_grid", "run_sweep", "trial_points",
           "trial_search"]


def run_sweep(spec: SweepSpec, options: LaunchOptions, echo: Callable[[str], None]) -> SweepOutcome:
    """Plan, claim, run; returns which of this launch's trials finished and which failed (the
    caller reports: SweepOutcome.summary and exit_code). A sweep with `until:` runs in rounds,
    each one run_grid (rlv/service/adaptive.py)."""
    check_options(options)  # what the Ray it will use cannot honour, before anything runs
    launch = plan_launch(spec, options.store)
    with claim_sweep(launch.store, launch.spec.name, echo):
        if launch.spec.until is not None:
            from rlv.service.adaptive import run_until

            return run_until(launch, options, echo)
        return run_grid(launch, options, echo)
