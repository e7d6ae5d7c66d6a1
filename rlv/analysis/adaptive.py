"""One round of a sweep with `until:`: from its trials to the next seed count.

The re-estimation is an internal pilot (Wittes and Brittain 1990): the round refits the metric's
model (design.py) and takes its residual sd sigma, the nuisance parameter, and nothing else from
the data. The difference to detect, `delta`, is the sweep file's, fixed beforehand; the observed
difference between the factor's levels is never looked at. Power and the seeds `rlv plan` asks
for are then those of plan.py (Cohen's f = delta / (sigma sqrt(2a)), noncentral F) for that
sigma, so the decision to grow or stop depends on the data only through sigma, and the final F
tests keep (to a good approximation) their level alpha. A decision on the observed effect would
be a sequential test, whose alpha needs spending rules; this is not one.

Pure: a trials table in, a Round out (rlv/service/adaptive.py reads and writes the store).
"""

from __future__ import annotations

import math

import pandas as pd

from rlv.analysis.anova import fit_metric
from rlv.analysis.labels import present_datasets
from rlv.analysis.load import Results, trials_of
from rlv.analysis.plan import plan_for_fit
from rlv.analysis.tables import require_metric, select_dataset
from rlv.errors import RlvError
from rlv.store.rounds import GROW, MAX_SEEDS_REACHED, NO_ANALYSIS, PLAN_REACHED, POWER_REACHED, Round
from rlv.sweep.until import Until


def next_seeds(seeds: int, power: float, planned: int | None, until: Until) -> tuple[int, str]:
    """(the next round's seeds per cell, the decision): stop where the power at `seeds` reaches
    the target or `seeds` is max_seeds; else `step` more, never past max_seeds nor past the
    seeds the plan asks for (`planned`; None: no plan, e.g. no sigma yet). NaN power grows."""
    if math.isfinite(power) and power >= until.power:
        return seeds, POWER_REACHED
    if seeds >= until.max_seeds:
        return seeds, MAX_SEEDS_REACHED
    cap = until.max_seeds if planned is None else min(until.max_seeds, planned)
    grown = min(seeds + until.step, cap)
    if grown <= seeds:  # the plan's seeds are here, yet the power is not (missing trials)
        return seeds, PLAN_REACHED
    return grown, GROW


def decide(data: Results | pd.DataFrame, until: Until, seeds: int, number: int = 1) -> Round:
    """Round `number` of a sweep whose grid (every trial at `seeds` seeds per cell, one data set)
    is in `data`: sigma, the plan's seeds, the power at `seeds`, and the next seed count."""
    trials = trials_of(data)
    datasets = present_datasets(trials)
    if len(datasets) != 1:
        raise RlvError(f"a round needs the trials of one data set, got {len(datasets)}")
    part = select_dataset(trials, datasets[0])
    require_metric(part, until.metric)
    fit = fit_metric(part, until.metric, datasets[0] or "")
    sigma, power, planned = math.nan, math.nan, None
    if fit.resid_df > 0 and fit.error_note:  # a constant metric, or one the model fits exactly
        return Round(number, seeds, fit.n, sigma, None, power, seeds,
                     f"{NO_ANALYSIS}: {fit.error_note}", until.to_json())
    if fit.resid_df > 0:  # else no sigma yet (e.g. one seed per cell): grow by step
        plan = plan_for_fit(fit, until.factor, until.delta, until.power, until.alpha)
        sigma, power, planned = plan.sigma, plan.current_power, plan.seeds_per_cell
    grown, decision = next_seeds(seeds, power, planned, until)
    return Round(number, seeds, fit.n, sigma, planned, power, grown, decision, until.to_json())
