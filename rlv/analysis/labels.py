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
    col.GAP_NEG_ELBO: "Train - test gap, negative ELBO",
    col.GAP_RE: "Train - test gap, RE",
    col.GAP_RT: "Train - test gap, RT",
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
    """The levels that occur in `series`: category order for a Categorical, else sorted."""
    present = set(series.dropna().astype(str))
    if isinstance(series.dtype, pd.CategoricalDtype):
        return [str(c) for c in series.cat.categories if str(c) in present]
    return sorted(present)


def present_datasets(frame: pd.DataFrame) -> list[str | None]:
    """The datasets in `frame` (present_levels); [None] when it has no dataset column: all its
    rows are then one unnamed dataset (`tables.select_dataset(frame, None)` selects them)."""
    if col.DATASET not in frame:
        return [None]
    return list(present_levels(frame[col.DATASET]))
