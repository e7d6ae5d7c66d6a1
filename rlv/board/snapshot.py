"""The sweep as the board shows it now, from the store alone: its grid (cells x seeds) with each
trial's state, and the rows of its finished trials and their epochs.

Each poll lists the sweep's two table partitions and reads its manifest's and status file's
metadata. Only when those moved are the sweep's plan (rlv/store/plan.py: which grid trials are
done, matched by content as `rlv launch` matches them), its rows and the time-left estimate
(`rlv check`'s) rebuilt; the states of running and failed trials come from the driver's status
file (as `rlv status` reads it) on every poll.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow.fs as pafs

from rlv import columns as col
from rlv.analysis.load import categorize
from rlv.board.tables import PartitionReader, listing, signature
from rlv.config import level_label, setting_column
from rlv.errors import RlvError
from rlv.store.estimate import remaining_time
from rlv.store.files import STATUS_DIR, first_line
from rlv.store.identity import trial_key
from rlv.store.manifest import SWEEPS_DIR, manifest_path, stored_sweeps
from rlv.store.plan import SweepPlan, plan_sweep
from rlv.store.status import SweepStatus, spec_from_store, status_of
from rlv.store.store import Store

DONE, RUNNING, FAILED, PENDING = "done", "running", "failed", "pending"
STORE_MARKS = (SWEEPS_DIR, col.TRIALS_TABLE, col.EPOCHS_TABLE, STATUS_DIR)  # what a store holds


@dataclass(frozen=True)
class Square:
    """One trial of the grid: where it is, and its state now."""

    trial_id: str
    cell: int  # index into Snapshot.cells
    seed: int
    state: str  # DONE, RUNNING, FAILED or PENDING
    epoch: int | None = None  # a running trial's last reported epoch
    reason: str = ""  # a failed trial's one-line error


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no truth value to compare
class Snapshot:
    """What the board draws, at one moment."""

    store: str
    sweep: str
    factors: tuple[str, ...]  # the sweep's varying factors' columns, in trial-name order
    cells: tuple[dict[str, str], ...]  # per cell: factor column -> level as trial ids show it
    cell_names: tuple[str, ...]  # per cell: its trials' id without the seed
    seeds: tuple[int, ...]
    squares: tuple[Square, ...]  # cells x seeds, cell-major
    trials: pd.DataFrame  # the finished grid trials' rows (factors as ordered categoricals)
    epochs: pd.DataFrame  # the grid trials' epoch rows, finished or running
    cell_of: dict[str, int]  # trial id -> cell index, for every grid trial
    status: SweepStatus
    remaining: str  # `rlv check`'s time-left line
    version: str  # changes whenever anything shown changes
    rows_version: str  # changes whenever the store's rows (or the sweep's manifest) change

    @property
    def complete(self) -> bool:
        """Every grid trial is in the store: the sweep is done."""
        return len(self.status.finished) == self.status.total and self.status.total > 0


def require_board_store(store: Store) -> tuple[pafs.FileSystem, str]:
    """The store's filesystem and root; RlvError in one line where it does not exist or is not
    an rlv store."""
    fs, root = store.fs, store.root
    try:
        info = fs.get_file_info(root)
        marks = fs.get_file_info([f"{root}/{name}" for name in STORE_MARKS])
    except OSError as exc:
        raise RlvError(f"cannot open store {store}: {first_line(exc)}") from None
    if info.type == pafs.FileType.NotFound:
        raise RlvError(f"store {store} does not exist (nothing was launched into it); check the "
                       "path or URI")
    if not any(m.type == pafs.FileType.Directory for m in marks):
        raise RlvError(f"{store} is not an rlv store: it holds none of "
                       f"{', '.join(n + '/' for n in STORE_MARKS)}; name the folder or URI that "
                       "`rlv launch` wrote")
    return fs, root


def choose_sweep(store: Store, sweep: str | None) -> str:
    """`sweep`, or the store's only sweep; RlvError naming the sweeps where that is ambiguous."""
    held = stored_sweeps(store)
    if sweep is not None:
        return sweep  # spec_from_store names the sweeps there if it has none of that name
    if len(held) == 1:
        return held[0]
    if not held:
        raise RlvError(f"store {store} holds no sweep yet (no {SWEEPS_DIR}/NAME/): launch one "
                       "into it first")
    raise RlvError(f"store {store} holds several sweeps ({', '.join(held)}): name one with --sweep")


def _squares(plan: SweepPlan, status: SweepStatus) -> tuple[list[Square], dict[str, int]]:
    """Every grid trial, cell-major, under the id its rows and the status file give it."""
    planned = {(p.cell, p.seed): p for p in plan.to_run}
    # a grid name is its cell's name with the seed swapped (as SweepPlan.to_run_names builds it)
    stems = [c.name.removesuffix(f"-s{c.seed}") for c in plan.cell_configs]
    done_keys = plan.done
    squares, cell_of = [], {}
    for index, cell_key in enumerate(plan.cell_keys):
        for seed in plan.spec.seeds:
            key = trial_key(cell_key, seed)
            if key in done_keys:
                trial_id, state = done_keys[key], DONE
            else:
                p = planned[(index, seed)]
                trial_id, state = p.trial_id or f"{stems[index]}-s{seed}", PENDING
            epoch, reason = None, ""
            if trial_id in status.running:
                state, epoch = RUNNING, status.running[trial_id]
            elif trial_id in status.failed:
                state, reason = FAILED, status.failed[trial_id]
            squares.append(Square(trial_id, index, seed, state, epoch, reason))
            cell_of[trial_id] = index
    return squares, cell_of


def _grid_rows(frame: pd.DataFrame, cell_of: dict[str, int], keys: list[str]) -> pd.DataFrame:
    """The rows of grid trials only (trials outside the grid are kept in the store, not shown),
    each key once (the writer promises it; a hand-merged store might not keep it)."""
    if frame.empty or col.TRIAL_ID not in frame:
        return pd.DataFrame()
    rows = frame[frame[col.TRIAL_ID].isin(cell_of.keys())]
    return rows.drop_duplicates([k for k in keys if k in rows], keep="last").reset_index(drop=True)


def _with_cell_levels(trials: pd.DataFrame, cells: list[dict[str, Any]],
                      cell_of: dict[str, int]) -> pd.DataFrame:
    """A grown sweep's older rows lack the column of a setting made a factor later; their level
    is their cell's (the plan matched them by content), as the analysis reads it from `config`."""
    out = trials.copy()
    index = out[col.TRIAL_ID].map(cell_of)
    for factor in cells[0] if cells else {}:
        column = setting_column(factor)
        levels = index.map(lambda i, f=factor: cells[i][f])
        out[column] = out[column].where(out[column].notna(), levels) if column in out else levels
    return categorize(out)


def _digest(value: Any) -> str:
    return hashlib.sha1(json.dumps(value, default=str).encode()).hexdigest()[:16]


class SweepWatcher:
    """Polls one sweep of a store; `snapshot()` is cheap while nothing moved. Thread-safe."""

    def __init__(self, store: Store, sweep: str | None) -> None:
        self.store = store
        self.fs, self.root = require_board_store(store)
        self.sweep = choose_sweep(store, sweep)
        spec_from_store(store, self.sweep)  # one line where the store has no such sweep
        self._trials = PartitionReader(self.fs, store.partition(col.TRIALS_TABLE, self.sweep))
        self._epochs = PartitionReader(self.fs, store.partition(col.EPOCHS_TABLE, self.sweep))
        self._lock = threading.Lock()
        self._moved: tuple[Any, ...] | None = None
        self._base: dict[str, Any] = {}

    def _stamp(self, path: str) -> tuple[int | None, Any]:
        info = self.fs.get_file_info(path)
        return info.size, info.mtime_ns

    def snapshot(self) -> Snapshot:
        with self._lock:
            try:
                return self._snapshot()
            except OSError as exc:  # the store went away, or the network did
                raise RlvError(f"cannot read store {self.store}: {first_line(exc)}") from None

    def _snapshot(self) -> Snapshot:
        trial_files = listing(self.fs, self._trials.folder)
        epoch_files = listing(self.fs, self._epochs.folder)
        moved = (signature(trial_files), signature(epoch_files),
                 self._stamp(manifest_path(self.root, self.sweep)))
        if moved != self._moved:
            self._rebuild(trial_files, epoch_files)
            self._moved = moved
        base = self._base
        plan: SweepPlan = base["plan"]
        status = status_of(plan)
        squares, cell_of = _squares(plan, status)
        shown = [moved, [(s.state, s.epoch, s.reason) for s in squares], status.driver_alive,
                 status.ended]
        version = _digest(shown)
        return Snapshot(store=self.store.location, sweep=self.sweep, factors=base["factors"],
                        cells=base["cells"], cell_names=base["cell_names"],
                        seeds=plan.spec.seeds, squares=tuple(squares), trials=base["trials"],
                        epochs=base["epochs"], cell_of=cell_of, status=status,
                        remaining=base["remaining"], version=version,
                        rows_version=_digest(moved))

    def _rebuild(self, trial_files: tuple[pafs.FileInfo, ...],
                 epoch_files: tuple[pafs.FileInfo, ...]) -> None:
        spec = spec_from_store(self.store, self.sweep)  # the spec as last launched
        plan = plan_sweep(spec, self.store)
        _, cell_of = _squares(plan, SweepStatus(spec.name, self.store.location, plan.total))
        trials = _grid_rows(self._trials.read(trial_files), cell_of, [col.TRIAL_ID])
        epochs = _grid_rows(self._epochs.read(epoch_files), cell_of, [col.TRIAL_ID, col.EPOCH])
        if not trials.empty:
            trials = _with_cell_levels(trials, plan.cells, cell_of)
        varying = list(spec.varying()) or list(spec.factors)[:1]
        self._base = {
            "plan": plan,
            "factors": tuple(setting_column(f) for f in varying),
            "cells": tuple({setting_column(f): level_label(c[f]) for f in varying}
                           for c in plan.cells),
            "cell_names": tuple(c.name.removesuffix(f"-s{c.seed}") for c in plan.cell_configs),
            "trials": trials,
            "epochs": epochs,
            "remaining": remaining_time(plan),
        }
