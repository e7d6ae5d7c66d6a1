"""Make Tune's saved experiment state agree with the store before a sweep is restored.

The store is written as results arrive; Tune saves its experiment state on its own schedule. A
driver killed between the two leaves trials that are finished in the store but still RUNNING in
Tune's state, and `Tuner.restore` would run them again. Before restoring, rlv marks every trial
whose row is in the store as TERMINATED in the newest `experiment_state-*.json` (the format of
the pinned Ray 2.60: `trial_data` is a list of [trial JSON, runtime JSON] pairs).
"""

from __future__ import annotations

import json
import logging

import pyarrow.fs as pafs

from rlv.store import open_store, read_json, write_bytes

log = logging.getLogger(__name__)

TERMINATED = "TERMINATED"


def _latest_state_file(fs: pafs.FileSystem, experiment: str) -> str | None:
    selector = pafs.FileSelector(experiment, allow_not_found=True)
    names = sorted(f.path for f in fs.get_file_info(selector)
                   if f.base_name.startswith("experiment_state-") and f.base_name.endswith(".json"))
    return names[-1] if names else None


def mark_finished(experiment: str, finished: set[str]) -> None:
    """Set the Tune status of the trials named in `finished` to TERMINATED (the state file is
    replaced whole, so a driver killed meanwhile leaves the old one, never half of one)."""
    fs, path = open_store(experiment)
    state_file = _latest_state_file(fs, path)
    if state_file is None:
        return
    state = read_json(fs, state_file)
    if state is None:
        return
    changed = []
    for pair in state.get("trial_data", []):
        trial = json.loads(pair[0])
        name = trial.get("custom_trial_name") or ""
        if name in finished and trial.get("status") != TERMINATED:
            trial["status"] = TERMINATED
            pair[0] = json.dumps(trial, indent=2)
            changed.append(name)
    if changed:
        write_bytes(fs, state_file, json.dumps(state, indent=2).encode())
        log.info("marked %d trials finished in the store as TERMINATED: %s", len(changed), changed)
