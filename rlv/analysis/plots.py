"""Figures: interaction plots, learning curves and the trials' image grids.

Figures are built with `matplotlib.figure.Figure` rather than pyplot: that needs no backend
choice, leaves global state alone (importing rlv.analysis never switches a user's backend) and
renders with Agg when saved. In Jupyter, `%matplotlib inline` displays a returned Figure.
"""

from __future__ import annotations

import io
from typing import Final

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rlv import columns as col
from rlv.analysis.labels import metric_label, present_levels
from rlv.analysis.load import Results, trials_of
from rlv.analysis.tables import require_metric, row_levels, select_dataset
from rlv.errors import RlvError

LINESTYLES: Final = ("-", "--", ":", "-.")


def one_dataset(frame: pd.DataFrame, dataset: str | None) -> pd.DataFrame:
    """The rows of `dataset`; with None, the only dataset present (RlvError if several)."""
    if dataset is None and col.DATASET in frame:
        present = present_levels(frame[col.DATASET])
        if len(present) > 1:
            raise RlvError(
                f"results hold several datasets: pass dataset= one of {', '.join(present)}"
            )
    return select_dataset(frame, dataset)


def _levels(frame: pd.DataFrame, factor: str) -> list[str]:
    return present_levels(frame[factor]) if factor in frame else [""]


def _rows_of(frame: pd.DataFrame, factor: str, level: str) -> pd.DataFrame:
    return frame if factor not in frame else frame[frame[factor].astype(str) == level]


def _legend(fig: Figure, axes: np.ndarray, title: str) -> None:
    """One legend for all panels, outside them on the right (never over the data)."""
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, title=title, fontsize="small", loc="outside right upper")


def interaction_plot(
    data: Results | pd.DataFrame, metric: str, dataset: str | None = None
) -> Figure:
    """Mean metric (error bars: std over seeds) vs prior, one line per encoder, a panel per layer.

    With both objectives in the data, a row of panels per objective.
    """
    trials = one_dataset(trials_of(data), dataset)
    require_metric(trials, metric)
    layers, objectives = _levels(trials, col.LAYER), _levels(trials, col.OBJECTIVE)
    priors = _levels(trials, col.PRIOR)
    fig = Figure(figsize=(4.2 * len(layers), 3.4 * len(objectives)), layout="constrained")
    axes = fig.subplots(len(objectives), len(layers), squeeze=False, sharey=True)
    for r, objective in enumerate(objectives):
        for c, layer in enumerate(layers):
            ax = axes[r][c]
            part = _rows_of(_rows_of(trials, col.OBJECTIVE, objective), col.LAYER, layer)
            for k, encoder in enumerate(_levels(part, col.ENCODER)):
                rows = _rows_of(part, col.ENCODER, encoder)
                stats = rows.groupby(rows[col.PRIOR].astype(str))[metric].agg(["mean", "std"])
                stats = stats.reindex(priors)
                ax.errorbar(
                    np.arange(len(priors)) + (k - 1.5) * 0.04,  # dodge so error bars don't overlap
                    stats["mean"],
                    yerr=stats["std"].fillna(0.0),
                    marker="o",
                    capsize=3,
                    label=encoder,
                )
            ax.set_xticks(range(len(priors)), priors)
            title = " / ".join(t for t in (layer, objective if len(objectives) > 1 else "") if t)
            ax.set_title(title)
            ax.grid(alpha=0.3)
            if c == 0:
                ax.set_ylabel(metric_label(metric))
    _legend(fig, axes, col.ENCODER)
    return fig


def learning_curves(
    data: Results | pd.DataFrame, metric: str = col.TRAIN_NEG_ELBO, dataset: str | None = None
) -> Figure:
    """Training `metric` vs epoch, mean over seeds: a panel per layer x prior, a line per encoder.

    `data` is a Results or its epochs table. With both objectives, objective sets the line style.
    """
    epochs = data.epochs if isinstance(data, Results) else data
    if epochs.empty:
        raise RlvError("no epochs rows in these results: nothing to plot")
    epochs = one_dataset(epochs, dataset)
    require_metric(epochs, metric)
    layers, priors = _levels(epochs, col.LAYER), _levels(epochs, col.PRIOR)
    objectives = _levels(epochs, col.OBJECTIVE)
    fig = Figure(figsize=(3.6 * len(priors), 2.9 * len(layers)), layout="constrained")
    axes = fig.subplots(len(layers), len(priors), squeeze=False, sharex=True)
    for r, layer in enumerate(layers):
        for c, prior in enumerate(priors):
            ax = axes[r][c]
            part = _rows_of(_rows_of(epochs, col.LAYER, layer), col.PRIOR, prior)
            for k, objective in enumerate(objectives):
                rows = _rows_of(part, col.OBJECTIVE, objective)
                for m, encoder in enumerate(_levels(rows, col.ENCODER)):
                    curve = _rows_of(rows, col.ENCODER, encoder).groupby(col.EPOCH)[metric].mean()
                    label = encoder if len(objectives) == 1 else f"{encoder} ({objective})"
                    ax.plot(
                        curve.index,
                        curve.to_numpy(),
                        color=f"C{m}",
                        linestyle=LINESTYLES[k % len(LINESTYLES)],
                        label=label,
                    )
            ax.set_title(f"{layer} / {prior}")
            ax.grid(alpha=0.3)
            if r == len(layers) - 1:
                ax.set_xlabel(col.EPOCH)
            if c == 0:
                ax.set_ylabel(metric_label(metric))
    _legend(fig, axes, col.ENCODER)
    return fig


def image_cells(
    trials: pd.DataFrame, kind: str, seed: int | None = None
) -> list[tuple[tuple[str, ...], str, str | None]]:
    """Per cell, the image path of `kind` from the given seed (default: the lowest seed with one).

    Returns (row key e.g. (layer, prior), encoder, path or None) in the thesis's order.
    """
    if kind not in col.IMAGE_COLUMNS:
        raise RlvError(f"unknown image kind {kind!r}: use one of {', '.join(col.IMAGE_COLUMNS)}")
    rows = row_levels(trials)
    cells: list[tuple[tuple[str, ...], str, str | None]] = []
    for key, part in trials.groupby([*rows, col.ENCODER], observed=True, sort=True):
        *row_key, encoder = (str(k) for k in key)
        part = part[part[kind].notna()] if kind in part else part.iloc[0:0]
        if seed is not None and col.SEED in part:
            part = part[part[col.SEED] == seed]
        if col.SEED in part:
            part = part.sort_values(col.SEED)
        cells.append((tuple(row_key), encoder, str(part[kind].iloc[0]) if len(part) else None))
    return cells


def image_grid(
    results: Results,
    kind: str = col.IMAGE_SAMPLES,
    dataset: str | None = None,
    seed: int | None = None,
) -> Figure:
    """The trials' PNGs of `kind` like thesis tables 5.7-5.9: a row per cell, a column per encoder.

    Per cell the lowest seed's image (or `seed`'s)."""
    trials = one_dataset(results.trials, dataset)
    cells = image_cells(trials, kind, seed)
    row_keys = list(dict.fromkeys(key for key, _, _ in cells))
    encoders = _levels(trials, col.ENCODER)
    wide = kind == col.IMAGE_INTERPOLATIONS  # a strip of 8 images: give it width
    size = (2.6 if wide else 1.7, 1.0 if wide else 1.7)
    fig = Figure(
        figsize=(size[0] * len(encoders) + 1.2, size[1] * len(row_keys) + 0.4), layout="constrained"
    )
    axes = fig.subplots(len(row_keys), len(encoders), squeeze=False)
    for key, encoder, path in cells:
        ax = axes[row_keys.index(key)][encoders.index(encoder)]
        ax.set_xticks([])
        ax.set_yticks([])
        if path is None:
            ax.text(0.5, 0.5, "no image", ha="center", va="center", fontsize="small")
            continue
        try:
            pixels = mpimg.imread(io.BytesIO(results.image(path)), format="png")
        except (RlvError, OSError, ValueError, SyntaxError):
            ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize="small")
            continue
        ax.imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, interpolation="nearest")
    for c, encoder in enumerate(encoders):
        axes[0][c].set_title(encoder)
    for r, key in enumerate(row_keys):
        axes[r][0].set_ylabel(" / ".join(key), fontsize="small")
    fig.suptitle(kind.removeprefix("image_"))
    return fig
