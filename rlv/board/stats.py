"""The numbers the board shows, from a snapshot's rows: per cell the mean of a metric and its 95%
t interval, per cell and epoch the seeds' mean and range (the learning curves' band), and the
metric's ANOVA as `rlv analyze` fits it (rlv/analysis/anova.py), once every cell has two seeds.

Values that are not finite (FID skipped, a diverged trial's inf) are left out and not counted.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd
from scipy import stats

from rlv import columns as col
from rlv.analysis.anova import anova_table, fit_models
from rlv.analysis.labels import metric_label
from rlv.board.snapshot import DONE, Snapshot
from rlv.errors import RlvError

CONFIDENCE: Final = 0.95
ANOVA_SEEDS: Final = 2  # seeds every cell needs before the ANOVA is shown (one leaves no error df)

# the metrics to pick from, in the page's order; and the epochs column drawn as each one's curve
# (FID is measured once, at the end: its curves show the training negative ELBO)
METRICS: Final = (col.TEST_NEG_ELBO, col.TEST_RE, col.TEST_RT, col.FID, col.EPOCH_TIME_S)
CURVE_OF: Final = {col.TEST_NEG_ELBO: col.TRAIN_NEG_ELBO, col.TEST_RE: col.TRAIN_RE,
                   col.TEST_RT: col.TRAIN_RT, col.FID: col.TRAIN_NEG_ELBO,
                   col.EPOCH_TIME_S: col.EPOCH_TIME_S}
ANOVA_FIELDS: Final = ("dataset", "model", "term", "df", "resid_df", "F", "p", "partial_eta_sq",
                       "note")


def number(value: Any) -> float | None:
    """A float for JSON, None for what is not a finite number (JSON has no NaN)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _plain(value: Any) -> Any:
    """A table cell as JSON holds it: whole numbers as int, other numbers as `number`."""
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return number(value)
    return str(value)


def require_metric(metric: str) -> str:
    if metric not in METRICS:
        raise RlvError(f"unknown metric {metric!r}; the board shows {', '.join(METRICS)}")
    return metric


@dataclass(frozen=True)
class CellStat:
    """One cell's finished trials on one metric."""

    cell: int
    n: int  # trials with a finite value
    mean: float | None = None
    sd: float | None = None
    lower: float | None = None  # the 95% t interval of the mean (n >= 2)
    upper: float | None = None


def _values(frame: pd.DataFrame, column: str) -> pd.Series:
    if frame.empty or column not in frame:
        return pd.Series(dtype=float)
    values = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return values[np.isfinite(values)]


def cell_stats(snap: Snapshot, metric: str) -> list[CellStat]:
    """Per cell of the grid (empty cells too) the mean of `metric` over its finished seeds."""
    values = _values(snap.trials, metric)
    cells = snap.trials.loc[values.index, col.TRIAL_ID].map(snap.cell_of) if len(values) else values
    by_cell = {int(c): v.to_numpy(float) for c, v in values.groupby(cells)}
    out = []
    for index in range(len(snap.cells)):
        v = by_cell.get(index, np.empty(0))
        if len(v) == 0:
            out.append(CellStat(index, 0))
            continue
        mean = float(v.mean())
        if len(v) < 2:
            out.append(CellStat(index, 1, mean))
            continue
        sd = float(v.std(ddof=1))
        half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(v) - 1)) * sd / math.sqrt(len(v))
        out.append(CellStat(index, len(v), mean, sd, mean - half, mean + half))
    return out


@dataclass(frozen=True)
class Curve:
    """One cell's learning curve: per epoch the seeds' mean, lowest and highest value."""

    cell: int
    epochs: list[int] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    low: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)  # how many seeds each epoch has


def curves(snap: Snapshot, metric: str) -> list[Curve]:
    """Per cell the epochs table's curve of `metric`'s training counterpart (CURVE_OF), running
    trials' committed epochs included."""
    values = _values(snap.epochs, CURVE_OF[metric])
    out = [Curve(index) for index in range(len(snap.cells))]
    if values.empty:
        return out
    rows = snap.epochs.loc[values.index]
    keys = [rows[col.TRIAL_ID].map(snap.cell_of).rename("cell"),
            rows[col.EPOCH].astype("int64").rename(col.EPOCH)]
    table = values.groupby(keys).agg(["mean", "min", "max", "count"])
    for (cell, epoch), r in table.iterrows():
        curve = out[int(cell)]
        curve.epochs.append(int(epoch))
        curve.mean.append(float(r["mean"]))
        curve.low.append(float(r["min"]))
        curve.high.append(float(r["max"]))
        curve.seeds.append(int(r["count"]))
    return out


@dataclass(frozen=True)
class AnovaView:
    shown: bool  # False until every cell has ANOVA_SEEDS finished seeds
    provisional: bool  # shown while the sweep still runs: more seeds may change it
    note: str = ""
    rows: list[dict[str, Any]] = field(default_factory=list)


def anova_due(snap: Snapshot) -> tuple[bool, str]:
    """Whether every cell has ANOVA_SEEDS finished seeds; if not, a line saying how far it is."""
    done = [0] * len(snap.cells)
    for square in snap.squares:
        done[square.cell] += square.state == DONE
    short = sum(n < ANOVA_SEEDS for n in done)
    if short:
        return False, (f"the ANOVA shows once every cell has {ANOVA_SEEDS} finished seeds: "
                       f"{short} of {len(done)} cells have fewer")
    return True, ""


def anova_view(snap: Snapshot, metric: str) -> AnovaView:
    """The metric's ANOVA table, the model `rlv analyze` fits (without its seed-blocked variant,
    whose seed levels make it the costly one), once every cell has two seeds."""
    due, why = anova_due(snap)
    if not due:
        return AnovaView(False, True, why)
    provisional = not snap.complete
    try:
        with warnings.catch_warnings():  # statsmodels' warnings on tiny designs: the note says it
            warnings.simplefilter("ignore")
            table = anova_table(fit_models(snap.trials, [metric], blocks=False))
    except RlvError as exc:
        return AnovaView(True, provisional, f"no ANOVA of {metric_label(metric)}: {exc}")
    rows = [{k: _plain(r.get(k)) for k in ANOVA_FIELDS} for r in table.to_dict("records")]
    return AnovaView(True, provisional, "", rows)
