"""The store's one writer for a sweep: typed Parquet tables, each row written exactly once.

See rlv/store/files.py for the layout. Plain Python: the driver's store sink
(rlv/service/store_sink.py) drives it, queueing rows that it flushes as one batch file per table
on the driver's heartbeat.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rlv import columns as col
from rlv.store.files import STATUS_DIR, batch_file_name, epoch_keys, trial_ids
from rlv.store.store import Store

# Column types, so that every file of a table has the same schema (pyarrow merges by it).
_STRING, _INT, _FLOAT = pa.string(), pa.int64(), pa.float64()
_TIME = pa.timestamp("us", tz="UTC")
TRIAL_SCHEMA = pa.schema([
    (col.TRIAL_ID, _STRING), (col.DATASET, _STRING), (col.ENCODER, _STRING),
    (col.LAYER, _STRING), (col.PRIOR, _STRING), (col.OBJECTIVE, _STRING), (col.SEED, _INT),
    (col.SWEEP_FACTORS, _STRING), (col.EPOCHS, _INT), (col.LATENT_DIM, _INT),
    (col.TRAIN_SIZE, _INT), (col.TEST_SIZE, _INT),
    (col.TEST_NEG_ELBO, _FLOAT), (col.TEST_RE, _FLOAT), (col.TEST_RT, _FLOAT),
    (col.TEST_RT_ELBO, _FLOAT), (col.FLOW_LOGDET, _FLOAT),
    (col.TRAIN_NEG_ELBO, _FLOAT), (col.TRAIN_RE, _FLOAT), (col.TRAIN_RT, _FLOAT),
    (col.GAP_NEG_ELBO, _FLOAT), (col.GAP_RE, _FLOAT), (col.GAP_RT, _FLOAT),
    (col.FID, _FLOAT), (col.FID_SAMPLES, _INT), (col.EPOCH_TIME_S, _FLOAT),
    (col.TRAINABLE_PARAMS, _INT), (col.FROZEN_PARAMS, _INT), (col.DEVICE, _STRING),
    (col.NODE_ID, _STRING), (col.HOSTNAME, _STRING), (col.GPU_SHARE, _FLOAT),
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
    (col.NODE_ID, _STRING), (col.HOSTNAME, _STRING),
    (col.TEST_NEG_ELBO, _FLOAT), (col.TEST_RE, _FLOAT), (col.TEST_RT, _FLOAT),  # eval.test_every
])  # fmt: skip



def _to_arrow_value(name: str, value: Any) -> Any:
    if name in (col.STARTED_AT, col.FINISHED_AT) and isinstance(value, str):
        return datetime.fromisoformat(value)
    return value


# Extra columns (settings a sweep made factors, rlv/trial/run.py factor_values) are typed by their
# Python values, which TrialConfig's checks keep to one type per setting.
_EXTRA_TYPES: dict[type, pa.DataType] = {bool: pa.bool_(), int: _INT, float: _FLOAT, str: _STRING}


def _extra_type(values: list[Any]) -> pa.DataType | None:
    kinds = {type(v) for v in values if v is not None}
    return _EXTRA_TYPES.get(kinds.pop()) if len(kinds) == 1 else None  # None: pyarrow infers


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows -> table with `schema`'s columns first (typed), then any extra columns as given."""
    extra = sorted({k for r in rows for k in r} - set(schema.names))
    columns = {name: [_to_arrow_value(name, r.get(name)) for r in rows] for name in schema.names}
    table = pa.Table.from_pydict(columns, schema=schema)
    for name in extra:
        values = [r.get(name) for r in rows]
        table = table.append_column(name, pa.array(values, type=_extra_type(values)))
    return table



@dataclass
class StoreWriter:
    """The one writer of a store for one sweep."""

    store: Store
    sweep: str
    trials_written: set[str] = field(init=False, default_factory=set)
    epochs_written: set[tuple[str, int]] = field(init=False, default_factory=set)
    _created: set[str] = field(init=False, repr=False, default_factory=set)  # folders made
    _queued_trials: list[dict[str, Any]] = field(init=False, repr=False, default_factory=list)
    _queued_trial_ids: set[str] = field(init=False, repr=False, default_factory=set)
    _queued_epochs: list[dict[str, Any]] = field(init=False, repr=False, default_factory=list)
    _queued_epoch_keys: set[tuple[str, int]] = field(init=False, repr=False, default_factory=set)

    def __post_init__(self) -> None:
        self._load_keys()

    # --- paths --------------------------------------------------------------------------
    def _partition(self, table: str) -> str:
        return self.store.partition(table, self.sweep)

    def image_path(self, trial_id: str, column: str) -> str:
        """Path of an image relative to the store root (what the trial row records)."""
        return f"{col.IMAGES_DIR}/{self.sweep}/{trial_id}/{column.removeprefix('image_')}.png"

    # --- reading what is there --------------------------------------------------------------
    def _load_keys(self) -> None:
        self.trials_written = trial_ids(self.store.fs, self._partition(col.TRIALS_TABLE))
        self.epochs_written = epoch_keys(self.store.fs, self._partition(col.EPOCHS_TABLE))

    def _write(self, path: str, data: bytes) -> None:
        self.store.write_bytes(path, data, self._created)

    def write_status(self, status: dict[str, Any]) -> None:
        """The sweep's status file, for `rlv status` (and a heartbeat of the driver)."""
        self._write(self.store.path(STATUS_DIR, f"{self.sweep}.json"),
                    json.dumps(status, indent=1).encode())

    # --- writing ---------------------------------------------------------------------------
    def _write_table(self, path: str, table: pa.Table) -> None:
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        self._write(path, buffer.getvalue())

    # --- batches: what a sweep driver writes ------------------------------------------------
    def queue_epochs(self, rows: Iterable[dict[str, Any]]) -> int:
        """Queue the epoch rows not in the store (nor queued) yet, for the next flush."""
        fresh = 0
        for r in rows:
            key = (r[col.TRIAL_ID], r[col.EPOCH])
            if key not in self.epochs_written and key not in self._queued_epoch_keys:
                self._queued_epoch_keys.add(key)
                self._queued_epochs.append(r)
                fresh += 1
        return fresh

    def queue_trial(self, row: dict[str, Any], images: dict[str, bytes]) -> bool:
        """Write a finished trial's images now and queue its row (once) for the next flush."""
        trial_id = row[col.TRIAL_ID]
        if trial_id in self.trials_written or trial_id in self._queued_trial_ids:
            return False
        self._queued_trials.append(self._with_images(row, images))
        self._queued_trial_ids.add(trial_id)
        return True

    @property
    def queued(self) -> int:
        return len(self._queued_trials) + len(self._queued_epochs)

    def flush(self) -> list[str]:
        """Write the queued rows, one batch file per table (the epochs first: a trial's row
        never stands in the store without its epochs); returns the ids of the trials written."""
        partition_of = self._partition
        if self._queued_epochs:
            self._write_table(f"{partition_of(col.EPOCHS_TABLE)}/{batch_file_name()}",
                              _table(self._queued_epochs, EPOCH_SCHEMA))
            self.epochs_written |= self._queued_epoch_keys
        written = [r[col.TRIAL_ID] for r in self._queued_trials]
        if self._queued_trials:
            self._write_table(f"{partition_of(col.TRIALS_TABLE)}/{batch_file_name()}",
                              _table(self._queued_trials, TRIAL_SCHEMA))
            self.trials_written.update(written)
        self._queued_epochs, self._queued_epoch_keys = [], set()
        self._queued_trials, self._queued_trial_ids = [], set()
        return written

    def _with_images(self, row: dict[str, Any], images: dict[str, bytes]) -> dict[str, Any]:
        row = dict(row)
        for column, png in images.items():
            relative = self.image_path(row[col.TRIAL_ID], column)
            self._write(self.store.path(relative), png)
            row[column] = relative
        return row
