"""A sweep's grid matched against the store: which trials are done, and which a launch runs.

The store is the sweep's truth. A grid trial is done when a row with its content key (not its
name: rlv/store/identity.py) is in the store; every other grid trial runs, under the id it had
if it started before (so it finds its checkpoint and its rows keep one id), else under its grid
name. A sweep file may grow (seeds, levels, a setting made a factor); a change that would make
finished trials disagree with new ones is refused here, before anything runs: a fixed setting
against the manifest's, a setting of `where:` (one that depends on a cell's levels) cell by cell
against the cell rebuilt from the manifest's spec.

Cost: one listing of the sweep's trial files and one manifest read; cells are keyed once, trials
as CELL-sSEED strings, and TrialConfigs are built only for the trials that run (and, for a sweep
with `where:`, once more per cell to compare with the last launch).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from rlv import columns as col
from rlv.config import TrialConfig
from rlv.errors import RlvError
from rlv.store.checkpoints import checkpoint_files, resumable
from rlv.store.files import finished_trials, trial_rows
from rlv.store.identity import cell_key, result_settings, stored_config_key, trial_key
from rlv.store.manifest import Manifest, read_manifest
from rlv.store.store import Store
from rlv.sweep import spec as sweep_spec
from rlv.sweep.spec import SweepSpec
from rlv.sweep.where import Conditional

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Planned:
    """A grid trial that has no row in the store yet."""

    cell: int  # index into SweepPlan.cells
    seed: int
    key: str
    trial_id: str | None  # the id it ran under before (it may have a checkpoint), else None


@dataclass
class SweepPlan:
    spec: SweepSpec
    store: Store
    manifest: Manifest  # what the store will say once this plan is launched
    cells: list[dict[str, Any]]
    cell_configs: list[TrialConfig]  # one per cell, with the first seed
    cell_keys: list[str]  # one per cell: its content key (a trial's is CELL-sSEED)
    done: dict[str, str] = field(default_factory=dict)  # key -> stored trial id (grid trials)
    to_run: list[Planned] = field(default_factory=list)
    outside: int = 0  # stored trials of the sweep that the grid no longer holds (kept as they are)
    checkpoints: dict[str, set[str]] = field(default_factory=dict)  # trial id -> its files

    @property
    def total(self) -> int:
        return len(self.done) + len(self.to_run)

    def resumable(self) -> int:
        """Trials to run that start from a checkpoint."""
        return sum(1 for p in self.to_run
                   if p.trial_id and resumable(self.checkpoints.get(p.trial_id, set())))

    def to_run_names(self) -> set[str]:
        """The ids the trials to run go by: the stored id where one ran before, else the name
        the grid gives it (what a driver's status file lists). No manifest is written."""
        # a grid name is its cell's name with the seed swapped: building and validating a
        # TrialConfig per trial made `rlv check` of a 100,000-trial grid take ~40 s
        stems = [c.name.removesuffix(f"-s{c.seed}") for c in self.cell_configs]
        return {p.trial_id or f"{stems[p.cell]}-s{p.seed}" for p in self.to_run}

    def trial_configs(self) -> list[TrialConfig]:
        """The TrialConfigs of the trials to run (the stored id where a trial ran before); adds
        the new ones to the manifest."""
        trials, taken = [], self.manifest.trials
        for p in self.to_run:
            cfg = self.spec.trial_config({**self.cells[p.cell], "seed": p.seed})
            if p.trial_id is not None:
                cfg = dataclasses.replace(cfg, trial_id=p.trial_id)
            elif taken.get(cfg.name, p.key) != p.key:
                raise RlvError(f"trial id {cfg.name!r} is taken in store {self.store} by a trial "
                               f"of sweep {self.spec.name!r} with other settings; give the "
                               "changed sweep another name, or use another --store")
            taken[cfg.name] = p.key
            trials.append(cfg)
        return trials


def _factor_settings(spec: SweepSpec) -> set[str]:
    """The settings the sweep's factors set, as `section.field`."""
    named = getattr(sweep_spec, "FACTOR_SETTINGS", {})
    return {".".join(named[f]) if f in named else f for f in spec.factors}


def factor_paths(spec: SweepSpec, settings: list[dict[str, Any]]) -> set[str]:
    """The settings a sweep varies by design: its factors' settings, and whatever differs
    between its cells (a `where:` setting among them)."""
    paths = _factor_settings(spec)
    first = settings[0]
    paths.update(p for s in settings[1:] for p, v in s.items() if first.get(p) != v)
    return paths


def _changed(spec: SweepSpec, store: Store, trials: str, path: str, old: Any, new: Any) -> RlvError:
    return RlvError(f"sweep {spec.name!r} in store {store} ran its {trials} with {path} = "
                    f"{old!r}, the sweep file now says {new!r}: finished trials would disagree "
                    "with new ones. Put the setting back, or start a new sweep (another name, or "
                    "another --store)")


def check_compatible(spec: SweepSpec, store: Store, manifest: Manifest, common: dict[str, Any],
                     varying: set[str]) -> None:
    """Refuse a fixed setting that differs from the one the sweep's trials ran with."""
    skip = varying | set(manifest.factor_paths)
    for path in sorted((common.keys() & manifest.settings.keys()) - skip):
        old, new = manifest.settings[path], common[path]
        if old != new:
            raise _changed(spec, store, "trials", path, old, new)


def check_conditional(spec: SweepSpec, store: Store, manifest: Manifest,
                      cells: list[dict[str, Any]], cell_configs: list[TrialConfig],
                      settings: list[dict[str, Any]]) -> None:
    """Refuse a changed `where:` setting as check_compatible refuses a changed fixed one. Such a
    setting differs between cells, so it is no common setting: each cell the last launch's grid
    held is rebuilt with that launch's settings and `where` (the manifest's spec), and every
    setting that either launch's `where` sets is compared with the cell's now."""
    try:
        before_where = tuple(Conditional.from_dict(e) for e in manifest.spec.get("where", []))
        before_settings = {s: dict(v) for s, v in manifest.spec.get("settings", {}).items()}
        before_factors = {f: list(v) for f, v in manifest.spec.get("factors", {}).items()}
    except (KeyError, TypeError, AttributeError, ValueError):
        raise RlvError(f"corrupt sweep manifest of sweep {spec.name!r} in store {store} (its "
                       "spec's where, settings or factors are not rlv's); restore it or launch "
                       "the sweep into another store") from None
    paths = sorted({f"{section}.{key}" for entry in before_where + spec.where
                    for section, values in entry.settings.items() for key in values}
                   - _factor_settings(spec))
    if not paths:
        return
    before = dataclasses.replace(spec, settings=before_settings, where=before_where)
    marker = object()
    for cell, cfg, now in zip(cells, cell_configs, settings, strict=True):
        if any(f in before_factors and level not in before_factors[f] for f, level in cell.items()):
            continue  # a level the last launch did not have: none of its trials ran
        try:
            then = result_settings(before.trial_config({**cell, "seed": cfg.seed}))
        except RlvError:
            return  # a spec this rlv cannot rebuild: a launch's trial ids still guard the store
        for path in paths:
            old, new = then.get(path, marker), now.get(path, marker)
            if old is not marker and new is not marker and old != new:
                stem = cfg.name.removesuffix(f"-s{cfg.seed}")
                raise _changed(spec, store, f"{stem} trials", path, old, new)


def _stored_keys(store: Store, sweep: str, ids: set[str]) -> dict[str, str]:
    """Keys of stored trials the manifest does not know (a store written before rlv kept one),
    from the `config` column of their rows."""
    where = f"a row of sweep {sweep!r} in store {store}"
    return {str(r[col.TRIAL_ID]): stored_config_key(str(r[col.CONFIG]), where)
            for r in trial_rows(store, sweep, ids, [col.CONFIG])}


def require_store(store: Store) -> None:
    """RlvError unless the store exists (a mistyped store is not a sweep with nothing done)."""
    if not store.exists():
        raise RlvError(f"store {store} does not exist (nothing was launched into it); check the "
                       "path, or give the sweep's store with --store")


def plan_sweep(spec: SweepSpec, store: Store) -> SweepPlan:
    """Match the grid of `spec` against the store (refusing incompatible settings)."""
    manifest = read_manifest(store, spec.name)
    cells = spec.cells()
    cell_configs = [spec.trial_config({**cell, "seed": spec.seeds[0]}) for cell in cells]
    settings = [result_settings(cfg) for cfg in cell_configs]
    varying = factor_paths(spec, settings)
    common = {p: v for p, v in settings[0].items() if p not in varying}
    if manifest is not None:
        check_compatible(spec, store, manifest, common, varying)
        check_conditional(spec, store, manifest, cells, cell_configs, settings)
        known = dict(manifest.trials)
        manifest = dataclasses.replace(manifest, spec=spec.to_dict(), settings=common,
                                       factor_paths=sorted(varying | set(manifest.factor_paths)),
                                       trials=known, launches=list(manifest.launches))
    else:
        manifest = Manifest(spec.name, spec.to_dict(), common, sorted(varying))
    stored = finished_trials(store, spec.name)
    unknown = stored - manifest.trials.keys()
    if unknown:
        manifest.trials.update(_stored_keys(store, spec.name, unknown))
        # a file whose name is no trial id of its rows (written by another tool): not matched
        foreign = sorted(stored - manifest.trials.keys())
        if foreign:
            log.warning("store %s, sweep %s: %d trial files name no trial rlv can match "
                        "(e.g. %s); they are not counted", store, spec.name, len(foreign),
                        foreign[0])
            stored -= set(foreign)
    id_of = {key: trial_id for trial_id, key in manifest.trials.items()}
    id_of.update({manifest.trials[trial_id]: trial_id for trial_id in stored})  # rows win
    stored_keys = {manifest.trials[trial_id] for trial_id in stored}
    plan = SweepPlan(spec, store, manifest, cells, cell_configs,
                     [cell_key(s) for s in settings], checkpoints=checkpoint_files(store, spec.name))
    in_grid = 0
    for index, cell in enumerate(plan.cell_keys):
        for seed in spec.seeds:
            key = trial_key(cell, seed)
            if key in stored_keys:
                plan.done[key] = id_of[key]
                in_grid += 1
            else:
                plan.to_run.append(Planned(index, seed, key, id_of.get(key)))
    plan.outside = len(stored) - in_grid
    return plan
