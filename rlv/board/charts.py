"""The board's two charts as data: what each panel and line holds, in plain JSON that the page
draws with BokehJS (static/charts.js builds the figures with Bokeh's own API: error whiskers,
bands, a grid of panels, hover, zoom; and on the next poll puts the new numbers into the same
figures, so a user's zoom stays).

- the interaction plot: per cell the metric's mean with its 95% interval, the first varying
  factor on the x axis, the last one as the lines, any factors between as panels (the thesis's
  layout: encoder on x, one line per prior, a panel per layer);
- the learning curves: a panel per cell, the seeds' mean per epoch as a line and their range as
  a band.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from rlv.analysis.labels import metric_label
from rlv.board.snapshot import Snapshot
from rlv.board.stats import CURVE_OF, CellStat, Curve

# a level keeps its colour in every panel (Bokeh's Category10)
COLOURS: Final = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                  "#7f7f7f", "#bcbd22", "#17becf")

Chart = dict[str, Any]


def _ordered(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _y_range(stats: list[CellStat]) -> list[float] | None:
    """The means' and intervals' span, padded; None before any trial finished."""
    ends = [v for s in stats for v in (s.mean, s.lower, s.upper) if v is not None]
    if not ends:
        return None
    low, high = min(ends), max(ends)
    pad = 0.08 * (high - low) or 0.05 * abs(high) or 1.0
    return [low - pad, high + pad]


def interaction_chart(snap: Snapshot, stats: list[CellStat], metric: str) -> Chart:
    """Cell means with 95% intervals, laid out by the sweep's factors."""
    factors = list(snap.factors)
    cells = snap.cells
    if factors:
        x_of = [c[factors[0]] for c in cells]
        line_of = [c[factors[-1]] if len(factors) > 1 else "" for c in cells]
        panel_of = [", ".join(f"{f} = {c[f]}" for f in factors[1:-1]) for c in cells]
    else:  # one cell: no factor varies
        x_of, line_of, panel_of = list(snap.cell_names), [""] * len(cells), [""] * len(cells)
    x_levels, lines, panels = _ordered(x_of), _ordered(line_of), _ordered(panel_of)
    out = []
    for panel in panels:
        series = []
        for line in lines:
            # every x level keeps its place (None until measured), so the plot fills in
            by_x = {x_of[s.cell]: s for s in stats
                    if panel_of[s.cell] == panel and line_of[s.cell] == line}
            found = [by_x.get(x) for x in x_levels]
            series.append({
                "line": line, "x": x_levels,
                "cell": [snap.cell_names[s.cell] if s else "" for s in found],
                "mean": [s.mean if s else None for s in found],
                "lower": [s.lower if s else None for s in found],
                "upper": [s.upper if s else None for s in found],
                "n": [s.n if s else 0 for s in found]})
        out.append({"title": panel, "series": series})
    return {"title": f"{metric_label(metric)}: cell means and 95% intervals",
            "y_label": metric_label(metric), "x_factor": factors[0] if factors else "cell",
            "line_factor": factors[-1] if len(factors) > 1 else "", "x_levels": x_levels,
            "lines": lines, "colours": [COLOURS[k % len(COLOURS)] for k in range(len(lines))],
            "y_range": _y_range(stats), "panels": out}


def epoch_step(last: int, ticks: int = 5) -> int:
    """A round whole step (1, 2, 5, 10, 20, 50, ...) giving at most `ticks` epoch ticks."""
    magnitude = 1
    while True:
        for base in (1, 2, 5):
            if last <= ticks * base * magnitude:
                return base * magnitude
        magnitude *= 10


def curves_chart(snap: Snapshot, curves: list[Curve], metric: str) -> Chart:
    """Per cell the seeds' mean per epoch and their range as a band."""
    column = CURVE_OF[metric]
    last = max((e for c in curves for e in c.epochs), default=1)
    return {"title": f"{metric_label(column)} per epoch: the seeds' mean, and their range as a "
                     "band",
            "y_label": metric_label(column), "epoch_step": epoch_step(last),
            "cells": [{"name": snap.cell_names[c.cell], "epoch": c.epochs, "mean": c.mean,
                       "low": c.low, "high": c.high, "seeds": c.seeds} for c in curves]}
