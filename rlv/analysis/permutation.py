"""Permutation tests of a model's terms (Freedman-Lane), for where the F test's assumptions fail.

For a term T of a model with design X (the sum-coded columns the ANOVA fits), Freedman and Lane
(1983):

1. fit the reduced model Z, X without T's columns: fitted values y_Z, residuals e_Z;
2. permute e_Z and add it back: y* = y_Z + P e_Z;
3. refit X to y* and compute T's F, the same statistic as the ANOVA's: the extra sum of squares
   of dropping T's columns, which with sum-to-zero contrasts is Type III (anova.py), over the
   residual mean square;
4. p = (1 + #{F* >= F}) / (B + 1), B permutations (the identity counted once: p >= 1/(B+1)).

y_Z lies in the column space of Z, inside X's, so it drops out of both residual sums of squares:
T's F at y* is its F at P e_Z, and B permutations cost a few matrix products
(explained SS ||Q'v||^2 with Q an orthonormal basis of the columns). Permutations are
seeded per dataset, metric, model and term (resampling.py). `with_permutation` adds `p_perm`
and `read` to the ANOVA table: the permutation p where the model's assumption checks fail
(assumptions.py), NaN elsewhere (not run: the F test is the one to read).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

from rlv.analysis.anova import ALPHA, MetricFit, Term, column_terms
from rlv.analysis.assumptions import READ_PERMUTATION, check_assumptions
from rlv.analysis.resampling import Resampling, generator

# An F* equal to the observed F up to rounding (the identity permutation, a symmetric design)
# counts as at least as large.
_TIES: Final = 1e-9


def column_basis(x: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the columns of `x` (n, p) -> (n, rank): confounded columns, as
    in a rank-deficient design, fall out."""
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    tol = s.max(initial=0.0) * max(x.shape) * np.finfo(float).eps
    return u[:, s > tol]


def _explained(rows: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Sum of squares of each row of `rows` (B, n) that `basis` (n, r) explains -> (B,)."""
    fitted = rows @ basis  # (B, r): coordinates of the projections
    return np.einsum("ij,ij->i", fitted, fitted)


def freedman_lane(
    fit: MetricFit, term: Term, permutations: int, rng: np.random.Generator
) -> tuple[float, float]:
    """(F, permutation p) of one term of a fitted model; NaN where the term has no columns of
    its own or the model no residual df."""
    exog = np.asarray(fit.result.model.exog, dtype=float)
    owner = column_terms(fit)
    full = column_basis(exog)
    reduced = column_basis(exog[:, [i for i, t in enumerate(owner) if t != term]])
    df_term, df_resid = full.shape[1] - reduced.shape[1], len(exog) - full.shape[1]
    if df_term <= 0 or df_resid <= 0:
        return np.nan, np.nan
    y = fit.y
    resid = y - reduced @ (reduced.T @ y)  # e_Z, (n,)
    order = rng.permuted(np.tile(np.arange(len(y)), (permutations, 1)), axis=1)  # (B, n)
    rows = np.vstack([resid, resid[order]])  # row 0: the observed data
    explained = _explained(rows, full)
    rss_full = np.einsum("ij,ij->i", rows, rows) - explained
    with np.errstate(divide="ignore", invalid="ignore"):
        f_values = ((explained - _explained(rows, reduced)) / df_term) / (rss_full / df_resid)
    observed = float(f_values[0])
    if not np.isfinite(observed):
        return np.nan, np.nan
    count = int(np.sum(f_values[1:] >= observed * (1.0 - _TIES)))
    return observed, (1.0 + count) / (permutations + 1.0)


def with_permutation(
    anova: pd.DataFrame,
    fits: list[MetricFit],
    alpha: float = ALPHA,
    settings: Resampling | None = None,
) -> pd.DataFrame:
    """The ANOVA table (anova.anova_table's rows of `fits`) plus `read` (the model's
    assumption verdict: "F", "permutation" or "") and `p_perm`, the Freedman-Lane p of each
    term of the models whose checks fail (NaN elsewhere)."""
    settings = settings or Resampling()
    out = anova.assign(p_perm=np.nan, read="")
    for fit in fits:
        rows = (out["dataset"] == fit.dataset) & (out["metric"] == fit.metric) & (out["model"] == fit.model)
        read = check_assumptions(fit, alpha)["read"]
        out.loc[rows, "read"] = read
        if read != READ_PERMUTATION:
            continue
        for term in fit.terms:
            name = ":".join(term)
            rng = generator(settings.seed, "permutation", fit.dataset, fit.metric, fit.model, name)
            _, p = freedman_lane(fit, term, settings.permutations, rng)
            out.loc[rows & (out["term"] == name), "p_perm"] = p
    return out
