"""What the page asks for: one JSON document per poll, from a snapshot and the picked metric.

    {"version", "sweep", "store", "refresh_s", "links": {"dashboard", "tensorboard"},
     "progress": {"done", "running", "failed", "pending", "total", "text", "remaining", "driver",
                  "complete"},
     "grid": {"seeds": [...], "cells": [{"name", "levels", "trials": [{"id", "seed", "state",
              "epoch", "reason"}, ...]}, ...]},
     "metric", "metrics": [{"name", "label"}, ...],
     "stats": [{"cell", "name", "levels", "n", "mean", "sd", "lower", "upper"}, ...],
     "anova": {"due", "note", "key"},
     "interaction": CHART, "curves": CHART}        (charts.py)

A poll that names the version it has (`since`) gets {"version", "unchanged": true} while nothing
moved: the page then redraws nothing. The ANOVA is a document of its own,

    {"key", "shown", "provisional", "note", "rows": [{"dataset", "model", "term", "df", ...}]}

asked for once it is `due` (every cell has two seeds) and whenever its `key` (the store's rows and
the metric) changes: fitting it takes seconds on thousands of trials, and nothing else waits.
"""

from __future__ import annotations

import shlex
import threading
from collections import OrderedDict
from dataclasses import asdict
from typing import Any

from rlv.analysis.labels import metric_label
from rlv.board.charts import curves_chart, interaction_chart
from rlv.board.config import BoardConfig
from rlv.board.snapshot import DONE, FAILED, PENDING, RUNNING, Snapshot, SweepWatcher
from rlv.board.stats import (
    METRICS,
    anova_due,
    anova_view,
    cell_stats,
    curves,
    require_metric,
)
from rlv.store.status import progress_counts
from rlv.store.store import Store

CACHED = 8  # documents kept: one per metric a page might flip between, at the same version
CURVES_DIR = "tensorboard"  # STORE/tensorboard/SWEEP, where the driver writes the curves


def tensorboard_command(store: str, sweep: str) -> str:
    """The TensorBoard line `rlv launch` prints (rlv/service/curves.py writes that folder; that
    module needs Ray, so the board names the folder itself)."""
    location = f"{store.rstrip('/')}/{CURVES_DIR}/{sweep}"
    return f"tensorboard --logdir {shlex.quote(location)} --host 127.0.0.1"


def _progress(snap: Snapshot) -> dict[str, Any]:
    counts = {state: 0 for state in (DONE, RUNNING, FAILED, PENDING)}
    for square in snap.squares:
        counts[square.state] += 1
    status = snap.status
    if status.ended:
        driver = f"last run ended {status.updated_at}"
    elif status.updated_at:
        driver = (f"driver {status.driver}: "
                  f"{'running' if status.driver_alive else 'gone (rlv launch resumes the sweep)'}")
    else:
        driver = "no driver has written this sweep's status yet"
    text = progress_counts(counts[DONE], counts[RUNNING], counts[FAILED], counts[PENDING],
                           len(snap.squares))
    return {**counts, "total": len(snap.squares), "text": text, "remaining": snap.remaining,
            "driver": driver, "complete": snap.complete}


def _grid(snap: Snapshot) -> dict[str, Any]:
    per_cell: list[list[dict[str, Any]]] = [[] for _ in snap.cells]
    for s in snap.squares:
        per_cell[s.cell].append({"id": s.trial_id, "seed": s.seed, "state": s.state,
                                 "epoch": s.epoch, "reason": s.reason})
    return {"seeds": list(snap.seeds),
            "cells": [{"name": name, "levels": levels, "trials": trials} for name, levels, trials
                      in zip(snap.cell_names, snap.cells, per_cell, strict=True)]}


def document(snap: Snapshot, metric: str, config: BoardConfig) -> dict[str, Any]:
    """The page's whole JSON document for one metric."""
    stats = cell_stats(snap, metric)
    due, why = anova_due(snap)
    return {
        "version": snap.version, "sweep": snap.sweep, "store": snap.store,
        "refresh_s": config.refresh_s,
        "links": {"dashboard": config.dashboard,
                  "tensorboard": tensorboard_command(snap.store, snap.sweep)},
        "progress": _progress(snap),
        "grid": _grid(snap),
        "metric": metric,
        "metrics": [{"name": m, "label": metric_label(m)} for m in METRICS],
        "stats": [{**asdict(s), "name": snap.cell_names[s.cell], "levels": snap.cells[s.cell]}
                  for s in stats],
        "anova": {"due": due, "note": why, "key": f"{snap.rows_version}:{metric}"},
        "interaction": interaction_chart(snap, stats, metric),
        "curves": curves_chart(snap, curves(snap, metric), metric),
    }


class BoardData:
    """The documents of one sweep: a snapshot per poll, a document per (version, metric)."""

    def __init__(self, config: BoardConfig) -> None:
        self.config = config
        self.watcher = SweepWatcher(Store.open(config.store), config.sweep)
        self._documents: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._anovas: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._fitting: dict[str, threading.Lock] = {}  # one fit per key, however many ask
        self._lock = threading.Lock()

    @property
    def sweep(self) -> str:
        return self.watcher.sweep

    def poll(self, metric: str, since: str = "") -> dict[str, Any]:
        require_metric(metric)
        snap = self.watcher.snapshot()
        if since and since == f"{snap.version}:{metric}":
            return {"version": since, "unchanged": True}
        key = (snap.version, metric)
        with self._lock:
            cached = self._documents.get(key)
        if cached is None:
            cached = document(snap, metric, self.config)
            cached["version"] = f"{snap.version}:{metric}"
            with self._lock:
                self._documents[key] = cached
                while len(self._documents) > CACHED:
                    self._documents.popitem(last=False)
        return cached

    def anova(self, metric: str) -> dict[str, Any]:
        """The ANOVA document of the store's rows now; fitted once per rows and metric."""
        require_metric(metric)
        snap = self.watcher.snapshot()
        key = f"{snap.rows_version}:{metric}"
        with self._lock:
            fitting = self._fitting.setdefault(key, threading.Lock())
        with fitting:
            with self._lock:
                cached = self._anovas.get(key)
            if cached is None:
                cached = {"key": key, **asdict(anova_view(snap, metric))}
                with self._lock:
                    self._anovas[key] = cached
                    while len(self._anovas) > CACHED:
                        self._fitting.pop(self._anovas.popitem(last=False)[0], None)
        return cached
