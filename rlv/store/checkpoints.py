"""Trial checkpoints in the store: the one thing trials write there.

    STORE/_checkpoints/SWEEP/TRIAL_ID/attempt-TOKEN/state-EPOCH.pt   an attempt's checkpoints
    STORE/_checkpoints/SWEEP/TRIAL_ID/attempt-TOKEN/model.pt         its trained weights
    STORE/_checkpoints/SWEEP/TRIAL_ID/committed.json                 the driver's pointer
    STORE/_checkpoints/SWEEP/TRIAL_ID/model.pt                       a finished trial's weights

Fencing: every run of a trial (the first, a Tune retry, a later launch) is an attempt with a
token of its own and writes only under its own attempt folder, never a file another attempt
reads. The driver promotes an attempt's checkpoint (rewrites committed.json to name it) when the
trial's current attempt reports it, and its model (moves it to TRIAL_ID/model.pt) with the
trial's final report; results of an attempt the driver has seen fail are ignored. So an attempt
cut off from the cluster that lives on (a partition, a frozen machine) writes into a folder
nobody reads, while its retry resumes from the newest committed checkpoint on any node. Once
the trial's row is in the store the driver deletes everything but model.pt (or everything,
with `keep_model: false`). Stores written before attempts (TRIAL_ID/state.pt) still resume.
Bytes only here (pyarrow): torch is the trial's.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import pyarrow.fs as pafs

from rlv.errors import RlvError
from rlv.store.files import first_line, read_optional, write_bytes
from rlv.store.store import Store

CHECKPOINTS_DIR = "_checkpoints"
STATE_FILE = "state.pt"  # the checkpoint of stores written before attempts
MODEL_FILE = "model.pt"
COMMITTED_FILE = "committed.json"
ATTEMPT_PREFIX = "attempt-"


def trial_dir(root: str, sweep: str, trial_id: str) -> str:
    return f"{root}/{CHECKPOINTS_DIR}/{sweep}/{trial_id}"


def attempt_dir(folder: str, token: str) -> str:
    """An attempt's own folder inside its trial's folder `folder`."""
    return f"{folder}/{ATTEMPT_PREFIX}{token}"


def state_name(epoch: int) -> str:
    return f"state-{epoch:06d}.pt"


@dataclass(frozen=True)
class Committed:
    """committed.json: the checkpoint a resumed attempt starts from."""

    attempt: str  # the token of the attempt that wrote it
    file: str  # its name in that attempt's folder
    epoch: int

    def path(self, folder: str) -> str:
        return f"{attempt_dir(folder, self.attempt)}/{self.file}"


def read_committed(fs: pafs.FileSystem, folder: str) -> Committed | None:
    data = read_optional(fs, f"{folder}/{COMMITTED_FILE}")
    if data is None:
        return None
    try:
        return Committed(**json.loads(data))
    except (ValueError, TypeError):
        return None  # not written by rlv: no committed checkpoint (the trial starts over)


def resume_path(fs: pafs.FileSystem, folder: str) -> str | None:
    """The newest committed checkpoint of the trial in `folder`, or None: the one the driver
    promoted, else a checkpoint of a store written before attempts."""
    committed = read_committed(fs, folder)
    if committed is not None:
        return committed.path(folder)
    legacy = f"{folder}/{STATE_FILE}"
    try:
        return legacy if fs.get_file_info(legacy).type == pafs.FileType.File else None
    except OSError as exc:
        raise RlvError(f"cannot read {folder}: {first_line(exc)}") from None


def promote(fs: pafs.FileSystem, folder: str, new: Committed, old: Committed | None) -> None:
    """Make `new` the trial's committed checkpoint (the driver, for the current attempt), then
    delete `old`, the one it replaces (the driver remembers it: no read per checkpoint)."""
    if old == new:
        return
    write_bytes(fs, f"{folder}/{COMMITTED_FILE}", json.dumps(asdict(new)).encode())
    if old is not None and old.path(folder) != new.path(folder):
        delete_quietly(fs, old.path(folder))


def promote_model(fs: pafs.FileSystem, folder: str, token: str) -> None:
    """The current attempt's trained weights become the trial's model.pt (notebooks load it)."""
    source = f"{attempt_dir(folder, token)}/{MODEL_FILE}"
    try:
        if fs.get_file_info(source).type == pafs.FileType.File:
            fs.move(source, f"{folder}/{MODEL_FILE}")
    except OSError as exc:
        raise RlvError(f"cannot keep the model of {folder}: {first_line(exc)}") from None


def delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    """Delete a file if it is there (one request; a missing file is no error)."""
    try:
        fs.delete_file(path)
    except OSError:
        pass


def checkpoint_files(store: Store, sweep: str) -> dict[str, set[str]]:
    """trial id -> names of the files in its folder (an attempt's as `attempt-TOKEN/NAME`), from
    one recursive listing."""
    fs, base = store.fs, store.path(CHECKPOINTS_DIR, sweep)
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=True))
    except OSError as exc:
        raise RlvError(f"cannot list {base}: {first_line(exc)}") from None
    found: dict[str, set[str]] = {}
    for info in infos:
        if info.type != pafs.FileType.File or info.base_name.startswith("."):
            continue
        trial_id, _, name = info.path[len(base) + 1:].partition("/")
        if name:
            found.setdefault(trial_id, set()).add(name)
    return found


def resumable(files: set[str]) -> bool:
    """Whether a trial folder's files (checkpoint_files) hold a checkpoint to resume from."""
    return COMMITTED_FILE in files or STATE_FILE in files


def unfinished(files: set[str]) -> bool:
    """Whether a trial folder holds more than a finished trial keeps (its model.pt)."""
    return bool(files - {MODEL_FILE})


def finish(store: Store, sweep: str, trial_id: str, keep_model: bool) -> None:
    """A finished trial (its row is in the store) keeps its model weights only, or nothing:
    its checkpoints, the pointer and every attempt's folder go (a stale attempt's too)."""
    fs, folder = store.fs, trial_dir(store.root, sweep, trial_id)
    try:
        if not keep_model:
            if fs.get_file_info(folder).type != pafs.FileType.NotFound:
                fs.delete_dir(folder)
            return
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        for info in infos:
            if info.base_name == MODEL_FILE:
                continue
            if info.type == pafs.FileType.Directory:
                fs.delete_dir(info.path)
            else:
                fs.delete_file(info.path)
    except OSError as exc:
        raise RlvError(f"cannot delete the checkpoints in {folder}: {first_line(exc)}") from None
