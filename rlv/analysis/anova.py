"""The thesis's ANOVA models (thesis section 4.5, chapter 5), fitted with statsmodels.

SPSS's GLM, which the thesis used, codes factors with sum-to-zero contrasts and reports Type III
sums of squares; `C(x, Sum)` and `anova_lm(typ=3)` do the same, so F and p match SPSS for balanced
and unbalanced data alike. Which model each metric gets is in design.py; each dataset is
analysed on its own.

Incomplete data (failed trials, a sweep still running) are analysed and flagged. Empty cells can
make interactions inestimable (a rank-deficient design, where Type III does not exist); those
interactions are left out, highest order first, and named in the `note`. Should the design still
be rank-deficient (confounded main effects), each term is tested by the extra sum of squares of
dropping its sum-coded columns (df = the rank it adds), and the note says so.

Beside each model, its seed-blocked variant (`+ seed`, design.py) is fitted and reported as its
own `model` (`... + seed (block)`, `block` = "seed"): its seed row tests the block, whose partial
eta squared is the share of the model's residual sum of squares that the block takes out, and
`block_removes` is the share of the residual variance (mean square) it removes,
1 - MSE_blocked / MSE_model (negative when the block costs more df than it explains).
Every term gets partial eta squared with a 95% interval from the noncentral F (effects.py).

Degenerate data give rows, never an error: what cannot be estimated is NaN and the `note` says
what and why. A model without residual df (one seed per cell), a metric that is constant, a
model with zero residual variance (one that fits every value: a sum of squares below rounding,
n (1e-9 max|y|)^2, counts as zero) have no error term, so F, p and the intervals are NaN; a
factor the sweep varies that has a single level among a metric's values drops out of that
metric's model and the note names it (a factor with one level in the whole sweep, such as the
SVHN follow-up's layer, is no factor of the design: no note); an infinite value (a diverged
trial's) is left out and counted in the note. Post hoc and planning use the same error term
(posthoc.py, plan.py).
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.anova import anova_lm
from statsmodels.tools.sm_exceptions import SingularMatrixWarning

from rlv import columns as col
from rlv.analysis.design import (
    DEFAULT_METRICS,
    GENERIC_METRICS,
    METRIC_MODELS,
    Term,
    describe,
    describe_blocked,
    is_thesis_design,
    model_terms,
    spec_for,
    varying_factors,
)
from rlv.analysis.effects import CI_LEVEL, partial_eta_sq_ci
from rlv.analysis.labels import as_levels, present_datasets
from rlv.analysis.load import Results, trials_of
from rlv.analysis.resampling import Resampling
from rlv.analysis.tables import available_metrics, require_metric, select_dataset
from rlv.errors import RlvError

logger = logging.getLogger(__name__)

ALPHA: Final = 0.01  # the thesis's significance bound (section 4.5)
# A spread below this share of the metric's magnitude is rounding, not variation: least squares
# leaves residuals of ~1e-15 max|y| where a model fits every value.
ROUNDING: Final = 1e-9


def rounding_ss(y: np.ndarray) -> float:
    """The largest sum of squares of `y`'s n values that is rounding error: n (1e-9 max|y|)^2."""
    scale = float(np.abs(y).max()) if len(y) else 0.0
    return len(y) * (ROUNDING * scale) ** 2


def _mse(result: Any, y: np.ndarray) -> float:
    """Residual mean square; NaN without residual df, 0 where the residual SS is rounding."""
    if result.df_resid <= 0:
        return float("nan")
    ssr = float(result.ssr)
    return 0.0 if ssr <= rounding_ss(y) else ssr / float(result.df_resid)


@dataclass(frozen=True, eq=False)
class MetricFit:
    """One fitted model: the data it used, the statsmodels result and the design's flags."""

    dataset: str
    metric: str
    model: str  # short description, e.g. "encoder * layer + prior"
    terms: tuple[Term, ...]  # the terms fitted
    dropped_terms: tuple[Term, ...]  # interactions left out: empty cells made them inestimable
    data: pd.DataFrame  # factor columns + "y", rows with a value only
    result: Any  # statsmodels RegressionResultsWrapper
    n: int
    cells: int  # non-empty cells of the model's factors
    missing_cells: int  # empty cells of the full grid of those factors
    balanced: bool
    full_rank: bool  # False: confounded columns remain (extra-SS tests instead of Type III)
    block: str = ""  # the block factor ("seed") of a blocked variant; "" for the model itself
    block_removes: float = float("nan")  # 1 - MSE_blocked / MSE of the same model without it
    single_level: tuple[str, ...] = ()  # varying factors with one level among the values: left out
    infinite: int = 0  # values left out as infinite

    @property
    def factors(self) -> tuple[str, ...]:
        """The design factors in the model (each with at least two levels; not the block)."""
        return tuple(f for f in _main_factors(self.terms) if f != self.block)

    @property
    def resid_df(self) -> int:
        return int(round(self.result.df_resid))

    @property
    def y(self) -> np.ndarray:
        return self.data["y"].to_numpy(float)

    @property
    def constant(self) -> bool:
        """Whether every value of the metric is the same (up to rounding)."""
        y = self.y
        return len(y) > 0 and float(np.ptp(y)) <= ROUNDING * float(np.abs(y).max())

    @property
    def ssr(self) -> float:
        """The residual sum of squares; 0 where it is rounding error (the model fits exactly)."""
        ssr = float(self.result.ssr)
        return 0.0 if ssr <= rounding_ss(self.y) else ssr

    @property
    def mse(self) -> float:
        """The residual mean square, the error term of F and Tukey tests: NaN where there is
        none (`error_note` says why)."""
        return self.ssr / self.resid_df if not self.error_note else float("nan")

    @property
    def error_note(self) -> str:
        """Why the model has no error term to test against; "" when it has one."""
        if self.constant:
            return f"constant metric (every value {self.y[0]:g})"
        if self.resid_df <= 0:
            return "no residual df (as many parameters as trials, e.g. one seed per cell)"
        if self.ssr <= 0.0:
            return "no residual variance (the model fits every value exactly)"
        return ""


Fits: TypeAlias = Results | pd.DataFrame | Sequence[MetricFit]
"""What the ANOVA, post hoc and residual functions take: results to fit, or `fit_models`' fits."""


def _main_factors(terms: tuple[Term, ...]) -> tuple[str, ...]:
    return tuple(t[0] for t in terms if len(t) == 1)


def _formula(terms: tuple[Term, ...]) -> str:
    if not terms:
        return "y ~ 1"
    return "y ~ " + " + ".join(":".join(f"C({f}, Sum)" for f in term) for term in terms)


def _term_of(name: str) -> Term:
    """'C(encoder, Sum)[S.L]:C(layer, Sum)[S.fc]' -> ('encoder', 'layer'); 'Intercept' -> ()."""
    return tuple(re.findall(r"C\((\w+), Sum\)", name))


def _metric_list(
    trials: pd.DataFrame, metrics: tuple[str, ...] | list[str] | None
) -> list[str]:
    """Validate explicit metrics (RlvError); default: the thesis's metrics that have values."""
    if metrics is None:
        chosen = available_metrics(trials, DEFAULT_METRICS)
        skipped = [m for m in DEFAULT_METRICS if m not in chosen]
        if skipped:
            logger.info("no values for %s: left out of the ANOVA", ", ".join(skipped))
        if not chosen:
            raise RlvError(
                "no metric to analyse: all of " + ", ".join(DEFAULT_METRICS) + " missing"
            )
        return chosen
    for metric in metrics:
        if metric not in METRIC_MODELS:
            raise RlvError(
                f"no ANOVA model for metric {metric!r}: models exist for {', '.join(METRIC_MODELS)}"
            )
        require_metric(trials, metric)
    return list(metrics)


def _finite(trials: pd.DataFrame, metric: str) -> pd.Series:
    """Which rows hold a finite value of `metric` (none without its column)."""
    if metric not in trials:
        return pd.Series(False, index=trials.index)
    return np.isfinite(pd.to_numeric(trials[metric], errors="coerce").astype(float))


def _design_data(trials: pd.DataFrame, metric: str, factors: list[str]) -> pd.DataFrame:
    """Factor columns (as categories: numeric levels too) and the response `y`, rows with a
    finite value only (an infinite one, a diverged trial's, counts as missing), unused levels
    dropped."""
    data = trials[factors].copy()
    y = pd.to_numeric(trials[metric], errors="coerce").astype(float)
    data["y"] = y.where(np.isfinite(y))
    data = data.dropna(subset=["y", *factors]).reset_index(drop=True)
    for f in factors:
        data[f] = as_levels(data[f])
    return data


def _fit(data: pd.DataFrame, terms: tuple[Term, ...]) -> Any:
    with warnings.catch_warnings():
        # Rank deficiency is detected and handled by the caller; statsmodels' warning is noise.
        warnings.simplefilter("ignore", SingularMatrixWarning)
        return smf.ols(_formula(terms), data).fit()


def _full_rank(result: Any) -> bool:
    exog = result.model.exog
    return bool(np.linalg.matrix_rank(exog) == exog.shape[1])


def fit_metric(
    trials: pd.DataFrame, metric: str, dataset: str = "", block: str = ""
) -> MetricFit:
    """Fit the metric's model to one dataset's trials: the thesis's (METRIC_MODELS) where the
    sweep varies only the thesis's factors, else the full factorial of its varying factors
    (design.py). `block` ("seed") adds that block as a main effect: the blocked variant.

    Empty cells can make high-order interactions inestimable (a rank-deficient design); those
    interactions are dropped, highest order first, until the design has full rank, and listed in
    `dropped_terms`.
    """
    factors = list(varying_factors(trials))
    data = _design_data(trials, metric, [*factors, *([block] if block else [])])
    varying = [f for f in factors if data[f].nunique() > 1]
    # a factor (or the block) that varies but has values at one level only: not estimable
    single = [f for f in [*factors, *([block] if block else [])] if data[f].nunique() == 1]
    spec = spec_for(metric, varying)
    fitted, dropped = model_terms(spec), []
    if block:
        fitted += ((block,),)
    result = _fit(data, fitted)
    full_rank = _full_rank(result)
    while not full_rank and any(len(t) > 1 for t in fitted):
        top = max(len(t) for t in fitted)
        worst = [t for t in fitted if len(t) == top][-1]
        dropped.append(worst)
        fitted = tuple(t for t in fitted if t != worst)
        result = _fit(data, fitted)
        full_rank = _full_rank(result)
    # only interactions are dropped: main effects stay; cells are the design's, not the block's
    factors = [f for f in _main_factors(fitted) if f != block]
    if factors:
        counts = data.groupby(factors, observed=True).size()
        grid = int(np.prod([data[f].nunique() for f in factors]))
        cells, missing = len(counts), grid - len(counts)
        balanced = missing == 0 and counts.nunique() == 1
    else:
        cells, missing, balanced = 1, 0, True
    removes = float("nan")
    if block:
        unblocked = _fit(data, tuple(t for t in fitted if t != (block,)))
        y = data["y"].to_numpy(float)
        mse_u, mse_b = _mse(unblocked, y), _mse(result, y)
        removes = 1.0 - mse_b / mse_u if np.isfinite(mse_b) and mse_u > 0 else np.nan
    return MetricFit(
        dataset=dataset,
        metric=metric,
        model=describe_blocked(spec, block) if block else describe(spec),
        terms=fitted,
        dropped_terms=tuple(dropped),
        data=data,
        result=result,
        n=len(data),
        cells=cells,
        missing_cells=missing,
        balanced=bool(balanced),
        full_rank=full_rank,
        block=block,
        block_removes=removes,
        single_level=tuple(single),
        infinite=int(np.isinf(pd.to_numeric(trials[metric], errors="coerce")).sum()),
    )


def fit_models(
    data: Results | pd.DataFrame,
    metrics: tuple[str, ...] | list[str] | None = None,
    blocks: bool = True,
) -> list[MetricFit]:
    """Per dataset and metric the model and (`blocks`, where seeds vary) its seed-blocked variant.

    metrics: default the thesis's eight, or for a sweep that varies other factors the test
    metrics (design.GENERIC_METRICS).
    """
    trials = trials_of(data)
    chosen = _metric_list(trials, metrics)
    fits = []
    for dataset in present_datasets(trials):
        part = select_dataset(trials, dataset)
        generic = not is_thesis_design(varying_factors(part))
        for metric in chosen:
            if metrics is None and generic and metric not in GENERIC_METRICS:
                continue
            finite = _finite(part, metric)
            if not finite.any():
                logger.info("dataset %s has no values of %s: skipped", dataset, metric)
                continue
            fits.append(fit_metric(part, metric, dataset or ""))
            # a block needs two seeds among the metric's values
            seeds = part.loc[finite, col.SEED] if col.SEED in part else None
            if blocks and seeds is not None and seeds.nunique() > 1:
                fits.append(fit_metric(part, metric, dataset or "", block=col.SEED))
    return fits


def model_fits(fits: Sequence[MetricFit]) -> list[MetricFit]:
    """The models themselves, without their blocked variants (what post hoc tests use)."""
    return [fit for fit in fits if not fit.block]


def fits_of(data: Fits, metrics: tuple[str, ...] | list[str] | None = None) -> list[MetricFit]:
    """`fit_models(data, metrics)` for results; fits from `fit_models` as they are (those of
    `metrics` only, when given), so that one set of fits serves every table."""
    if isinstance(data, Results | pd.DataFrame):
        return fit_models(data, metrics)
    return [fit for fit in data if metrics is None or fit.metric in metrics]


def _type3(fit: MetricFit) -> dict[Term, tuple[float, float]]:
    """Type III (SS, df) per term from statsmodels (full-rank designs with residual df)."""
    table = anova_lm(fit.result, typ=3)
    return {
        _term_of(str(name)): (float(row["sum_sq"]), float(row["df"]))
        for name, row in table.iterrows()
        if name != "Residual" and _term_of(str(name))
    }


def column_terms(fit: MetricFit) -> list[Term]:
    """The term each column of the fit's design belongs to (() for the intercept)."""
    return [_term_of(name) for name in fit.result.model.exog_names]


def _extra_ss(fit: MetricFit) -> dict[Term, tuple[float, float]]:
    """Per term: RSS increase and rank lost when its sum-coded columns are dropped.

    Equals Type III for full-rank designs; stays defined when empty cells make columns collinear.
    """
    exog = np.asarray(fit.result.model.exog, dtype=float)
    y = np.asarray(fit.result.model.endog, dtype=float)
    owner = [_term_of(name) for name in fit.result.model.exog_names]

    def rss_rank(x: np.ndarray) -> tuple[float, int]:
        beta, *_ = np.linalg.lstsq(x, y, rcond=None)
        resid = y - x @ beta
        return float(resid @ resid), int(np.linalg.matrix_rank(x))

    rss_full, rank_full = rss_rank(exog)
    out = {}
    for term in fit.terms:
        keep = [i for i, t in enumerate(owner) if t != term]
        rss, rank = rss_rank(exog[:, keep])
        out[term] = (max(rss - rss_full, 0.0), float(rank_full - rank))
    return out


def _rows(fit: MetricFit, alpha: float) -> list[dict[str, Any]]:
    resid_df = fit.resid_df
    ss_resid = fit.ssr  # 0 where only rounding is left
    rounding = rounding_ss(fit.y)
    error = fit.error_note  # no error term: F, p and intervals are NaN
    notes = []
    if fit.missing_cells:
        notes.append(f"{fit.missing_cells} empty cells")
    elif not fit.balanced:
        notes.append("unbalanced")
    if not fit.terms:
        notes.append("no factor varies")
    if error:
        notes.append(f"{error}: F, p and intervals not estimable")
    if fit.infinite:
        notes.append(f"{fit.infinite} infinite value{'s' if fit.infinite > 1 else ''} left out")
    if fit.single_level:
        levels = ", ".join(f"{f} ({fit.data[f].iloc[0]})" for f in fit.single_level)
        notes.append(f"one level among the values, its effect not estimable: {levels}")
    use_type3 = fit.full_rank and resid_df > 0
    if fit.dropped_terms:
        names = ", ".join(":".join(t) for t in fit.dropped_terms)
        notes.append(f"not estimable, left out: {names}")
    if not fit.full_rank:
        notes.append("rank-deficient design: extra-SS tests instead of Type III")
    effects = _type3(fit) if use_type3 and fit.terms else _extra_ss(fit)
    base = {
        "dataset": fit.dataset,
        "metric": fit.metric,
        "model": fit.model,
        "block": fit.block,
        "resid_df": resid_df,
        "n": fit.n,
        "cells": fit.cells,
        "missing_cells": fit.missing_cells,
        "balanced": fit.balanced,
        "note": "; ".join(notes),
    }
    rows = []
    for term in fit.terms or ((),):
        ss, df = effects.get(term, (np.nan, 0.0))
        if df <= 0:  # no columns of its own (one level, or confounded): nothing to estimate
            ss = np.nan
        elif ss <= rounding:  # a term that explains nothing but rounding explains nothing
            ss = 0.0
        if not error and df > 0:
            f_value = (ss / df) / (ss_resid / resid_df)
            p_value = float(stats.f.sf(f_value, df, resid_df))
        else:
            f_value = p_value = np.nan
        denom = ss + ss_resid
        low, high = partial_eta_sq_ci(f_value, df, resid_df, CI_LEVEL)
        rows.append(
            {
                **base,
                "term": ":".join(term),
                "df": int(df),
                "ss": ss,
                "F": f_value,
                "p": p_value,
                "partial_eta_sq": ss / denom if denom > 0 else np.nan,
                "eta_sq_lower": low,
                "eta_sq_upper": high,
                "significant": bool(p_value < alpha) if np.isfinite(p_value) else False,
                "block_removes": fit.block_removes,
            }
        )
    return rows


ANOVA_COLUMNS: Final = (
    "dataset", "metric", "model", "block", "term", "df", "resid_df", "ss", "F", "p", "p_holm",
    "p_perm", "read", "partial_eta_sq", "eta_sq_lower", "eta_sq_upper", "significant", "block_removes", "n",
    "cells", "missing_cells", "balanced", "note",
)  # fmt: skip


def anova_table(
    data: Fits,
    metrics: tuple[str, ...] | list[str] | None = None,
    alpha: float = ALPHA,
    resampling: Resampling | None = None,
) -> pd.DataFrame:
    """The tidy ANOVA table: one row per dataset, metric and model term.

    `data`: results (fitted here) or the fits of `fit_models`, to fit once for several tables.

    F and p are Type III (sum-to-zero contrasts), as SPSS reports them; `partial_eta_sq` is
    SS_term / (SS_term + SS_resid) with its 95% interval `eta_sq_lower`..`eta_sq_upper` (the
    noncentral F inverted, effects.py). Each model's seed-blocked variant follows it (`block` =
    "seed", `block_removes`: the share of residual variance the block removes).
    Flags: `balanced`, `n`, `cells`, `missing_cells`, `note`.

    `read` says which test of a model's terms to read: "F", or "permutation" where its residuals
    fail Shapiro-Wilk or Brown-Forsythe at alpha (assumptions.py); there `p_perm` is the
    Freedman-Lane permutation p (permutation.py; `resampling` sets the permutations and seed).
    `p_holm`: the p to read, Holm-adjusted over the metrics (multiplicity.py).
    """
    # Imported here: both modules build on this one's MetricFit.
    from rlv.analysis.multiplicity import with_holm
    from rlv.analysis.permutation import with_permutation

    rows: list[dict[str, Any]] = []
    fits = fits_of(data, metrics)
    with warnings.catch_warnings():
        # A perfect fit (no residual df) makes statsmodels divide by zero; we report it instead.
        warnings.simplefilter("ignore", RuntimeWarning)
        for fit in fits:
            rows += _rows(fit, alpha)
    table = with_permutation(pd.DataFrame(rows, columns=list(ANOVA_COLUMNS)), fits, alpha, resampling)
    return with_holm(table).reindex(columns=list(ANOVA_COLUMNS))
