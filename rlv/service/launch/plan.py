"""The launch's first step: the sweep file's grid against the store, refused before the store is
touched when a setting changed, the cache folder is unusable, or a data set or the FID weights
are missing here. Paths become absolute for the trials, which run in folders of Tune's; the
driver's own environment is left as it is (the trials get theirs through Ray's runtime_env)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from rlv.config import TrialConfig
from rlv.store import checkpoints
from rlv.store.plan import SweepPlan, plan_sweep
from rlv.store.store import Store
from rlv.sweep.spec import SweepSpec

# rlv's environment that trials must see as the driver does (paths made absolute);
# RLV_HOLD_DIR is the tests' hook (rlv/service/hold.py)
PATH_ENV = ("RLV_CACHE_DIR", "RLV_DATA_DIR", "RLV_FID_WEIGHTS", "RLV_HOLD_DIR")


@dataclass(frozen=True)
class Launch:
    """What a launch runs: the spec (paths absolute), its opened store, the environment its
    trials need."""

    spec: SweepSpec
    store: Store
    trial_env: dict[str, str]


def trial_env() -> dict[str, str]:
    """rlv's path variables of this process, made absolute, for the trials' runtime_env."""
    env = {}
    for name in PATH_ENV:
        value = os.environ.get(name)
        if value:
            relative = "://" not in value and not os.path.isabs(os.path.expanduser(value))
            env[name] = str(Path(value).expanduser().resolve()) if relative else value
    return env


def absolute_data_dir(spec: SweepSpec) -> SweepSpec:
    """The spec with a relative data.data_dir made absolute."""
    data = spec.settings.get("data", {})
    data_dir = data.get("data_dir")
    if not data_dir or os.path.isabs(os.path.expanduser(data_dir)):
        return spec
    settings = {**spec.settings, "data": {**data, "data_dir": str(Path(data_dir).resolve())}}
    return dataclasses.replace(spec, settings=settings)


def preflight(trials: list[TrialConfig]) -> None:
    """Fail before any trial starts when this node's cache folder is unusable, or a data set or
    the FID weights are missing or broken here."""
    from rlv.levels import DATASETS
    from rlv.paths import cache_dir

    cache_dir()
    seen = set()
    for cfg in trials:
        key = (cfg.data.dataset, cfg.data.data_dir)
        if key not in seen:
            seen.add(key)
            DATASETS.build(cfg.data.dataset).locate(cfg.data.data_dir)
    if any(cfg.eval.fid_samples > 0 for cfg in trials):
        from rlv.trial.fid_weights import check_weights_available

        check_weights_available()


def plan_launch(spec: SweepSpec, store_override: str | None) -> Launch:
    """Open the store once and check the grid against it (raises before anything is written)."""
    spec = absolute_data_dir(spec)
    store = Store.open(spec.store_location(store_override))
    preflight(plan_sweep(spec, store).trial_configs())
    return Launch(spec, store, trial_env())


def heal_checkpoints(plan: SweepPlan) -> None:
    """Slim the checkpoints of finished trials whose driver died between writing the trial's
    row and slimming its checkpoint (the row is the truth: the trial is done)."""
    for trial_id in plan.done.values():
        if checkpoints.unfinished(plan.checkpoints.get(trial_id, set())):
            checkpoints.finish(plan.store, plan.spec.name, trial_id, plan.spec.keep_model)
