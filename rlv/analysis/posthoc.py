"""Post hoc comparisons between factor levels, the thesis's ordering strings, residual checks.

Tukey HSD between the levels of every factor of each model (encoder, layer, prior, and whatever
else a sweep varies) at alpha = 0.01; each pair's mean difference comes with its simultaneous
(1 - alpha) Tukey interval (`lower`, `upper`, `confidence`). SPSS's GLM post hoc tests (what the thesis ran)
use the model's error term: its mean square error and residual df. statsmodels'
`pairwise_tukeyhsd` uses a one-way error term instead, which in the factorial models would count
the prior's large effect on the negative ELBO as noise. So we compute the Tukey-Kramer test from
the fitted model's MSE and df with scipy's studentized range. For a one-way model (SVHN) it
equals `pairwise_tukeyhsd` (a test checks that).

Orderings read like the thesis's: ascending means, `<` between neighbours that differ
significantly, `&` between neighbours that do not: `L < PNL & RKS < NL`.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import pandas as pd
from scipy import stats

from rlv import columns as col
from rlv.analysis.anova import ALPHA, ROUNDING, Fits, MetricFit, fits_of, model_fits

POSTHOC_COLUMNS: Final = (
    "dataset", "metric", "factor", "group1", "group2", "mean1", "mean2", "meandiff",
    "lower", "upper", "confidence", "p_adj", "reject", "error_df", "note",
)  # fmt: skip


@functools.lru_cache(maxsize=64)
def _q_crit(alpha: float, k_levels: int, df: int) -> float:
    # The studentized range's inverse is a slow numerical integral; models share few (k, df).
    return float(stats.studentized_range.isf(alpha, k_levels, df))


def _level_stats(fit: MetricFit, factor: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Levels (in order), observed marginal means and counts of `factor` in the fit's data."""
    grouped = fit.data.groupby(factor, observed=True)["y"]
    means, counts = grouped.mean(), grouped.size()
    levels = [str(level) for level in means.index]
    return levels, means.to_numpy(float), counts.to_numpy(float)


def tukey_hsd(fit: MetricFit, factor: str = col.ENCODER, alpha: float = ALPHA) -> pd.DataFrame:
    """All pairs of `factor`'s levels for one fitted model: meandiff = mean2 - mean1.

    Tukey-Kramer with the model's error term (MSE and residual df, `error_df`), as SPSS's GLM;
    `lower`..`upper` is the pair's simultaneous (1 - alpha) interval for meandiff. Without
    residual df, p and the interval are NaN; without residual variance (a constant metric, a
    model that fits every value) the differences are exact: the interval is the difference, p
    its limit (0 where the means differ, 1 where not). `note` says which.
    """
    if factor not in fit.factors:
        return pd.DataFrame(columns=list(POSTHOC_COLUMNS))
    levels, means, counts = _level_stats(fit, factor)
    base = {"dataset": fit.dataset, "metric": fit.metric, "factor": factor}
    rows: list[dict[str, Any]] = []
    df = fit.resid_df
    # No residual variance (a constant metric, a model that fits every value): the means are
    # exact, so each interval is the difference itself and p is its limit as the error variance
    # goes to 0: 0 where the means differ, 1 where they are equal. No residual df: NaN.
    exact = df > 0 and not fit.ssr > 0
    mse = 0.0 if exact else fit.mse  # NaN without an error term
    if exact:
        note = f"{fit.error_note}: exact differences (p 0 or 1, interval of width 0)"
    else:
        note = f"{fit.error_note}: p and interval not estimable" if fit.error_note else ""
    rounding = ROUNDING * float(np.abs(fit.y).max()) if fit.n else 0.0
    k_levels = len(levels)
    q_crit = 0.0 if exact else _q_crit(alpha, k_levels, df) if np.isfinite(mse) else np.nan
    for i, j in itertools.combinations(range(k_levels), 2):
        diff = float(means[j] - means[i])
        # Tukey-Kramer: the pair's standard error in studentized-range units.
        se = np.sqrt(mse / 2.0 * (1.0 / counts[i] + 1.0 / counts[j]))
        if exact:
            p_adj = 0.0 if abs(diff) > rounding else 1.0
        elif np.isfinite(se) and se > 0:
            p_adj = float(stats.studentized_range.sf(abs(diff) / se, k_levels, df))
        else:
            p_adj = np.nan
        rows.append(
            {
                **base,
                "group1": levels[i],
                "group2": levels[j],
                "mean1": float(means[i]),
                "mean2": float(means[j]),
                "meandiff": diff,
                "lower": diff - q_crit * se,
                "upper": diff + q_crit * se,
                "confidence": 1.0 - alpha,
                "p_adj": p_adj,
                "reject": bool(p_adj < alpha) if np.isfinite(p_adj) else False,
                "error_df": df,
                "note": note,
            }
        )
    return pd.DataFrame(rows, columns=list(POSTHOC_COLUMNS))


def posthoc_table(
    data: Fits,
    metrics: tuple[str, ...] | list[str] | None = None,
    factor: str | Sequence[str] | None = None,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """Tukey HSD between the levels of `factor` (a name, several, or None: every factor of each
    model) per dataset and metric (tidy: one row a pair).

    `data`: results (fitted here) or the fits of `fit_models` (blocked variants are skipped:
    the post hoc tests are the thesis models').
    """
    frames = []
    for fit in model_fits(fits_of(data, metrics)):
        factors = fit.factors if factor is None else (factor,) if isinstance(factor, str) else factor
        frames += [tukey_hsd(fit, f, alpha) for f in factors]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=list(POSTHOC_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def ordering_string(
    means: Mapping[str, float],
    differ: Iterable[tuple[str, str] | frozenset[str]],
    descending: bool = False,
) -> str:
    """`L < PNL & RKS < NL`: levels by mean, `<` (or `>`) where neighbours differ, else `&`.

    `differ` holds the pairs (either order) that differ significantly.
    """
    pairs = {frozenset(p) for p in differ}
    order = sorted(means, key=lambda lvl: means[lvl], reverse=descending)
    if not order:
        return ""
    sign = " > " if descending else " < "
    text = order[0]
    for prev, level in itertools.pairwise(order):
        text += (sign if frozenset((prev, level)) in pairs else " & ") + level
    return text


def ordering_groups(ordering: str) -> list[frozenset[str]]:
    """`L < PNL & RKS < NL` -> [{L}, {PNL, RKS}, {NL}] in ascending order (`>` is reversed)."""
    descending = ">" in ordering
    parts = ordering.split(">" if descending else "<")
    groups = [frozenset(p.strip() for p in part.split("&")) for part in parts]
    return groups[::-1] if descending else groups


def _consistent(groups: list[frozenset[str]], pairs: set[frozenset[str]]) -> bool:
    """Whether the ordering's groups say exactly what the pairwise tests say."""
    where = {lvl: i for i, g in enumerate(groups) for lvl in g}
    return all(
        (where[a] != where[b]) == (frozenset((a, b)) in pairs)
        for a, b in itertools.combinations(where, 2)
    )


def ordering_table(posthoc: pd.DataFrame) -> pd.DataFrame:
    """One ordering string per dataset, metric and factor, from `posthoc_table`'s pairs.

    `consistent` is False when the tests are not transitive (A ~ B, B ~ C, but A < C): the
    string then joins such levels with `&` and the pairwise table is the better summary.
    `ordering` is None where nothing could be tested (a model without residual df).
    """
    rows = []
    keys = ["dataset", "metric", "factor"]
    for (dataset, metric, factor), pairs in posthoc.groupby(keys, sort=False):
        means = dict(zip(pairs["group1"], pairs["mean1"], strict=True))
        means.update(zip(pairs["group2"], pairs["mean2"], strict=True))
        sig = pairs[pairs["reject"].astype(bool)]
        differ = {frozenset(p) for p in zip(sig["group1"], sig["group2"], strict=True)}
        testable = bool(pairs["p_adj"].notna().any())  # no residual df: nothing was tested
        text = ordering_string(means, differ) if testable else None
        rows.append(
            {
                "dataset": dataset,
                "metric": metric,
                "factor": factor,
                "ordering": text,
                "consistent": _consistent(ordering_groups(text), differ) if text else None,
            }
        )
    return pd.DataFrame(rows, columns=[*keys, "ordering", "consistent"])


def _cells(fit: MetricFit) -> list[np.ndarray]:
    if not fit.factors:
        return [fit.data["y"].to_numpy(float)]
    groups = fit.data.groupby(list(fit.factors), observed=True)["y"]
    return [g.to_numpy(float) for _, g in groups if len(g) >= 2]


def residual_checks(
    data: Fits,
    metrics: tuple[str, ...] | list[str] | None = None,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """The ANOVA's assumptions per dataset and metric: Levene across cells, Shapiro-Wilk on
    the model's residuals.

    Levene centres on the mean, as SPSS's GLM does. `homoscedastic`/`normal` are p >= alpha;
    where a statistic is not defined (no spread in the cells, no residual variance) it is NaN
    and `note` says why.
    `data`: results (fitted here) or the fits of `fit_models`.
    """
    rows = []
    for fit in model_fits(fits_of(data, metrics)):
        cells = _cells(fit)
        resid = np.asarray(fit.result.resid, dtype=float)
        notes = []
        with warnings.catch_warnings():
            # Constant cells (zero spread) make both statistics undefined: report NaN.
            warnings.simplefilter("ignore")
            if len(cells) >= 2:
                levene = stats.levene(*cells, center="mean")
                lev_w, lev_p = float(levene.statistic), float(levene.pvalue)
            else:
                lev_w = lev_p = np.nan
            fits_exactly = not fit.ssr > 0  # residuals are rounding error, or none
            if len(resid) >= 3 and not fits_exactly and np.ptp(resid) > 0:
                shapiro = stats.shapiro(resid)
                sw_w, sw_p = float(shapiro.statistic), float(shapiro.pvalue)
            else:
                sw_w = sw_p = np.nan
        if not np.isfinite(lev_p):
            notes.append(
                "Levene not defined: "
                + ("fewer than two cells with two or more trials" if len(cells) < 2
                   else "no spread within the cells")
            )
        if not np.isfinite(sw_p):
            notes.append(
                "Shapiro-Wilk not defined: "
                + ("fewer than three residuals" if len(resid) < 3
                   else "no residual df" if fit.resid_df <= 0 else "no residual variance")
            )
        rows.append(
            {
                "dataset": fit.dataset,
                "metric": fit.metric,
                "model": fit.model,
                "n": fit.n,
                "levene_cells": len(cells),
                "levene_W": lev_w,
                "levene_p": lev_p,
                "homoscedastic": bool(lev_p >= alpha) if np.isfinite(lev_p) else None,
                "shapiro_W": sw_w,
                "shapiro_p": sw_p,
                "normal": bool(sw_p >= alpha) if np.isfinite(sw_p) else None,
                "note": "; ".join(notes),
            }
        )
    return pd.DataFrame(rows)
