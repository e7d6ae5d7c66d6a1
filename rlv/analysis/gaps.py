"""The overfitting gaps, as the thesis reports them: positive when the test set is worse.

The negative ELBO and RE are minimised, so their gap is test - train; RT is maximised, so its gap
is train - test (train: the last epoch). The thesis's fc negative-ELBO gap of M = 12.03 reads so.

The gaps are always derived from the `train_*` and `test_*` columns when a row has both, and
stored `gap_*` columns are replaced: stores written before this convention hold train - test
(the opposite sign), and stores written by other tools may hold no gap columns at all. Where a
train or test column is missing, a stored gap column is dropped with a warning: its sign cannot
be told from the data, and an old-sign gap would silently reverse every gap ordering.
"""

from __future__ import annotations

import logging
from typing import Final

import pandas as pd

from rlv import columns as col

logger = logging.getLogger(__name__)

# gap column -> (worse-when-larger side, other side): gap = first - second
GAP_SOURCES: Final[dict[str, tuple[str, str]]] = {
    col.GAP_NEG_ELBO: (col.TEST_NEG_ELBO, col.TRAIN_NEG_ELBO),
    col.GAP_RE: (col.TEST_RE, col.TRAIN_RE),
    col.GAP_RT: (col.TRAIN_RT, col.TEST_RT),
}


def with_gaps(trials: pd.DataFrame) -> pd.DataFrame:
    """`trials` with each gap column derived from its train and test columns (where both exist),
    and each stored gap column whose train or test column is missing dropped (with a warning).

    Returns the frame itself when there is nothing to derive or drop, else a copy.
    """
    derivable = {
        gap: (a, b) for gap, (a, b) in GAP_SOURCES.items() if a in trials and b in trials
    }
    undecidable = [gap for gap in GAP_SOURCES if gap in trials and gap not in derivable]
    if not derivable and not undecidable:
        return trials
    for gap in undecidable:
        missing = [c for c in GAP_SOURCES[gap] if c not in trials]
        logger.warning(
            "dropped column %s: it cannot be re-derived without %s, and a stored gap may have "
            "the old sign (train - test)",
            gap,
            " and ".join(missing),
        )
    out = trials.drop(columns=undecidable)
    for gap, (first, second) in derivable.items():
        out[gap] = pd.to_numeric(out[first], errors="coerce") - pd.to_numeric(
            out[second], errors="coerce"
        )
    return out
