"""Human-readable names for metrics and factors, used by tables, plots and the report.

Column names stay the store's code names everywhere in data; labels are for display only.
"""

from __future__ import annotations

from typing import Final

import pandas as pd

from rlv import columns as col

METRIC_LABELS: Final[dict[str, str]] = {
    col.TEST_NEG_ELBO: "Negative ELBO (test)",
    col.TEST_RT: "Regularization term RT (test)",
    col.TEST_RT_ELBO: "RT as -KL (test)",
    col.TEST_RE: "Reconstruction error RE (test)",
    col.FID: "FID",
    col.EPOCH_TIME_S: "Time per epoch (s)",
    # positive = the test set is worse (rlv/analysis/gaps.py)
    col.GAP_NEG_ELBO: "Overfitting gap, negative ELBO (test - train)",
    col.GAP_RE: "Overfitting gap, RE (test - train)",
    col.GAP_RT: "Overfitting gap, RT (train - test)",
    col.TRAIN_NEG_ELBO: "Negative ELBO (train)",
    col.TRAIN_RE: "RE (train)",
    col.TRAIN_RT: "RT (train)",
    col.TRAINABLE_PARAMS: "Trainable weights",
    col.FLOW_LOGDET: "Flow log|det| (test)",
}

# The thesis's tables 5.1-5.5 and 5.10, in its order.
THESIS_TABLE_METRICS: Final[tuple[str, ...]] = (
    col.TEST_NEG_ELBO,
    col.TEST_RT,
    col.TEST_RE,
    col.FID,
    col.EPOCH_TIME_S,
)


def metric_label(metric: str) -> str:
    """A display name for a metric column; the column name itself when none is known."""
    return METRIC_LABELS.get(metric, metric)


def present_levels(series: pd.Series) -> list[str]:
    """The levels that occur in `series`, as text: category order for a Categorical, numeric
    order for numbers (a factor such as latent_dim: 8 < 16 < 32), else sorted."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        present = set(series.dropna().astype(str))
        return [str(c) for c in series.cat.categories if str(c) in present]
    values = series.dropna()
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return list(dict.fromkeys(str(v) for v in values.sort_values()))
    return sorted(set(values.astype(str)))


def as_levels(series: pd.Series) -> pd.Categorical:
    """A factor column as a Categorical of its levels' text, in `present_levels` order."""
    levels = present_levels(series)
    return pd.Categorical(series.astype(object).map(_text), categories=levels)


def _text(value: object) -> object:
    return value if value is None or value != value else str(value)  # keep None/NaN missing


def present_datasets(frame: pd.DataFrame) -> list[str | None]:
    """The datasets in `frame` (present_levels); [None] when it has no dataset column: all its
    rows are then one unnamed dataset (`tables.select_dataset(frame, None)` selects them)."""
    if col.DATASET not in frame:
        return [None]
    return list(present_levels(frame[col.DATASET]))
