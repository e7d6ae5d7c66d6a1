"""Holm's adjustment of the ANOVA's p values across the family of metrics.

The thesis tests each term in eight metrics' models at alpha = 0.01 apiece; `with_holm` adds
`p_holm`, each term's p adjusted over the metrics (Holm 1979; what statsmodels' `multipletests`
with method="holm" gives, which a test checks; computed here because statsmodels runs a full
garbage collection on every call, a quarter second each with the analysis's imports loaded):
one family per dataset, model kind (the thesis's models, or their seed-blocked variants) and
term, so encoder's p values in the eight metrics form one family, the prior-by-layer
interaction's those of the metrics whose model has it. The p adjusted is the one the row says
to read (`read`, assumptions.py): the permutation p where the model's assumptions fail, else the
F test's. The unadjusted `p` and `p_perm` stay; rows without a p (no error term) get NaN.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rlv.analysis.assumptions import READ_PERMUTATION

FAMILY = ("dataset", "block", "term")


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p values of `p` (m,): the k-th smallest times m - k + 1, made
    monotone, at most 1."""
    order = np.argsort(p, kind="stable")
    steps = np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p))))
    adjusted = np.empty(len(p))
    adjusted[order] = np.minimum(steps, 1.0)
    return adjusted


def p_to_read(anova: pd.DataFrame) -> pd.Series:
    """Per row the p its `read` names: `p_perm` where "permutation", else `p`."""
    if "read" not in anova:
        return anova["p"].astype(float)
    permuted = (anova["read"] == READ_PERMUTATION) & anova["p_perm"].notna()
    return anova["p_perm"].where(permuted, anova["p"]).astype(float)


def with_holm(anova: pd.DataFrame) -> pd.DataFrame:
    """The ANOVA table plus `p_holm`: Holm over the metrics of each dataset, model kind and term."""
    out = anova.assign(p_holm=np.nan)
    p = p_to_read(out)
    keys = [out[k].fillna("").astype(str) for k in FAMILY]
    for _, index in out.groupby(keys, sort=False).groups.items():
        values = p.loc[index]
        finite = values[np.isfinite(values)]
        if len(finite):
            out.loc[finite.index, "p_holm"] = holm(finite.to_numpy(float))
    return out
