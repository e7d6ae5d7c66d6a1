"""The results store: Hive-partitioned Parquet that pandas reads directly (a public contract).

    STORE/trials/sweep=NAME/batch-TIME-ID.parquet         the rows of the trials of one flush
    STORE/epochs/sweep=NAME/batch-TIME-ID.parquet         the epoch rows of one flush
    STORE/trials/sweep=NAME/TRIAL_ID.parquet             (stores of rlv before batches: one
    STORE/epochs/sweep=NAME/TRIAL_ID-eFIRST-LAST.parquet  file per trial or commit; still read)
    STORE/images/NAME/TRIAL_ID/{reconstructions,samples,interpolations}.png

STORE is a local folder or a URI that pyarrow opens (s3://, gs://, file://). Only the driver
writes, through one StoreWriter, and `rlv launch` refuses to start a second driver on a sweep whose
driver is alive. Exactly once: a row is written only if its trial or (trial, epoch) key is not in
the store yet (the writer lists the keys when it opens a sweep: old per-trial file names carry
them, and a batch file's key columns are read; a sweep driver writes batches, one file per table
every HEARTBEAT_S, so that a store of thousands of trials is tens of files that pandas reads in
a moment, not thousands). Files appear
atomically on local disks (written under a `.`-name that readers skip, then renamed) and on
object stores (one PUT). This module holds the layout and the reading; rlv/store/writer.py writes.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs

from rlv import columns as col
from rlv.errors import RlvError

if TYPE_CHECKING:
    from rlv.store.store import Store

log = logging.getLogger(__name__)

STATUS_DIR = "_status"  # STORE/_status/SWEEP.json: the driver's view of a sweep, for `rlv status`
HEARTBEAT_S = 10.0  # the driver rewrites its status file this often (and on every trial event)
STALE_S = 120.0  # a driver whose status file is older than this is gone (12 missed heartbeats)

# File names, which are also the keys (the loaders parse them; no file is opened to find them):
# a trial row in TRIAL_ID.parquet, a commit's epoch rows FIRST..LAST (contiguous) in
# TRIAL_ID-eFIRST-LAST.parquet. Names starting with "." or "_" are not data (pyarrow skips them).
PARQUET = ".parquet"
_EPOCH_FILE = re.compile(r"^(?P<trial>.+)-e(?P<first>\d{5,})-(?P<last>\d{5,})\.parquet$")
_BATCH_FILE = re.compile(r"^batch-\d{8}T\d{6}-[0-9a-f]{12}\.parquet$")
_PARQUET_MIN_BYTES = 12  # "PAR1", the footer length, "PAR1": anything shorter is not Parquet


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def write_bytes(fs: pafs.FileSystem, path: str, data: bytes,
                created: set[str] | None = None) -> None:
    """Write a whole file so that readers see all of it or nothing: on local disks under a
    `.`-name that readers skip, then renamed; on object stores one PUT is atomic already.
    `created`: folders known to exist (a writer's own set); new ones are added to it."""
    directory, name = path.rsplit("/", 1)
    try:
        # S3 has no folders: making one costs requests (a HEAD per level and a marker PUT)
        needs_dir = not isinstance(fs, pafs.S3FileSystem)
        if needs_dir and (created is None or directory not in created):
            fs.create_dir(directory, recursive=True)
            if created is not None:
                created.add(directory)
        if isinstance(fs, pafs.LocalFileSystem):
            tmp = f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"
            with fs.open_output_stream(tmp) as f:
                f.write(data)
            fs.move(tmp, path)
        else:
            with fs.open_output_stream(path) as f:
                f.write(data)
    except OSError as exc:
        raise RlvError(f"cannot write {path} in the store: {first_line(exc)}") from None


def read_optional(fs: pafs.FileSystem, path: str) -> bytes | None:
    """The bytes of file `path`, or None when there is no such file (RlvError on other errors)."""
    try:
        with fs.open_input_stream(path) as f:  # one request where the file is there
            return bytes(f.read())
    except OSError as exc:
        try:  # filesystems differ in what they raise for a missing file: ask
            missing = fs.get_file_info(path).type == pafs.FileType.NotFound
        except OSError:
            missing = False
        if missing:
            return None
        raise RlvError(f"cannot read {path}: {first_line(exc)}") from None


def read_json(fs: pafs.FileSystem, path: str) -> Any:
    """The JSON document in file `path`, or None when there is no such file."""
    data = read_optional(fs, path)
    if data is None:
        return None
    try:
        return json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        # written atomically, so only a file edited or truncated by hand is torn
        raise RlvError(f"corrupt JSON file {path} ({first_line(exc)}); fix or remove it") from None



def partition(root: str, table: str, sweep: str) -> str:
    return f"{root}/{table}/{col.SWEEP}={sweep}"


def finished_trials(store: Store, sweep: str) -> set[str]:
    """Ids of the trials of `sweep` that have a row in the store (one listing of its partition)."""
    return trial_ids(store.fs, store.partition(col.TRIALS_TABLE, sweep))


def _data_files(fs: pafs.FileSystem, directory: str) -> list[pafs.FileInfo]:
    """The Parquet files in `directory` (one listing; none if it does not exist yet). A file
    too short to be Parquet is refused here: its name would vouch for rows it does not hold."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    except OSError as exc:
        raise RlvError(f"cannot read the store at {directory}: {first_line(exc)}") from None
    files = [f for f in infos
             if f.type == pafs.FileType.File and f.base_name.endswith(PARQUET)
             and not f.base_name.startswith((".", "_"))]
    for f in files:
        if f.size is not None and f.size < _PARQUET_MIN_BYTES:
            raise RlvError(f"corrupt store file {f.path} ({f.size} bytes, too short for "
                           "Parquet); move it away and run again: its rows will be rewritten")
    return files


def batch_file_name() -> str:
    """A new batch file's name: when, and a random part (two drivers never share a name)."""
    return f"batch-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}{PARQUET}"


def _batch_keys(fs: pafs.FileSystem, path: str, columns: list[str]) -> list[tuple[Any, ...]]:
    """The key columns of a batch file (only those columns are read)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=columns, filesystem=fs)
    except (OSError, pa.ArrowInvalid) as exc:
        raise RlvError(f"corrupt store file {path} ({first_line(exc)}); move it away and run "
                       "again: its rows will be rewritten") from None
    return list(zip(*(table.column(c).to_pylist() for c in columns), strict=True))


def trial_ids(fs: pafs.FileSystem, directory: str) -> set[str]:
    """The trial ids of the trial files in a partition: from their names, or from the
    trial-id column of a batch file."""
    ids: set[str] = set()
    for f in _data_files(fs, directory):
        if _BATCH_FILE.match(f.base_name):
            ids.update(str(key[0]) for key in _batch_keys(fs, f.path, [col.TRIAL_ID]))
        else:
            ids.add(f.base_name.removesuffix(PARQUET))
    return ids


def epoch_keys(fs: pafs.FileSystem, directory: str) -> set[tuple[str, int]]:
    """The (trial id, epoch) keys of the epoch files in a partition: from their names, or from
    the key columns of a batch file."""
    keys: set[tuple[str, int]] = set()
    for f in _data_files(fs, directory):
        if _BATCH_FILE.match(f.base_name):
            keys.update((str(t), int(e))
                        for t, e in _batch_keys(fs, f.path, [col.TRIAL_ID, col.EPOCH]))
            continue
        match = _EPOCH_FILE.match(f.base_name)
        if match is None:
            log.warning("ignoring %s: not an rlv epoch file name (TRIAL-eFIRST-LAST.parquet)",
                        f.path)
            continue
        trial_id, first, last = match["trial"], int(match["first"]), int(match["last"])
        keys.update((trial_id, epoch) for epoch in range(first, last + 1))
    return keys


def read_status(store: Store, sweep: str) -> dict[str, Any]:
    """The status file of `sweep`, or {} when there is none."""
    path = store.path(STATUS_DIR, f"{sweep}.json")
    status = store.read_json(path)
    if status is None:
        return {}
    if not isinstance(status, dict):
        raise RlvError(f"corrupt status file {path} (not a JSON object); remove it")
    return status


def trial_rows(store: Store, sweep: str, ids: set[str], columns: list[str]) -> list[dict[str, Any]]:
    """Some columns of the rows of trials `ids` of `sweep` (one filtered read of its files)."""
    import pyarrow.dataset as ds

    folder = store.partition(col.TRIALS_TABLE, sweep)
    try:
        table = ds.dataset(folder, format="parquet", filesystem=store.fs).to_table(
            columns=[col.TRIAL_ID, *columns], filter=ds.field(col.TRIAL_ID).isin(sorted(ids)))
    except (OSError, ValueError, pa.ArrowInvalid) as exc:
        raise RlvError(f"cannot read the trials of {folder}: {first_line(exc)}") from None
    return table.to_pylist()
