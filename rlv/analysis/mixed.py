"""Seeds as a random effect: each thesis model with a random intercept per seed, fitted by REML.

    y = X b + u_seed + e,   u_seed ~ N(0, var_seed),   e ~ N(0, var_residual)

X holds the model's fixed effects as the ANOVA fits them (design.py; a column space, so the
coding does not matter), fitted by statsmodels' MixedLM with REML. The two variance components
and their shares of the total are the table's rows; the seed's share,
var_seed / (var_seed + var_residual), is the intraclass correlation (ICC): how much of what the
design leaves unexplained two trials of one seed share (its split and frozen initialisation).
Where the seed-blocked ANOVA (anova.py) asks whether the seed matters, the ICC says how much.
For a balanced design (every seed in every cell once) REML equals the ANOVA estimator from the
expected mean squares, var_seed = (MS_seed - MS_residual) / cells, var_residual = MS_residual,
where that var_seed is positive (tests/test_analysis_mixed.py checks it).

REML's seed variance is on its boundary, zero, when the seed means vary less than the residuals
would make them vary. That is decided exactly, by the sign of the REML score in var_seed at
zero, before any optimiser runs (an optimiser creeps towards zero without reaching it): there
the seed variance is 0 and the residual variance that of the model without seeds, and the note
says so. A REML fit that does not converge keeps its estimates with a note; statsmodels'
warnings are caught and never printed. A model without seeds to compare (one seed among the
values) or without an error term (anova.MetricFit.error_note) gets NaN rows and a note.
"""

from __future__ import annotations

import warnings
from typing import Any, Final

import numpy as np
import pandas as pd
from statsmodels.regression.mixed_linear_model import MixedLM
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from rlv import columns as col
from rlv.analysis.anova import Fits, MetricFit, column_terms, fits_of, model_fits
from rlv.analysis.permutation import column_basis

SEED: Final = "seed"  # the components: the seed's random intercept and the residual
RESIDUAL: Final = "residual"
RANDOM_EFFECTS_COLUMNS: Final = (
    "dataset", "metric", "model", "component", "variance", "share", "n", "seeds", "note",
)  # fmt: skip
RANDOM_SUFFIX: Final = " + (1 | seed)"
GTOL: Final = 1e-8  # BFGS's default, 1e-5, leaves var_seed off by ~1e-4 of itself


def _on_boundary(z: np.ndarray, basis: np.ndarray, seeds: np.ndarray) -> tuple[bool, float]:
    """Whether REML puts var_seed at 0, and var_residual there (the fixed model's MSE).

    The REML score in var_seed at 0 is, up to a positive factor,
    sum_j (sum of seed j's residuals)^2 - var * sum_j 1_j' (I - H) 1_j, with the fixed model's
    residuals, hat matrix H and MSE var: not positive means no seed variance.
    """
    resid = z - basis @ (basis.T @ z)
    var = float(resid @ resid) / (len(z) - basis.shape[1])
    between = within = 0.0
    for seed in np.unique(seeds):
        ones = (seeds == seed).astype(float)
        between += float(resid @ ones) ** 2
        projected = basis.T @ ones
        within += float(ones.sum() - projected @ projected)
    return between <= var * within, var


def _reml(z: np.ndarray, basis: np.ndarray, seeds: np.ndarray) -> tuple[float, float, str]:
    """(var_seed, var_residual, note) of standardised values `z`."""
    boundary, var = _on_boundary(z, basis, seeds)
    if boundary:
        return 0.0, var, "seed variance on its boundary (0): seeds vary no more than residuals"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            # standardised values: a tight gradient tolerance is affordable and meaningful
            result = MixedLM(z, basis, groups=seeds).fit(reml=True, gtol=GTOL)
        except (np.linalg.LinAlgError, ValueError) as exc:
            return np.nan, np.nan, f"REML fit failed: {exc}"
    if result.converged:
        return float(np.asarray(result.cov_re)[0, 0]), float(result.scale), ""
    said = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    reason = said[-1] if said else "no reason given"
    return (
        float(np.asarray(result.cov_re)[0, 0]),
        float(result.scale),
        f"REML did not converge ({reason}): estimates are the last iterate",
    )


def _components(fit: MetricFit, blocked: MetricFit | None) -> tuple[float, float, int, str]:
    """(var_seed, var_residual, seeds, note) for one model; NaN where not estimable."""
    if blocked is None or col.SEED not in blocked.data:  # fit_models blocks where seeds vary
        return np.nan, np.nan, 1, "one seed among the values: no seed variance to estimate"
    seeds = blocked.data[col.SEED].astype(str).to_numpy()
    count = len(np.unique(seeds))
    for model, where in ((fit, ""), (blocked, " with the seed in the model")):
        if model.error_note:  # constant values, or values the seed alone fixes: no residual
            return np.nan, np.nan, count, f"{model.error_note}{where}: variance components not estimable"
    keep = [i for i, term in enumerate(column_terms(blocked)) if term != (col.SEED,)]
    exog = np.asarray(blocked.result.model.exog, dtype=float)[:, keep]
    y = blocked.y
    scale = float(y.std())  # standardised for the optimiser: variances scale by its square
    var_seed, var_resid, note = _reml((y - y.mean()) / scale, column_basis(exog), seeds)
    return var_seed * scale**2, var_resid * scale**2, count, note


def random_effects(fit: MetricFit, blocked: MetricFit | None) -> list[dict[str, Any]]:
    """The seed and residual rows of one model (`blocked`: its seed-blocked fit, which holds the
    seeds; None where there is none)."""
    var_seed, var_resid, seeds, note = _components(fit, blocked)
    total = var_seed + var_resid
    base = {
        "dataset": fit.dataset,
        "metric": fit.metric,
        "model": fit.model + RANDOM_SUFFIX,
        "n": blocked.n if blocked is not None else fit.n,
        "seeds": seeds,
        "note": note,
    }
    return [
        {**base, "component": name, "variance": var, "share": var / total if total > 0 else np.nan}
        for name, var in ((SEED, var_seed), (RESIDUAL, var_resid))
    ]


def random_effects_table(data: Fits, metrics: tuple[str, ...] | list[str] | None = None) -> pd.DataFrame:
    """Per dataset and metric, the seed and residual variance components of the thesis's model
    with a random intercept per seed (REML); the seed row's `share` is the ICC.

    `data`: results (fitted here) or the fits of `fit_models`, whose seed-blocked variants hold
    the seeds.
    """
    fits = fits_of(data, metrics)
    blocked = {(f.dataset, f.metric): f for f in fits if f.block == col.SEED}
    rows: list[dict[str, Any]] = []
    for fit in model_fits(fits):
        rows += random_effects(fit, blocked.get((fit.dataset, fit.metric)))
    return pd.DataFrame(rows, columns=list(RANDOM_EFFECTS_COLUMNS))
