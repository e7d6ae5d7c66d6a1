"""How many seeds a follow-up needs: power of the F test of one factor, from a store's residuals.

To detect a difference `delta` between two levels of factor F (a levels) in metric M, take the
residual standard deviation sigma of M's model in the store (the thesis's model, design.py) and
Cohen's minimum-variability pattern: two level means delta apart, the others at the grand mean,
so the means' standard deviation is delta / sqrt(2a) and the effect size f = delta / (sigma *
sqrt(2a)). With n seeds in each of the design's `cells` cells, N = n * cells trials, and the test
of F has power

    P(F' > F_crit(alpha; a - 1, N - p)),   F' ~ noncentral F(a - 1, N - p, lambda = f^2 N)

(p = the model's parameter count). `seeds_per_cell` is the smallest n reaching `power`;
`current_power` is the power with the store's own trials (its N and residual df) for the given
delta; it means something only for a delta fixed beforehand, not one read off the same data.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Final

import pandas as pd
from scipy import stats

from rlv import columns as col
from rlv.analysis.anova import ALPHA, MetricFit, fit_metric, model_fits
from rlv.analysis.design import METRIC_MODELS
from rlv.analysis.labels import present_datasets
from rlv.analysis.load import Results, load_store, require_one_sweep_per_dataset, trials_of
from rlv.analysis.tables import require_metric, select_dataset
from rlv.errors import RlvError

POWER: Final = 0.8
MAX_SEEDS: Final = 10_000  # beyond this a plan is no plan: say so instead of searching on


@dataclass(frozen=True)
class SeedPlan:
    """The answer of `plan_seeds` (`seeds_per_cell` None: more than MAX_SEEDS would be needed)."""

    dataset: str
    metric: str
    model: str
    factor: str
    levels: int
    delta: float
    power: float
    alpha: float
    sigma: float
    f: float
    cells: int
    params: int
    current_trials: int
    current_seeds: float  # trials per cell in the store
    current_power: float
    seeds_per_cell: int | None
    trials_needed: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        need = (
            f"{self.seeds_per_cell} seeds per cell ({self.trials_needed} trials)"
            if self.seeds_per_cell is not None
            else f"more than {MAX_SEEDS} seeds per cell"
        )
        return (
            f"{self.dataset or 'all'} {self.metric} ({self.model}), {self.factor} "
            f"({self.levels} levels), delta {self.delta:g}: sigma {self.sigma:.4g}, "
            f"f {self.f:.4g}; {need} for power {self.power:g} at alpha {self.alpha:g}; "
            f"power with the store's {self.current_seeds:g} seeds per cell: "
            f"{self.current_power:.3f}"
        )


def power_of(f: float, n_total: float, levels: int, params: int, alpha: float) -> float:
    """Power of the F test of a factor with `levels` levels: lambda = f^2 N, df = (a-1, N-p)."""
    df1, df2 = levels - 1, n_total - params
    if df1 < 1 or df2 <= 0:
        return math.nan
    critical = stats.f.isf(alpha, df1, df2)
    return float(stats.ncf.sf(critical, df1, df2, f * f * n_total))


def _seeds_needed(f: float, fit: MetricFit, levels: int, power: float, alpha: float) -> int | None:
    params = fit.n - fit.resid_df

    def enough(n: int) -> bool:
        value = power_of(f, n * fit.cells, levels, params, alpha)
        return math.isfinite(value) and value >= power

    low = 1  # too few: power rises with n, so search by doubling then bisect
    while low * fit.cells <= params:
        low += 1
    if enough(low):
        return low
    high = low * 2
    while not enough(high):
        low, high = high, high * 2
        if low > MAX_SEEDS:
            return None
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high if high <= MAX_SEEDS else None


def _check(delta: float, power: float, alpha: float) -> None:
    if not (math.isfinite(delta) and delta > 0):
        raise RlvError(f"delta = {delta:g} is not allowed; it must be > 0 (in the metric's units)")
    if not (0.0 < power < 1.0):
        raise RlvError(f"power = {power:g} is not allowed; it must lie strictly between 0 and 1")
    if not (0.0 < alpha < 1.0):
        raise RlvError(f"alpha = {alpha:g} is not allowed; it must lie strictly between 0 and 1")


def plan_for_fit(
    fit: MetricFit, factor: str, delta: float, power: float = POWER, alpha: float = ALPHA
) -> SeedPlan:
    """The seed plan for one fitted model (the model itself, not a blocked variant)."""
    _check(delta, power, alpha)
    if factor not in fit.factors:
        allowed = ", ".join(fit.factors) if fit.factors else "(none varies)"
        raise RlvError(
            f"factor {factor!r} is not in the model of {fit.metric} ({fit.model}): "
            f"its factors are {allowed}"
        )
    if fit.resid_df <= 0:
        raise RlvError(f"{fit.metric} has no residual df in these results: run more seeds first")
    if fit.error_note:  # a constant metric, a model that fits every value
        raise RlvError(f"{fit.metric}: {fit.error_note}; no power analysis possible")
    sigma = math.sqrt(fit.mse)
    levels = int(fit.data[factor].nunique())
    f = delta / (sigma * math.sqrt(2 * levels))
    params = fit.n - fit.resid_df
    seeds = _seeds_needed(f, fit, levels, power, alpha)
    return SeedPlan(
        dataset=fit.dataset,
        metric=fit.metric,
        model=fit.model,
        factor=factor,
        levels=levels,
        delta=float(delta),
        power=float(power),
        alpha=float(alpha),
        sigma=sigma,
        f=f,
        cells=fit.cells,
        params=params,
        current_trials=fit.n,
        current_seeds=round(fit.n / fit.cells, 2),
        current_power=power_of(f, fit.n, levels, params, alpha),
        seeds_per_cell=seeds,
        trials_needed=seeds * fit.cells if seeds is not None else None,
    )


def plan_seeds(
    data: Results | pd.DataFrame,
    metric: str,
    factor: str,
    delta: float,
    power: float = POWER,
    alpha: float = ALPHA,
) -> SeedPlan:
    """Seeds per cell to detect `delta` between two levels of `factor` in `metric` (one dataset).

    RlvError for an unknown metric or factor, delta <= 0, power or alpha outside (0, 1), results
    of several datasets, or a model without residual df.
    """
    _check(delta, power, alpha)
    trials = trials_of(data)
    if metric not in METRIC_MODELS:
        raise RlvError(
            f"unknown metric {metric!r}: a plan needs a model, which exist for "
            f"{', '.join(METRIC_MODELS)}"
        )
    require_metric(trials, metric)
    datasets = present_datasets(trials)
    if len(datasets) > 1:
        raise RlvError(
            f"results hold several datasets ({', '.join(map(str, datasets))}): plan one sweep "
            "(--sweep)"
        )
    part = select_dataset(trials, datasets[0])
    return plan_for_fit(fit_metric(part, metric, datasets[0] or ""), factor, delta, power, alpha)


def plan_store(
    store: str | os.PathLike[str],
    metric: str,
    factor: str,
    delta: float,
    power: float = POWER,
    alpha: float = ALPHA,
    sweep: str | None = None,
) -> SeedPlan:
    """`plan_seeds` on a store (one sweep of it, or all when it holds one per dataset)."""
    _check(delta, power, alpha)  # before reading anything
    results = load_store(store, sweep)
    require_one_sweep_per_dataset(results)
    return plan_seeds(results, metric, factor, delta, power, alpha)


PLAN_METRICS: Final = (col.TEST_NEG_ELBO, col.TEST_RE, col.FID)
# The report's deltas, fixed before looking at the data, in residual sds of the metric's model:
# a delta taken from the observed gap between level means would make "current power" observed
# power, a function of the p value that says nothing new.
PLAN_DELTAS_SD: Final = (0.5, 1.0)


def planning_table(
    fits: list[MetricFit],
    factor: str = col.ENCODER,
    power: float = POWER,
    alpha: float = ALPHA,
    deltas_sd: tuple[float, ...] = PLAN_DELTAS_SD,
) -> pd.DataFrame:
    """The report's planning table: for the main metrics, the seeds per cell needed to detect a
    difference of each of `deltas_sd` residual sds (column `delta_sd`; `delta` in the metric's
    units) between two levels of `factor`."""
    rows = []
    for fit in model_fits(fits):
        if fit.metric not in PLAN_METRICS or factor not in fit.factors or fit.error_note:
            continue  # no residual df or variance: no sigma to plan with
        sigma = math.sqrt(fit.mse)
        for k in deltas_sd:
            plan = plan_for_fit(fit, factor, k * sigma, power, alpha)
            rows.append({"delta_sd": k, **plan.as_dict()})
    return pd.DataFrame(rows)
