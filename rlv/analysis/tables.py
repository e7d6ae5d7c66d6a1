"""Per-cell mean and standard deviation tables, laid out like the thesis's chapter 5.

- `cell_table`: tables 5.1-5.5 (rows layer x prior, columns encoder with M and Std sub-columns);
- `metrics_table`: table 5.10 (rows metrics, columns encoder with M and Std);
- `params_table`: table 5.6 (trainable weights per cell);
- `count_table`: trials per cell (the thesis has 5 everywhere; a running or failed sweep may not).

A factor with more than one level that the thesis's layout has no place for gets a row level of
its own: `objective` (innermost, so a cell's two objectives sit next to each other), `dataset`
(outermost) and any other factor a sweep varies (`latent_dim`, `init`, ...; after prior, in the
sweep's order). Std is the sample standard deviation (ddof = 1), as SPSS reports it.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from rlv import columns as col
from rlv.analysis.design import DESIGN_FACTORS, sweep_factors
from rlv.analysis.labels import THESIS_TABLE_METRICS, present_datasets, present_levels
from rlv.analysis.load import Results, trials_of
from rlv.errors import RlvError

MEAN: str = "M"
STD: str = "Std"


def select_dataset(trials: pd.DataFrame, dataset: str | None) -> pd.DataFrame:
    """The rows of one dataset (all rows when None); RlvError naming the datasets present."""
    if dataset is None:
        return trials
    present = [d for d in present_datasets(trials) if d is not None]
    if dataset not in present:
        raise RlvError(f"dataset {dataset!r} not in the results: datasets are {', '.join(present)}")
    rows = trials[trials[col.DATASET].astype(str) == dataset]
    # Drop levels of other datasets so layouts show only what this dataset has.
    return rows.assign(
        **{
            c: rows[c].cat.remove_unused_categories()
            for c in rows.columns
            if isinstance(rows[c].dtype, pd.CategoricalDtype)
        }
    )


def has_values(trials: pd.DataFrame, metric: str) -> bool:
    """Whether `metric` is a column of `trials` with at least one value."""
    return metric in trials and bool(trials[metric].notna().any())


def available_metrics(trials: pd.DataFrame, metrics: Iterable[str]) -> list[str]:
    """The `metrics` (in their order) that have values in `trials`."""
    return [m for m in metrics if has_values(trials, m)]


def require_metric(trials: pd.DataFrame, metric: str) -> None:
    """RlvError when `metric` is not a column or holds no value at all."""
    if metric not in trials:
        numeric = [c for c in trials.columns if pd.api.types.is_numeric_dtype(trials[c])]
        raise RlvError(f"unknown metric {metric!r}: numeric columns are {', '.join(numeric)}")
    if not has_values(trials, metric):
        raise RlvError(f"metric {metric!r} has no values in these results (all missing)")


def row_levels(trials: pd.DataFrame) -> list[str]:
    """Row index levels of the thesis layout, plus dataset, objective and any other factor of
    the sweep when they vary."""
    levels = []
    if col.DATASET in trials and trials[col.DATASET].nunique() > 1:
        levels.append(col.DATASET)
    levels += [f for f in (col.LAYER, col.PRIOR) if f in trials]
    levels += [
        f
        for f in sweep_factors(trials)
        if f not in DESIGN_FACTORS and f != col.DATASET and trials[f].nunique() > 1
    ]
    if col.OBJECTIVE in trials and trials[col.OBJECTIVE].nunique() > 1:
        levels.append(col.OBJECTIVE)
    return levels


def _by_encoder(stats: pd.DataFrame, encoders: list[str], stat_names: list[str]) -> pd.DataFrame:
    """(rows..., encoder) x stats -> rows x (encoder, stat), encoders in the thesis's order."""
    wide = stats.unstack(col.ENCODER)
    wide.columns = wide.columns.swaplevel(0, 1)
    wide.columns = pd.MultiIndex.from_tuples(
        [(str(e), s) for e, s in wide.columns], names=[col.ENCODER, "stat"]
    )
    wanted = pd.MultiIndex.from_product([encoders, stat_names], names=[col.ENCODER, "stat"])
    return wide.reindex(columns=wanted)


def _encoders(trials: pd.DataFrame) -> list[str]:
    return present_levels(trials[col.ENCODER])


def cell_table(
    data: Results | pd.DataFrame, metric: str, dataset: str | None = None
) -> pd.DataFrame:
    """Mean (M) and Std of `metric` per cell: rows layer x prior, columns encoder x (M, Std)."""
    trials = select_dataset(trials_of(data), dataset)
    require_metric(trials, metric)
    rows = row_levels(trials)
    grouped = trials.groupby([*rows, col.ENCODER], observed=True)[metric]
    stats = pd.DataFrame({MEAN: grouped.mean(), STD: grouped.std(ddof=1)})
    return _by_encoder(stats, _encoders(trials), [MEAN, STD])


def count_table(data: Results | pd.DataFrame, dataset: str | None = None) -> pd.DataFrame:
    """Trials per cell (rows layer x prior, columns encoder)."""
    trials = select_dataset(trials_of(data), dataset)
    rows = row_levels(trials)
    counts = trials.groupby([*rows, col.ENCODER], observed=True).size()
    table = counts.unstack(col.ENCODER)
    table.columns = pd.Index([str(c) for c in table.columns], name=col.ENCODER)
    return table.reindex(columns=_encoders(trials)).fillna(0).astype("int64")


def params_table(data: Results | pd.DataFrame, dataset: str | None = None) -> pd.DataFrame:
    """Trainable weights per cell (table 5.6's layout); the median when seeds disagree."""
    trials = select_dataset(trials_of(data), dataset)
    require_metric(trials, col.TRAINABLE_PARAMS)
    rows = row_levels(trials)
    # The count is fixed by the architecture, so seeds agree; the median shrugs off a stray row.
    values = trials.groupby([*rows, col.ENCODER], observed=True)[col.TRAINABLE_PARAMS].median()
    table = values.unstack(col.ENCODER)
    table.columns = pd.Index([str(c) for c in table.columns], name=col.ENCODER)
    return table.reindex(columns=_encoders(trials)).round().astype("Int64")


def metrics_table(
    data: Results | pd.DataFrame,
    metrics: tuple[str, ...] | list[str] | None = None,
    dataset: str | None = None,
) -> pd.DataFrame:
    """Table 5.10's layout: rows metric (x any varying layer/prior), columns encoder x (M, Std)."""
    trials = select_dataset(trials_of(data), dataset)
    wanted = available_metrics(trials, THESIS_TABLE_METRICS) if metrics is None else list(metrics)
    if not wanted:
        raise RlvError("no metric with values to tabulate: " + ", ".join(THESIS_TABLE_METRICS))
    parts = {m: cell_table(trials, m) for m in wanted}
    return pd.concat(parts, names=["metric"])


def _single_cell(trials: pd.DataFrame) -> bool:
    return all(trials[f].nunique() <= 1 for f in (col.LAYER, col.PRIOR) if f in trials)


def cell_tables(
    data: Results | pd.DataFrame, metrics: tuple[str, ...] | list[str] | None = None
) -> dict[str, pd.DataFrame]:
    """Every table of the thesis's chapter 5 for every dataset, keyed `{dataset}_{what}`.

    (`all_{what}` when the results have no dataset column.)
    `what` is a metric name (tables 5.1-5.5), `trainable_params` (5.6), `n` (trials per cell)
    and, for a dataset with a single layer x prior cell like the SVHN follow-up, `summary`
    (5.10's layout). Metrics without any value (e.g. fid when a sweep skipped FID)
    are left out rather than shown as empty tables.
    """
    trials = trials_of(data)
    tables: dict[str, pd.DataFrame] = {}
    for dataset in present_datasets(trials):
        part = select_dataset(trials, dataset)
        prefix = f"{dataset}_" if dataset is not None else "all_"
        present = available_metrics(part, metrics or THESIS_TABLE_METRICS)
        for metric in present:
            tables[f"{prefix}{metric}"] = cell_table(part, metric)
        if has_values(part, col.TRAINABLE_PARAMS):
            tables[f"{prefix}{col.TRAINABLE_PARAMS}"] = params_table(part)
        tables[f"{prefix}n"] = count_table(part)
        if present and _single_cell(part):  # table 5.10: one layer x prior, metrics as rows
            tables[f"{prefix}summary"] = metrics_table(part, present)
    return tables
