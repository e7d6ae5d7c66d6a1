"""Trial checkpoints in the store: the one thing trials write there.

    STORE/_checkpoints/SWEEP/TRIAL_ID/state.pt   a running trial's last checkpoint (model,
                                                 optimiser, RNG states, epoch history)
    STORE/_checkpoints/SWEEP/TRIAL_ID/model.pt   a finished trial's trained weights only

The store is shared by every node, so a trial resumes from its checkpoint wherever it runs next
(a Tune retry, or a later launch). A trial writes `state.pt` (atomically, replacing the last one)
before it reports the epochs it covers as committed, and `model.pt` after its last epoch (unless
the sweep says `keep_model: false`); the driver deletes `state.pt` once the trial's row is in the
store. The tables stay the driver's alone. Bytes only here (pyarrow): torch is the trial's.
"""

from __future__ import annotations

import pyarrow.fs as pafs

from rlv.errors import RlvError
from rlv.store.files import first_line, open_store

CHECKPOINTS_DIR = "_checkpoints"
STATE_FILE = "state.pt"
MODEL_FILE = "model.pt"


def trial_dir(root: str, sweep: str, trial_id: str) -> str:
    return f"{root}/{CHECKPOINTS_DIR}/{sweep}/{trial_id}"


def delete_optional(fs: pafs.FileSystem, path: str) -> None:
    """Delete a file that may be gone already."""
    try:
        if fs.get_file_info(path).type != pafs.FileType.NotFound:
            fs.delete_file(path)
    except OSError as exc:
        raise RlvError(f"cannot delete {path} in the store: {first_line(exc)}") from None


def checkpoint_files(store: str, sweep: str) -> dict[str, set[str]]:
    """trial id -> names of its checkpoint files, from one recursive listing."""
    fs, root = open_store(store)
    base = f"{root}/{CHECKPOINTS_DIR}/{sweep}"
    try:
        infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True, recursive=True))
    except OSError as exc:
        raise RlvError(f"cannot list {base}: {first_line(exc)}") from None
    found: dict[str, set[str]] = {}
    for info in infos:
        if info.type != pafs.FileType.File or info.base_name.startswith("."):
            continue
        trial_id = info.path[len(base) + 1:].rsplit("/", 1)[0]
        found.setdefault(trial_id, set()).add(info.base_name)
    return found


def finish(fs: pafs.FileSystem, root: str, sweep: str, trial_id: str, keep_model: bool) -> None:
    """A finished trial (its row is in the store) keeps its model weights only, or nothing."""
    folder = trial_dir(root, sweep, trial_id)
    if keep_model:
        delete_optional(fs, f"{folder}/{STATE_FILE}")
        return
    try:
        if fs.get_file_info(folder).type != pafs.FileType.NotFound:
            fs.delete_dir(folder)
    except OSError as exc:
        raise RlvError(f"cannot delete {folder} in the store: {first_line(exc)}") from None
