"""The sweep's manifest in the store: its spec, its settings, and the key of every trial it ran.

    STORE/_sweeps/NAME/spec.json

rlv keeps it so that the store alone says what a sweep is (`rlv status NAME --store S` needs no
sweep file) and which trial a row is: `trials` maps each trial id the sweep ever launched to its
content key (rlv/store/identity.py), so a launch matches the store's rows to the grid from one
listing of file names, without opening a Parquet file. Written by the driver only, once per
launch (after Ray is up and has accepted the trials' resources), never per result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rlv.errors import RlvError
from rlv.store.store import Store

SWEEPS_DIR = "_sweeps"
MANIFEST_FILE = "spec.json"
VERSION = 1


@dataclass
class Manifest:
    sweep: str
    spec: dict[str, Any]  # the last launched SweepSpec, as SweepSpec.to_dict() wrote it
    settings: dict[str, Any]  # flat result settings every trial shares (rlv/store/identity.py)
    factor_paths: list[str] = field(default_factory=list)  # settings that vary by design
    trials: dict[str, str] = field(default_factory=dict)  # trial id -> content key
    launches: list[dict[str, Any]] = field(default_factory=list)  # when, how many trials ran

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, "sweep": self.sweep, "spec": self.spec,
                "settings": self.settings, "factor_paths": self.factor_paths,
                "launches": self.launches, "trials": self.trials}


def manifest_path(root: str, sweep: str) -> str:
    return f"{root}/{SWEEPS_DIR}/{sweep}/{MANIFEST_FILE}"


def read_manifest(store: Store, sweep: str) -> Manifest | None:
    """The sweep's manifest, or None where the store has none (a new sweep)."""
    path = manifest_path(store.root, sweep)
    data = store.read_json(path)
    if data is None:
        return None
    try:
        return Manifest(sweep=str(data["sweep"]), spec=dict(data["spec"]),
                        settings=dict(data["settings"]),
                        factor_paths=list(data.get("factor_paths", [])),
                        trials={str(k): str(v) for k, v in data.get("trials", {}).items()},
                        launches=list(data.get("launches", [])))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise RlvError(f"corrupt sweep manifest {path} (not rlv's format); restore it or launch "
                       "the sweep into another store") from None


def write_manifest(store: Store, manifest: Manifest, trials_run: int) -> None:
    """Record a launch: the manifest is replaced whole (readers see the old one or the new)."""
    manifest.launches.append({"at": datetime.now(UTC).isoformat(), "trials_run": trials_run})
    store.write_bytes(manifest_path(store.root, manifest.sweep),
                json.dumps(manifest.to_dict(), separators=(",", ":")).encode())


def stored_sweeps(store: Store) -> list[str]:
    """The names of the sweeps that have a manifest in the store."""
    import pyarrow.fs as pafs

    infos = store.fs.get_file_info(pafs.FileSelector(store.path(SWEEPS_DIR), allow_not_found=True))
    return sorted(f.base_name for f in infos if f.type == pafs.FileType.Directory)
