"""Robust summaries over seeds (Agarwal et al. 2021, rliable): the IQM of each cell and the
probability of improvement between two levels of a factor, each with a bootstrap interval.

- IQM: the interquartile mean of a cell's values over seeds, the mean of their middle 50%
  (`scipy.stats.trim_mean(x, 0.25)`, as rliable), with a 95% (effects.CI_LEVEL) percentile
  interval from the stratified bootstrap: a cell is a stratum, its seeds are resampled with
  replacement within it.
- Probability of improvement P(a better than b) between levels a and b of each factor the
  thesis orders (thesis.THESIS_ORDERINGS: encoder, layer, prior): the chance that a run at a
  beats a run at b, ties counting 1/2 (the Mann-Whitney U over the runs' pairs, scaled to
  [0, 1]). The runs are compared in **matched cells**: in each cell of the other factors of the
  model (each layer x prior for an encoder pair) over the pairs of seeds there, then averaged
  over the cells that hold both levels, as rliable averages over tasks. Pooling all cells
  instead would count the other factors' effects (the prior's large one on the negative ELBO)
  as noise between the runs. The interval resamples seeds within each (level, cell) stratum.
  0.5 is no difference; above 0.5, a tends to be better.

"Better" is on the metric's own direction: lower for losses, RE, FID, gaps (positive = the test
set worse) and epoch time; higher for RT (a -KL, maximised). The `better` column says which.
The resamples and the seed are a `Resampling` (resampling.py). Degenerate cells get rows with a
`note`: a cell with one seed has its value but no interval; a pair of levels no cell of the
other factors holds both of has NaN.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any, Final

import numpy as np
import pandas as pd
from scipy import stats

from rlv import columns as col
from rlv.analysis.anova import Fits, MetricFit, fits_of, model_fits
from rlv.analysis.design import DESIGN_FACTORS
from rlv.analysis.effects import CI_LEVEL
from rlv.analysis.labels import present_levels
from rlv.analysis.resampling import Resampling, generator
from rlv.analysis.thesis import THESIS_ORDERINGS

HIGHER_IS_BETTER: Final = frozenset({col.TEST_RT, col.TEST_RT_ELBO, col.TRAIN_RT})
ORDERED_FACTORS: Final = tuple(f for f in DESIGN_FACTORS if f in {k[2] for k in THESIS_ORDERINGS})
IQM: Final = "iqm"
IMPROVEMENT: Final = "probability_of_improvement"
TRIM: Final = 0.25  # cut from each end: the IQM keeps the middle 50%
_BOUNDS: Final = ((1.0 - CI_LEVEL) / 2.0, (1.0 + CI_LEVEL) / 2.0)
BASE_COLUMNS: Final = ("dataset", "metric", "better", "statistic")
VALUE_COLUMNS: Final = (
    "factor", "level_a", "level_b", "value", "lower", "upper", "n", "cells", "note",
)  # fmt: skip


def lower_is_better(metric: str) -> bool:
    """Whether smaller values of `metric` are better (all but RT, which is maximised)."""
    return metric not in HIGHER_IS_BETTER


def iqm(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """The interquartile mean along `axis`: scipy's trim_mean cutting 25% from each end."""
    return np.asarray(stats.trim_mean(values, TRIM, axis=axis))


def improvement(a: np.ndarray, b: np.ndarray, lower_better: bool) -> np.ndarray:
    """P(a run of `a` is better than one of `b`) over all pairs, ties 1/2: a (..., n_a), b
    (..., n_b) -> (...)."""
    diff = a[..., :, None] - b[..., None, :]  # (..., n_a, n_b)
    wins = (diff < 0) if lower_better else (diff > 0)
    return np.asarray((wins + 0.5 * (diff == 0)).mean(axis=(-2, -1)))


def _resampled(values: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` bootstrap resamples of `values` (n,) -> (count, n)."""
    return values[rng.integers(0, len(values), size=(count, len(values)))]


def _interval(draws: np.ndarray) -> tuple[float, float]:
    low, high = np.quantile(draws, _BOUNDS)
    return float(low), float(high)


def _groups(data: pd.DataFrame, by: list[str]) -> Iterator[tuple[tuple[str, ...], pd.DataFrame]]:
    """(levels as text, rows) per non-empty cell of `by` (one cell of everything without)."""
    if not by:
        yield (), data
        return
    for key, rows in data.groupby(by, observed=True, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        yield tuple(str(k) for k in key), rows


def cell_iqms(fit: MetricFit, settings: Resampling) -> list[dict[str, Any]]:
    """Per cell of the model's factors: the IQM over seeds and its bootstrap interval."""
    rows = []
    for key, cell in _groups(fit.data, list(fit.factors)):
        y = cell["y"].to_numpy(float)
        rng = generator(settings.seed, IQM, fit.dataset, fit.metric, *key)
        low = high = np.nan
        note = "one seed: no interval" if len(y) < 2 else ""
        if len(y) >= 2:
            low, high = _interval(iqm(_resampled(y, settings.resamples, rng)))
        rows.append(
            {
                **dict(zip(fit.factors, key, strict=True)),
                "statistic": IQM,
                "value": float(iqm(y)),
                "lower": low,
                "upper": high,
                "n": len(y),
                "cells": 1,
                "note": note,
            }
        )
    return rows


def _strata(fit: MetricFit, factor: str) -> list[dict[str, np.ndarray]]:
    """Per cell of the model's other factors: each level of `factor`'s values there."""
    others = [f for f in fit.factors if f != factor]
    return [
        {str(level): rows["y"].to_numpy(float) for level, rows in cell.groupby(factor, observed=True)}
        for _, cell in _groups(fit.data, others)
    ]


def _pair(
    strata: list[dict[str, np.ndarray]],
    draws: list[dict[str, np.ndarray]],
    a: str,
    b: str,
    lower_better: bool,
) -> dict[str, Any]:
    """P(a better than b) averaged over the matched cells (those holding both levels), its
    interval from the cells' resampled values `draws` (level -> (B, n))."""
    matched = [i for i, cell in enumerate(strata) if a in cell and b in cell]
    if not matched:
        return {"value": np.nan, "lower": np.nan, "upper": np.nan, "n": 0, "cells": 0,
                "note": "no cell of the other factors holds both levels"}  # fmt: skip
    value = np.mean([improvement(strata[i][a], strata[i][b], lower_better) for i in matched])
    boot = np.mean([improvement(draws[i][a], draws[i][b], lower_better) for i in matched], axis=0)
    low, high = _interval(boot)
    single = any(min(len(strata[i][a]), len(strata[i][b])) < 2 for i in matched)
    return {
        "value": float(value),
        "lower": low,
        "upper": high,
        "n": sum(len(strata[i][a]) + len(strata[i][b]) for i in matched),
        "cells": len(matched),
        "note": "a cell with one seed of a level: the interval understates the uncertainty"
        if single else "",
    }  # fmt: skip


def improvements(fit: MetricFit, settings: Resampling) -> list[dict[str, Any]]:
    """P(a better than b) for every pair of levels (a before b in the levels' order) of each
    factor of the model that the thesis orders, matched over the cells of its other factors.

    Each stratum (a level in a cell) is resampled once per factor, and every pair reads the
    same draws, as rliable resamples runs once for all its statistics.
    """
    rows = []
    lower_better = lower_is_better(fit.metric)
    for factor in (f for f in ORDERED_FACTORS if f in fit.factors):
        strata = _strata(fit, factor)
        rng = generator(settings.seed, IMPROVEMENT, fit.dataset, fit.metric, factor)
        draws = [
            {level: _resampled(values, settings.resamples, rng) for level, values in cell.items()}
            for cell in strata
        ]
        for a, b in itertools.combinations(present_levels(fit.data[factor]), 2):
            pair = _pair(strata, draws, a, b, lower_better)
            rows.append({"statistic": IMPROVEMENT, "factor": factor, "level_a": a, "level_b": b, **pair})
    return rows


def robust_table(
    data: Fits,
    metrics: tuple[str, ...] | list[str] | None = None,
    settings: Resampling | None = None,
) -> pd.DataFrame:
    """The robust summaries of every model (tidy): `statistic` "iqm" rows name their cell in
    the factor columns (encoder, layer, prior, ...); "probability_of_improvement" rows name
    `factor`, `level_a` and `level_b` (value = P(level_a better than level_b)). `value` with its
    bootstrap interval `lower`..`upper`; `n` the values used, `cells` the cells they come from.

    `data`: results (fitted here) or the fits of `fit_models` (blocked variants are skipped).
    """
    settings = settings or Resampling()
    rows: list[dict[str, Any]] = []
    factors: list[str] = []
    for fit in model_fits(fits_of(data, metrics)):
        factors += [f for f in fit.factors if f not in factors]
        base = {
            "dataset": fit.dataset,
            "metric": fit.metric,
            "better": "lower" if lower_is_better(fit.metric) else "higher",
        }
        rows += [{**base, **row} for row in (*cell_iqms(fit, settings), *improvements(fit, settings))]
    ordered = [f for f in DESIGN_FACTORS if f in factors] + [f for f in factors if f not in DESIGN_FACTORS]
    return pd.DataFrame(rows, columns=[*BASE_COLUMNS, *ordered, *VALUE_COLUMNS])
