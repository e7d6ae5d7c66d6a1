"""The thesis's published numbers, and measured results put next to them.

`data/thesis_mnist.csv` holds tables 5.1-5.5 of "Who Needs an Encoder?" (VU Amsterdam, 2021):
the per-cell mean and std over 5 seeds of the test negative ELBO, RT, RE, the FID and the seconds
per epoch (24 cells x 5 metrics). `data/thesis_svhn.csv` holds table 5.10 (SVHN, conv x flow6,
4 encoders x the same 5 metrics). Both were transcribed from the thesis text and checked twice;
their header comments say so. Table 5.6 (trainable weights) is left out: its entries are no
parameter counts but the sum, over the trainable tensors, of each tensor's shape's dimensions
(rlv's models give every entry so: tests/test_models.py), while rlv stores the true count (the fc
decoder alone has 1,741,696 parameters), so the two are not compared here.

`THESIS_ORDERINGS` holds the orderings the thesis states in its text (chapter 5), for encoder,
prior and layer. Where the thesis states only groups ("NL and RKS overfit more than L and PNL")
the ordering joins each group with `&`; where it reports no significant effect (the prior on RE)
every level is joined. Gap orderings are in the thesis's sign (positive = test set worse).
Measured RT differs from the thesis's for flow priors unless the sweep used the thesis's objective
variant (README, "The two objectives"); the comparison keeps `objective` as a column
when the results have one, so both can be compared.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Final

import pandas as pd

from rlv import columns as col
from rlv.analysis.design import DESIGN_FACTORS, varying_factors
from rlv.analysis.load import Results, categorize, trials_of
from rlv.analysis.posthoc import ordering_groups
from rlv.analysis.tables import available_metrics

CELL_KEYS: Final = (col.DATASET, col.LAYER, col.PRIOR, col.ENCODER)
_FILES: Final = ("thesis_mnist.csv", "thesis_svhn.csv")

# (dataset, metric, factor) -> the ordering as the thesis wrote it.
THESIS_ORDERINGS: Final[dict[tuple[str, str, str], str]] = {
    ("mnist", col.TEST_NEG_ELBO, col.ENCODER): "L < PNL < RKS < NL",
    ("mnist", col.TEST_RT, col.ENCODER): "L & PNL > NL > RKS",
    ("mnist", col.TEST_RE, col.ENCODER): "L < PNL < RKS < NL",
    ("mnist", col.FID, col.ENCODER): "L < PNL < RKS < NL",
    ("mnist", col.FID, col.PRIOR): "flow6 < flow2 < normal",
    ("mnist", col.FID, col.LAYER): "conv < fc",
    ("mnist", col.TEST_RE, col.PRIOR): "normal & flow2 & flow6",  # "no significant main effect"
    ("mnist", col.GAP_NEG_ELBO, col.LAYER): "conv < fc",  # fc M = 12.03, conv M = 1.26
    ("mnist", col.GAP_NEG_ELBO, col.ENCODER): "L & PNL < NL & RKS",
    ("mnist", col.GAP_RE, col.LAYER): "conv < fc",  # "the exact same patterns"
    ("mnist", col.GAP_RE, col.ENCODER): "L & PNL < NL & RKS",
    ("mnist", col.GAP_RT, col.ENCODER): "L & PNL & NL < RKS",
    ("mnist", col.GAP_RT, col.PRIOR): "normal & flow2 < flow6",
    ("mnist", col.EPOCH_TIME_S, col.ENCODER): "RKS < NL < PNL < L",
    ("mnist", col.EPOCH_TIME_S, col.PRIOR): "normal < flow2 < flow6",
    ("mnist", col.EPOCH_TIME_S, col.LAYER): "fc < conv",
    ("svhn", col.TEST_NEG_ELBO, col.ENCODER): "L < PNL < RKS < NL",
    ("svhn", col.TEST_RT, col.ENCODER): "NL & PNL & L > RKS",
    ("svhn", col.TEST_RE, col.ENCODER): "L < PNL & RKS < NL",
    ("svhn", col.FID, col.ENCODER): "L & PNL & RKS < NL",
    ("svhn", col.EPOCH_TIME_S, col.ENCODER): "RKS < NL < PNL < L",
}


@functools.cache
def _read_all() -> pd.DataFrame:
    frames = []
    for name in _FILES:
        with resources.files("rlv.analysis").joinpath("data", name).open("r") as handle:
            # `table` as text: "5.10" must not become the float 5.1.
            frames.append(pd.read_csv(handle, comment="#", dtype={"table": str}))
    return categorize(pd.concat(frames, ignore_index=True))


def thesis_table(dataset: str | None = None) -> pd.DataFrame:
    """The published cell means and stds, long format: dataset, layer, prior, encoder, metric, mean,
    std, table (the thesis's table number). One dataset, or both when None."""
    table = _read_all().copy()
    if dataset is not None:
        table = table[table[col.DATASET].astype(str) == dataset].reset_index(drop=True)
    return table


def thesis_comparison(
    data: Results | pd.DataFrame, metrics: tuple[str, ...] | list[str] | None = None
) -> pd.DataFrame:
    """Measured cell means next to the thesis's: one row per measured cell and published metric.

    Columns: dataset, layer, prior, encoder (and objective when the results have it), metric,
    mean, std, n (measured over seeds), thesis_mean, thesis_std, difference (= mean - thesis_mean),
    table. Cells or metrics the thesis did not publish are left out.
    """
    trials = trials_of(data)
    published = thesis_table()
    wanted = available_metrics(
        trials, metrics if metrics is not None else published["metric"].unique()
    )
    keys = [k for k in CELL_KEYS if k in trials]
    if col.OBJECTIVE in trials:
        keys.append(col.OBJECTIVE)
    # A factor the thesis did not vary (latent_dim, ...) keeps its cells apart, never pooled.
    keys += [f for f in varying_factors(trials) if f not in keys and f not in DESIGN_FACTORS]
    columns = [*keys, "metric", "mean", "std", "n", "thesis_mean", "thesis_std", "difference"]
    if not wanted or len(keys) < len(CELL_KEYS):
        return pd.DataFrame(columns=[*columns, "table"])
    measured = (
        trials.melt(id_vars=keys, value_vars=wanted, var_name="metric")
        .dropna(subset=["value"])
        .groupby([*keys, "metric"], observed=True)["value"]
        .agg(mean="mean", std="std", n="count")
        .reset_index()
    )
    for key in CELL_KEYS:  # merge on text: the two sides' categories differ
        measured[key] = measured[key].astype(str)
        published[key] = published[key].astype(str)
    published = published.rename(columns={"mean": "thesis_mean", "std": "thesis_std"})
    merged = measured.merge(published, on=[*CELL_KEYS, "metric"], how="inner")
    merged["difference"] = merged["mean"] - merged["thesis_mean"]
    merged = categorize(merged)
    return merged.sort_values([*keys, "metric"], ignore_index=True)[[*columns, "table"]]


def _restricted(groups: list[frozenset[str]], keep: set[str]) -> list[frozenset[str]]:
    """The groups with only the `keep` levels, empty groups dropped (the order stays)."""
    return [g & keep for g in groups if g & keep]


def _compare(ours: object, theirs: str | None) -> tuple[bool | None, str | None, str | None]:
    """(matches, compared levels, left-out levels) of one measured ordering and the thesis's.

    Compared on the levels both have: a sweep that adds a level (PRKS) or leaves one out (no
    flow2) still says whether the shared levels fall in the thesis's groups and order. None
    where there is nothing to compare: no thesis ordering, no measured one, or fewer than two
    shared levels (one level has no order).
    """
    if not theirs or not isinstance(ours, str) or not ours:
        return None, None, None
    mine, published = ordering_groups(ours), ordering_groups(theirs)
    levels_mine = set().union(*mine)
    levels_theirs = set().union(*published)
    shared = levels_mine & levels_theirs
    left_out = ", ".join(sorted(levels_mine ^ levels_theirs)) or None
    if len(shared) < 2:
        return None, None, left_out
    # In our ascending order, so the column reads like the ordering itself.
    compared = ", ".join(lvl for g in mine for lvl in sorted(g) if lvl in shared)
    same = _restricted(mine, shared) == _restricted(published, shared)
    return same, compared, left_out


def compare_orderings(orderings: pd.DataFrame) -> pd.DataFrame:
    """`posthoc.ordering_table` plus the thesis's ordering and whether ours matches it.

    Added columns: `thesis_ordering`; `matches_thesis` (same groups in the same ascending order
    on the levels both orderings have; within a group order does not matter; None with fewer
    than two shared levels or no thesis ordering); `compared_levels` (those shared levels);
    `left_out_levels` (levels only one side has: a level the sweep added, or one it did not run).
    """
    out = orderings.copy()
    published = [
        THESIS_ORDERINGS.get((str(d), str(m), str(f)))
        for d, m, f in zip(out["dataset"], out["metric"], out["factor"], strict=True)
    ]
    compared = [_compare(ours, theirs) for ours, theirs in zip(out["ordering"], published, strict=True)]
    out["thesis_ordering"] = published
    out["matches_thesis"] = pd.array([c[0] for c in compared], dtype="boolean")
    out["compared_levels"] = [c[1] for c in compared]
    out["left_out_levels"] = [c[2] for c in compared]
    return out
