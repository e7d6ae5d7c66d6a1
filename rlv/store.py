"""The results store: Hive-partitioned Parquet that pandas reads directly (SPEC.md's contract).

    STORE/trials/sweep=NAME/TRIAL_ID.parquet             one row per finished trial
    STORE/epochs/sweep=NAME/TRIAL_ID-eFIRST-LAST.parquet  the epoch rows of one commit
    STORE/images/NAME/TRIAL_ID/{reconstructions,samples,interpolations}.png

STORE is a local folder or a URI that pyarrow opens (s3://, gs://, file://). Only the driver
writes, through one StoreWriter. Exactly once: a trial row's file is named by the trial, so a
rewrite replaces it; an epoch row is written only if its (trial, epoch) key is not in the store
yet (the writer loads the keys when it opens a sweep). Files appear atomically on local disks
(written under a `.`-name that readers skip, then renamed) and on object stores (one PUT).
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rlv import columns as col
from rlv.errors import RlvError

log = logging.getLogger(__name__)

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


def open_store(store: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, root path) of a folder or URI; local folders are made absolute."""
    if "://" in store:
        try:
            fs, root = pafs.FileSystem.from_uri(store)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise RlvError(f"cannot open store {store!r}: {exc}") from None
        return fs, root.rstrip("/")
    from pathlib import Path

    return pafs.LocalFileSystem(), str(Path(store).expanduser().resolve())


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

    def __post_init__(self) -> None:
        self._fs, self._root = open_store(self.store)
        self._load_keys()

    # --- paths --------------------------------------------------------------------------
    def _partition(self, table: str) -> str:
        return f"{self._root}/{table}/{col.SWEEP}={self.sweep}"

    def image_path(self, trial_id: str, column: str) -> str:
        """Path of an image relative to the store root (what the trial row records)."""
        return f"{col.IMAGES_DIR}/{self.sweep}/{trial_id}/{column.removeprefix('image_')}.png"

    # --- reading what is there --------------------------------------------------------------
    def _load_keys(self) -> None:
        self.trials_written = set(_read_column(self._fs, self._partition(col.TRIALS_TABLE),
                                               [col.TRIAL_ID]).get(col.TRIAL_ID, []))
        epochs = _read_column(self._fs, self._partition(col.EPOCHS_TABLE), [col.TRIAL_ID, col.EPOCH])
        self.epochs_written = set(zip(epochs.get(col.TRIAL_ID, []), epochs.get(col.EPOCH, []),
                                      strict=True))

    # --- writing ---------------------------------------------------------------------------
    def _write_file(self, path: str, data: bytes) -> None:
        directory, name = path.rsplit("/", 1)
        self._fs.create_dir(directory, recursive=True)
        if isinstance(self._fs, pafs.LocalFileSystem):
            tmp = f"{directory}/.{name}.{uuid.uuid4().hex}.tmp"
            with self._fs.open_output_stream(tmp) as f:
                f.write(data)
            self._fs.move(tmp, path)  # atomic rename: readers see all of it or nothing
        else:
            with self._fs.open_output_stream(path) as f:  # one PUT on object stores
                f.write(data)

    def _write_table(self, path: str, table: pa.Table) -> None:
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        self._write_file(path, buffer.getvalue())

    def write_epochs(self, rows: Iterable[dict[str, Any]]) -> int:
        """Write the epoch rows not in the store yet (one file per trial); returns how many."""
        fresh = [r for r in rows if (r[col.TRIAL_ID], r[col.EPOCH]) not in self.epochs_written]
        by_trial: dict[str, list[dict[str, Any]]] = {}
        for r in fresh:
            by_trial.setdefault(r[col.TRIAL_ID], []).append(r)
        for trial_id, trial_rows in by_trial.items():
            trial_rows.sort(key=lambda r: r[col.EPOCH])
            first, last = trial_rows[0][col.EPOCH], trial_rows[-1][col.EPOCH]
            path = f"{self._partition(col.EPOCHS_TABLE)}/{trial_id}-e{first:05d}-{last:05d}.parquet"
            self._write_table(path, _table(trial_rows, EPOCH_SCHEMA))
            self.epochs_written.update((trial_id, r[col.EPOCH]) for r in trial_rows)
        return len(fresh)

    def write_trial(self, row: dict[str, Any], images: dict[str, bytes]) -> bool:
        """Write a finished trial's images and row (once); False if it was already there."""
        trial_id = row[col.TRIAL_ID]
        if trial_id in self.trials_written:
            return False
        row = dict(row)
        for column, png in images.items():
            relative = self.image_path(trial_id, column)
            self._write_file(f"{self._root}/{relative}", png)
            row[column] = relative
        self._write_table(f"{self._partition(col.TRIALS_TABLE)}/{trial_id}.parquet",
                          _table([row], TRIAL_SCHEMA))
        self.trials_written.add(trial_id)
        return True


def _read_column(fs: pafs.FileSystem, directory: str, columns: list[str]) -> dict[str, list[Any]]:
    """Some columns of every Parquet file under `directory` ({} if there is none yet)."""
    info = fs.get_file_info(directory)
    if info.type == pafs.FileType.NotFound:
        return {}
    files = [f for f in fs.get_file_info(pafs.FileSelector(directory, recursive=True))
             if f.type == pafs.FileType.File and f.base_name.endswith(".parquet")
             and not f.base_name.startswith((".", "_"))]
    out: dict[str, list[Any]] = {c: [] for c in columns}
    for f in files:
        try:
            table = pq.read_table(f.path, filesystem=fs, columns=columns)
        except (pa.ArrowInvalid, OSError) as exc:
            raise RlvError(f"corrupt store file {f.path} ({str(exc).splitlines()[0]}); "
                           "move it away and run again: its rows will be rewritten") from None
        for c in columns:
            out[c].extend(table.column(c).to_pylist())
    return out


def read_table(store: str, table: str, sweep: str | None = None) -> pa.Table | None:
    """A whole table of the store (all sweeps, or one), or None when it has no rows."""
    fs, root = open_store(store)
    path = f"{root}/{table}"
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    dataset = ds.dataset(path, filesystem=fs, format="parquet", partitioning="hive")
    expression = ds.field(col.SWEEP) == sweep if sweep else None
    return dataset.to_table(filter=expression)


STATUS_DIR = "_status"  # STORE/_status/SWEEP.json: the driver's view of a sweep, for `rlv status`


def write_status(store: str, sweep: str, status: dict[str, Any]) -> None:
    fs, root = open_store(store)
    fs.create_dir(f"{root}/{STATUS_DIR}", recursive=True)
    with fs.open_output_stream(f"{root}/{STATUS_DIR}/{sweep}.json") as f:
        f.write(json.dumps(status, indent=1).encode())


def read_status(store: str, sweep: str) -> dict[str, Any]:
    """The status file of `sweep`, or {} when there is none (or it is unreadable)."""
    fs, root = open_store(store)
    path = f"{root}/{STATUS_DIR}/{sweep}.json"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return {}
    with fs.open_input_stream(path) as f:
        try:
            return json.loads(f.read().decode())  # type: ignore[no-any-return]
        except json.JSONDecodeError:
            return {}
