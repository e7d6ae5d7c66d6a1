"""The F tests' assumptions, checked per model, and which test to read where they fail.

For each model the ANOVA fits (the thesis's and its seed-blocked variant):

- normality of the residuals: Shapiro-Wilk on the model's residuals;
- equal variances across the design's cells: Brown-Forsythe, Levene's test centred on each
  cell's median (robust where the values are skewed, as test statistics of a few seeds can be),
  on the model's residuals grouped by cell. For the thesis's models the fitted value is constant
  within a cell, so that is the test on the values themselves; for a blocked model it is the
  spread left once the seeds' shifts are removed.

Where either rejects at alpha (0.01, the thesis's), `read` is "permutation": the F test's p may
be off, and the Freedman-Lane permutation p of each term (permutation.py) is the one to read;
else "F". A check that is not defined (cells without spread, too few residuals) counts as not
failed and the `note` says why; a model without an error term has nothing to read ("").
"""

from __future__ import annotations

import warnings
from typing import Any, Final

import numpy as np
import pandas as pd
from scipy import stats

from rlv.analysis.anova import ALPHA, Fits, MetricFit, fits_of

READ_F: Final = "F"
READ_PERMUTATION: Final = "permutation"
ASSUMPTION_COLUMNS: Final = (
    "dataset", "metric", "model", "block", "n", "cells", "shapiro_W", "shapiro_p", "normal",
    "brown_forsythe_W", "brown_forsythe_p", "equal_variances", "read", "note",
)  # fmt: skip


def _residual_cells(fit: MetricFit, resid: np.ndarray) -> list[np.ndarray]:
    """The residuals per cell of the design's factors (not the block), cells of two or more."""
    if not fit.factors:
        return [resid]
    keys = fit.data.groupby(list(fit.factors), observed=True).ngroup().to_numpy()
    return [resid[keys == k] for k in np.unique(keys) if (keys == k).sum() >= 2]


def _statistic(test: Any, *samples: np.ndarray, **options: Any) -> tuple[float, float]:
    """(statistic, p) of a scipy test; NaN where it is not defined (no spread: inf or NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns before returning NaN/inf: we say why instead
        result = test(*samples, **options)
    value, p = float(result.statistic), float(result.pvalue)
    return (value, p) if np.isfinite(value) and np.isfinite(p) else (np.nan, np.nan)


def _verdict(p: float, alpha: float) -> bool | None:
    return bool(p >= alpha) if np.isfinite(p) else None


def check_assumptions(fit: MetricFit, alpha: float = ALPHA) -> dict[str, Any]:
    """One model's row: Shapiro-Wilk, Brown-Forsythe, whether each holds at alpha, `read`."""
    row: dict[str, Any] = {
        "dataset": fit.dataset, "metric": fit.metric, "model": fit.model, "block": fit.block,
        "n": fit.n, "cells": 0, "shapiro_W": np.nan, "shapiro_p": np.nan, "normal": None,
        "brown_forsythe_W": np.nan, "brown_forsythe_p": np.nan, "equal_variances": None,
    }  # fmt: skip
    if fit.error_note:
        return {**row, "read": "", "note": f"{fit.error_note}: no test to check"}
    resid = np.asarray(fit.result.resid, dtype=float)
    cells = _residual_cells(fit, resid)
    notes = []
    if len(cells) >= 2:
        bf_w, bf_p = _statistic(stats.levene, *cells, center="median")
        if not np.isfinite(bf_p):
            notes.append("Brown-Forsythe not defined: no spread about the cells' medians")
    else:
        bf_w = bf_p = np.nan
        notes.append("Brown-Forsythe not defined: fewer than two cells with two or more trials")
    sw_w, sw_p = _statistic(stats.shapiro, resid) if len(resid) >= 3 else (np.nan, np.nan)
    if not np.isfinite(sw_p):
        notes.append("Shapiro-Wilk not defined: " + ("fewer than three residuals" if len(resid) < 3
                                                     else "no spread in the residuals"))  # fmt: skip
    normal, equal = _verdict(sw_p, alpha), _verdict(bf_p, alpha)
    failed = [name for name, ok in (("normality", normal), ("equal variances", equal)) if ok is False]
    if failed:
        notes.append(f"{' and '.join(failed)} rejected at alpha = {alpha:g}: read the permutation p")
    return {
        **row,
        "cells": len(cells),
        "shapiro_W": sw_w,
        "shapiro_p": sw_p,
        "normal": normal,
        "brown_forsythe_W": bf_w,
        "brown_forsythe_p": bf_p,
        "equal_variances": equal,
        "read": READ_PERMUTATION if failed else READ_F,
        "note": "; ".join(notes),
    }


def assumption_table(
    data: Fits, metrics: tuple[str, ...] | list[str] | None = None, alpha: float = ALPHA
) -> pd.DataFrame:
    """The assumption checks of every model, its seed-blocked variant included (one row each).

    `normal`/`equal_variances` are p >= alpha (None where not defined); `read` says which test
    of the model's terms to read: "F", "permutation" (a check failed), or "" (no error term).
    `data`: results (fitted here) or the fits of `fit_models`.
    """
    rows = [check_assumptions(fit, alpha) for fit in fits_of(data, metrics)]
    return pd.DataFrame(rows, columns=list(ASSUMPTION_COLUMNS))
