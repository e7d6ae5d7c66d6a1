"""The results store: Hive-partitioned Parquet that pandas reads directly (a public contract).

    STORE/trials/sweep=NAME/TRIAL_ID.parquet             one row per finished trial
    STORE/epochs/sweep=NAME/TRIAL_ID-eFIRST-LAST.parquet  the epoch rows of one commit
    STORE/images/NAME/TRIAL_ID/{reconstructions,samples,interpolations}.png

STORE is a local folder or a URI that pyarrow opens (s3://, gs://, file://). Only the driver
writes, through one StoreWriter, and `rlv launch` refuses to start a second driver on a sweep whose
driver is alive. Exactly once: a trial row's file is named by the trial, so a rewrite replaces
it; an epoch row is written only if its (trial, epoch) key is not in the store yet (the writer
lists the keys when it opens a sweep: file names carry them, so no file is read). Files appear
atomically on local disks (written under a `.`-name that readers skip, then renamed) and on
object stores (one PUT).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rlv import columns as col
from rlv.errors import RlvError

log = logging.getLogger(__name__)

STATUS_DIR = "_status"  # STORE/_status/SWEEP.json: the driver's view of a sweep, for `rlv status`
HEARTBEAT_S = 10.0  # the driver rewrites its status file this often (and on every trial event)
STALE_S = 120.0  # a driver whose status file is older than this is gone (12 missed heartbeats)

# File names, which are also the keys (the loaders parse them; no file is opened to find them):
# a trial row in TRIAL_ID.parquet, a commit's epoch rows FIRST..LAST (contiguous) in
# TRIAL_ID-eFIRST-LAST.parquet. Names starting with "." or "_" are not data (pyarrow skips them).
_PARQUET = ".parquet"
_EPOCH_FILE = re.compile(r"^(?P<trial>.+)-e(?P<first>\d{5,})-(?P<last>\d{5,})\.parquet$")
_PARQUET_MIN_BYTES = 12  # "PAR1", the footer length, "PAR1": anything shorter is not Parquet

# Column types, so that every file of a table has the same schema (pyarrow merges by it).
_STRING, _INT, _FLOAT = pa.string(), pa.int64(), pa.float64()
_TIME = pa.timestamp("us", tz="UTC")
TRIAL_SCHEMA = pa.schema([
    (col.TRIAL_ID, _STRING), (col.DATASET, _STRING), (col.ENCODER, _STRING),
    (col.LAYER, _STRING), (col.PRIOR, _STRING), (col.OBJECTIVE, _STRING), (col.SEED, _INT),
    (col.EPOCHS, _INT), (col.LATENT_DIM, _INT), (col.TRAIN_SIZE, _INT), (col.TEST_SIZE, _INT),
    (col.TEST_NEG_ELBO, _FLOAT), (col.TEST_RE, _FLOAT), (col.TEST_RT, _FLOAT),
    (col.TEST_RT_ELBO, _FLOAT), (col.FLOW_LOGDET, _FLOAT),
    (col.TRAIN_NEG_ELBO, _FLOAT), (col.TRAIN_RE, _FLOAT), (col.TRAIN_RT, _FLOAT),
    (col.GAP_NEG_ELBO, _FLOAT), (col.GAP_RE, _FLOAT), (col.GAP_RT, _FLOAT),
    (col.FID, _FLOAT), (col.FID_SAMPLES, _INT), (col.EPOCH_TIME_S, _FLOAT),
    (col.TRAINABLE_PARAMS, _INT), (col.FROZEN_PARAMS, _INT), (col.DEVICE, _STRING),
    (col.STARTED_AT, _TIME), (col.FINISHED_AT, _TIME), (col.TRIAL_SECONDS, _FLOAT),
    (col.RLV_VERSION, _STRING), (col.TORCH_VERSION, _STRING), (col.RAY_VERSION, _STRING),
    (col.CONFIG, _STRING),
    (col.IMAGE_RECONSTRUCTIONS, _STRING), (col.IMAGE_SAMPLES, _STRING),
    (col.IMAGE_INTERPOLATIONS, _STRING),
])  # fmt: skip
EPOCH_SCHEMA = pa.schema([
    (col.TRIAL_ID, _STRING), (col.EPOCH, _INT), (col.TRAIN_NEG_ELBO, _FLOAT),
    (col.TRAIN_RE, _FLOAT), (col.TRAIN_RT, _FLOAT), (col.EPOCH_TIME_S, _FLOAT),
    (col.FLOW_LOGDET, _FLOAT), (col.DATASET, _STRING), (col.ENCODER, _STRING),
    (col.LAYER, _STRING), (col.PRIOR, _STRING), (col.OBJECTIVE, _STRING), (col.SEED, _INT),
])  # fmt: skip


def open_store(store: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """(filesystem, root path) of a local folder (made absolute) or a URI: pyarrow's own schemes
    (file://, s3://, gs://, hdfs://), else fsspec's (memory://, ...), where fsspec is installed."""
    text = os.fspath(store)
    if "://" not in text:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(text))
    try:
        fs, root = pafs.FileSystem.from_uri(text)
        return fs, root.rstrip("/")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        pass  # a scheme pyarrow does not know natively
    except OSError as exc:  # a known scheme that cannot be reached (credentials, region, ...)
        raise RlvError(f"cannot open store {text!r}: {_first_line(exc)}") from None
    try:
        import fsspec
    except ImportError:
        raise RlvError(f"cannot open store {text!r}: unknown scheme and fsspec is not installed; "
                       "use a folder, file://, s3://, gs:// or hdfs://") from None
    try:
        fs_spec, root = fsspec.core.url_to_fs(text)
    except (ValueError, ImportError) as exc:
        raise RlvError(f"cannot open store {text!r}: {_first_line(exc)}") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs_spec)), root.rstrip("/")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def write_bytes(fs: pafs.FileSystem, path: str, data: bytes,
                created: set[str] | None = None) -> None:
    """Write a whole file so that readers see all of it or nothing: on local disks under a
    `.`-name that readers skip, then renamed; on object stores one PUT is atomic already.
    `created`: folders known to exist (a writer's own set); new ones are added to it."""
    directory, name = path.rsplit("/", 1)
    try:
        if created is None or directory not in created:
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
        raise RlvError(f"cannot write {path} in the store: {_first_line(exc)}") from None


def read_json(fs: pafs.FileSystem, path: str) -> Any:
    """The JSON document in file `path`, or None when there is no such file."""
    try:
        with fs.open_input_stream(path) as f:  # one request where the file is there
            data = f.read()
    except OSError as exc:
        try:  # filesystems differ in what they raise for a missing file: ask
            missing = fs.get_file_info(path).type == pafs.FileType.NotFound
        except OSError:
            missing = False
        if missing:
            return None
        raise RlvError(f"cannot read {path}: {_first_line(exc)}") from None
    try:
        return json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        # written atomically, so only a file edited or truncated by hand is torn
        raise RlvError(f"corrupt JSON file {path} ({_first_line(exc)}); fix or remove it") from None


def _to_arrow_value(name: str, value: Any) -> Any:
    if name in (col.STARTED_AT, col.FINISHED_AT) and isinstance(value, str):
        return datetime.fromisoformat(value)
    return value


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows -> table with `schema`'s columns first (typed), then any extra columns as given."""
    extra = sorted({k for r in rows for k in r} - set(schema.names))
    columns = {name: [_to_arrow_value(name, r.get(name)) for r in rows] for name in schema.names}
    table = pa.Table.from_pydict(columns, schema=schema)
    for name in extra:
        table = table.append_column(name, pa.array([r.get(name) for r in rows]))
    return table


@dataclass
class StoreWriter:
    """The one writer of a store for one sweep. Plain Python: the Tune callback wraps it."""

    store: str
    sweep: str
    _fs: pafs.FileSystem = field(init=False, repr=False)
    _root: str = field(init=False, repr=False)
    trials_written: set[str] = field(init=False, default_factory=set)
    epochs_written: set[tuple[str, int]] = field(init=False, default_factory=set)
    _created: set[str] = field(init=False, repr=False, default_factory=set)  # folders made

    def __post_init__(self) -> None:
        self._fs, self._root = open_store(self.store)
        self._load_keys()

    # --- paths --------------------------------------------------------------------------
    def _partition(self, table: str) -> str:
        return _partition(self._root, table, self.sweep)

    def image_path(self, trial_id: str, column: str) -> str:
        """Path of an image relative to the store root (what the trial row records)."""
        return f"{col.IMAGES_DIR}/{self.sweep}/{trial_id}/{column.removeprefix('image_')}.png"

    # --- reading what is there --------------------------------------------------------------
    def _load_keys(self) -> None:
        self.trials_written = _trial_ids(self._fs, self._partition(col.TRIALS_TABLE))
        self.epochs_written = _epoch_keys(self._fs, self._partition(col.EPOCHS_TABLE))

    def _write(self, path: str, data: bytes) -> None:
        write_bytes(self._fs, path, data, self._created)

    def write_status(self, status: dict[str, Any]) -> None:
        """The sweep's status file, for `rlv status` (and a heartbeat of the driver)."""
        self._write(f"{self._root}/{STATUS_DIR}/{self.sweep}.json",
                    json.dumps(status, indent=1).encode())

    # --- writing ---------------------------------------------------------------------------
    def _write_table(self, path: str, table: pa.Table) -> None:
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        self._write(path, buffer.getvalue())

    def write_epochs(self, rows: Iterable[dict[str, Any]]) -> int:
        """Write the epoch rows not in the store yet (one file per contiguous run of a trial's
        epochs, so that the file name lists its keys); returns how many."""
        fresh: dict[tuple[str, int], dict[str, Any]] = {}
        for r in rows:
            key = (r[col.TRIAL_ID], r[col.EPOCH])
            if key not in self.epochs_written:
                fresh.setdefault(key, r)  # the first report of an epoch is the one kept
        runs: list[list[dict[str, Any]]] = []
        for (trial_id, epoch), r in sorted(fresh.items(), key=lambda item: item[0]):
            last = runs[-1][-1] if runs else None
            if last is not None and last[col.TRIAL_ID] == trial_id and last[col.EPOCH] == epoch - 1:
                runs[-1].append(r)
            else:
                runs.append([r])
        for run in runs:
            trial_id, first, last_epoch = run[0][col.TRIAL_ID], run[0][col.EPOCH], run[-1][col.EPOCH]
            path = (f"{self._partition(col.EPOCHS_TABLE)}/"
                    f"{trial_id}-e{first:05d}-{last_epoch:05d}{_PARQUET}")
            self._write_table(path, _table(run, EPOCH_SCHEMA))
            self.epochs_written.update((trial_id, r[col.EPOCH]) for r in run)
        return len(fresh)

    def write_trial(self, row: dict[str, Any], images: dict[str, bytes]) -> bool:
        """Write a finished trial's images and row (once); False if it was already there."""
        trial_id = row[col.TRIAL_ID]
        if trial_id in self.trials_written:
            return False
        row = dict(row)
        for column, png in images.items():
            relative = self.image_path(trial_id, column)
            self._write(f"{self._root}/{relative}", png)
            row[column] = relative
        self._write_table(f"{self._partition(col.TRIALS_TABLE)}/{trial_id}{_PARQUET}",
                          _table([row], TRIAL_SCHEMA))
        self.trials_written.add(trial_id)
        return True


def _partition(root: str, table: str, sweep: str) -> str:
    return f"{root}/{table}/{col.SWEEP}={sweep}"


def finished_trials(store: str, sweep: str) -> set[str]:
    """Ids of the trials of `sweep` that have a row in the store (one listing of its partition)."""
    fs, root = open_store(store)
    return _trial_ids(fs, _partition(root, col.TRIALS_TABLE, sweep))


def _data_files(fs: pafs.FileSystem, directory: str) -> list[pafs.FileInfo]:
    """The Parquet files in `directory` (one listing; none if it does not exist yet). A file
    too short to be Parquet is refused here: its name would vouch for rows it does not hold."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    except OSError as exc:
        raise RlvError(f"cannot read the store at {directory}: {_first_line(exc)}") from None
    files = [f for f in infos
             if f.type == pafs.FileType.File and f.base_name.endswith(_PARQUET)
             and not f.base_name.startswith((".", "_"))]
    for f in files:
        if f.size is not None and f.size < _PARQUET_MIN_BYTES:
            raise RlvError(f"corrupt store file {f.path} ({f.size} bytes, too short for "
                           "Parquet); move it away and run again: its rows will be rewritten")
    return files


def _trial_ids(fs: pafs.FileSystem, directory: str) -> set[str]:
    """The trial ids of the trial files in a partition, from their names."""
    return {f.base_name.removesuffix(_PARQUET) for f in _data_files(fs, directory)}


def _epoch_keys(fs: pafs.FileSystem, directory: str) -> set[tuple[str, int]]:
    """The (trial id, epoch) keys of the epoch files in a partition, from their names."""
    keys: set[tuple[str, int]] = set()
    for f in _data_files(fs, directory):
        match = _EPOCH_FILE.match(f.base_name)
        if match is None:
            log.warning("ignoring %s: not an rlv epoch file name (TRIAL-eFIRST-LAST.parquet)",
                        f.path)
            continue
        trial_id, first, last = match["trial"], int(match["first"]), int(match["last"])
        keys.update((trial_id, epoch) for epoch in range(first, last + 1))
    return keys


def read_status(store: str, sweep: str) -> dict[str, Any]:
    """The status file of `sweep`, or {} when there is none."""
    fs, root = open_store(store)
    path = f"{root}/{STATUS_DIR}/{sweep}.json"
    status = read_json(fs, path)
    if status is None:
        return {}
    if not isinstance(status, dict):
        raise RlvError(f"corrupt status file {path} (not a JSON object); remove it")
    return status
