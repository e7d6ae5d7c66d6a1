"""Read a results store (a folder or a pyarrow/fsspec URI) into two pandas DataFrames.

The store's layout is a public contract (README, "The store, in Jupyter"; rlv/store/files.py):
`{store}/trials/sweep=NAME/*.parquet` and `{store}/epochs/sweep=NAME/*.parquet`, Hive-partitioned,
with temporary files named `_*` or `.*` that readers must skip. Each table is read as one
`pyarrow.dataset` (one listing, Hive partitioning on `sweep`, `_*` and `.*` skipped as pyarrow
skips them), made of only the files named `*.parquet` (anything else under a table, a stray CSV or
PNG, is skipped and logged, never parsed as Parquet). Its schema is not the first file's: it is
unified from every file's own schema, so that files written by different rlv versions (a setting
column more, an all-null `fid`) are merged rather than cut; and since each file's footer is read
for that, a corrupt file is named in the error (the scan then reuses the footers read).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from urllib.parse import unquote

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from rlv import columns as col
from rlv.analysis.gaps import with_gaps
from rlv.config import TrialConfig
from rlv.errors import RlvError
from rlv.store.files import PARQUET, first_line  # pyarrow only: no torch, no Ray
from rlv.store.identity import result_settings
from rlv.store.store import Store

logger = logging.getLogger(__name__)

# Factors that become ordered Categoricals (seed stays an integer: it is a repetition, not a level).
CATEGORICAL_FACTORS: tuple[str, ...] = tuple(col.LEVEL_ORDER)

# `sweep=NAME` folders; pyarrow URL-decodes NAME, as it encoded it when writing.
_HIVE = ds.partitioning(pa.schema([(col.SWEEP, pa.string())]), flavor="hive")
_PARQUET_FORMAT = ds.ParquetFileFormat()


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no truth value to compare
class Results:
    """One store (or one sweep of it) in memory: `trials` (one row per trial) and `epochs`."""

    store: str
    trials: pd.DataFrame
    epochs: pd.DataFrame
    # The opened store, reused by `image`: on s3 opening one is not free.
    opened: Store | None = field(default=None, repr=False)

    @property
    def sweeps(self) -> tuple[str, ...]:
        """The sweeps whose trials were loaded, sorted."""
        if self.trials.empty:
            return ()
        return tuple(sorted(self.trials[col.SWEEP].astype(str).unique()))

    def image(self, relpath: str) -> bytes:
        """The bytes of an image file named relative to the store root, as image columns are."""
        opened = self.opened
        if opened is None:  # a Results built by hand: open the store once
            opened = Store.open(self.store)
            object.__setattr__(self, "opened", opened)
        return _read_file(opened, relpath)


def _opened(store: str | os.PathLike[str] | Store) -> Store:
    return store if isinstance(store, Store) else Store.open(store)


def _shown(store: str | os.PathLike[str] | Store) -> str:
    """The store as the caller named it, for messages."""
    return store.location if isinstance(store, Store) else os.fspath(store)


def list_sweeps(store: str | os.PathLike[str] | Store) -> tuple[str, ...]:
    """The sweep names of a store's trials table (its `sweep=NAME` folders), sorted."""
    opened = _opened(store)
    return _list_sweeps(opened.fs, opened.path(col.TRIALS_TABLE))


def _list_sweeps(fs: pafs.FileSystem, table_root: str) -> tuple[str, ...]:
    infos = fs.get_file_info(pafs.FileSelector(table_root, allow_not_found=True))
    names = []
    for info in infos:
        base = info.base_name
        if info.type == pafs.FileType.Directory and base.startswith(f"{col.SWEEP}="):
            names.append(unquote(base.split("=", 1)[1]))
    return tuple(sorted(names))


def _fragments(fs: pafs.FileSystem, table_root: str, sweep: str | None) -> list[ds.Fragment]:
    """The visible Parquet files under `table_root` (one sweep or all), sorted by path, each
    knowing its sweep from its folder."""
    try:
        # a schema given: nothing is opened here (pyarrow would read the first file's footer)
        listed = ds.FileSystemDatasetFactory(
            fs, pafs.FileSelector(table_root, recursive=True, allow_not_found=True),
            _PARQUET_FORMAT, ds.FileSystemFactoryOptions(partitioning=_HIVE),
        ).finish(_HIVE.schema)
    except (pa.ArrowException, OSError) as exc:
        raise RlvError(f"cannot list {table_root}: {first_line(exc)}") from None
    fragments = []
    for fragment in sorted(listed.get_fragments(), key=lambda f: f.path):
        if not fragment.path.endswith(PARQUET):
            logger.warning("ignoring %s: not a Parquet file (*%s)", fragment.path, PARQUET)
            continue
        # a file outside any sweep=NAME folder has no sweep: it is read only with all sweeps
        if sweep is None or ds.get_partition_keys(fragment.partition_expression).get(
                col.SWEEP) == sweep:
            fragments.append(fragment)
    return fragments


def _schema(fragments: list[ds.Fragment], table_root: str) -> pa.Schema:
    """One schema for all the files: each file's own columns (a dictionary column as its
    values' type), `sweep`, types widened where files differ (int64 and double, null and
    double). Reading each footer here names a corrupt file."""
    schemas = []
    for fragment in fragments:
        try:
            physical = fragment.physical_schema
        except (pa.ArrowException, OSError) as exc:
            raise RlvError(f"corrupt parquet file {fragment.path}: {first_line(exc)}") from None
        fields = [pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
                  for f in physical]
        if col.SWEEP not in physical.names:  # the partition's column, after the file's
            fields.append(_HIVE.schema.field(col.SWEEP))
        schemas.append(pa.schema(fields))
    try:
        unified = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        raise RlvError(f"the files of {table_root} disagree on a column's type: "
                       f"{first_line(exc)}") from None
    return unified.remove_metadata()  # one file's pandas metadata would describe only that file


def _read_table(fs: pafs.FileSystem, table_root: str, sweep: str | None) -> pd.DataFrame | None:
    """All visible Parquet files under `table_root` (one sweep or all) as one DataFrame, or None."""
    fragments = _fragments(fs, table_root, sweep)
    if not fragments:
        return None
    schema = _schema(fragments, table_root)
    # A file's `sweep` column, where it has one, gives way to its folder's (as pandas reads it).
    dataset = ds.FileSystemDataset(fragments, schema, _PARQUET_FORMAT, fs)
    try:
        table = dataset.to_table()
    except (pa.ArrowException, OSError) as exc:
        raise RlvError(_unreadable(fragments, schema, table_root, exc)) from None
    return table.to_pandas()


def _unreadable(fragments: list[ds.Fragment], schema: pa.Schema, table_root: str,
                exc: BaseException) -> str:
    """The message for a scan that failed past the footers (a torn data page): the file, found
    by reading them one by one, else the table."""
    for fragment in fragments:
        try:
            fragment.to_table(schema=schema)
        except (pa.ArrowException, OSError) as one:
            return f"corrupt parquet file {fragment.path}: {first_line(one)}"
    return f"cannot read {table_root}: {first_line(exc)}"


def _ordered_levels(values: pd.Series, factor: str) -> list[str]:
    """The levels present, in the thesis's order; unknown levels last, alphabetically."""
    present = set(values.dropna().astype(str).unique())  # not set(series): row by row
    known = [lvl for lvl in col.LEVEL_ORDER.get(factor, ()) if lvl in present]
    return known + sorted(present - set(known))


def categorize(frame: pd.DataFrame) -> pd.DataFrame:
    """Factors as ordered Categoricals (only the levels present); seed as int; sweep as str."""
    out = frame.copy()
    if col.SWEEP in out:
        out[col.SWEEP] = out[col.SWEEP].astype(str)
    for factor in CATEGORICAL_FACTORS:
        if factor in out:
            levels = _ordered_levels(out[factor], factor)
            as_text = out[factor].astype("string").astype(object)
            out[factor] = pd.Categorical(as_text, categories=levels, ordered=True)
    if col.SEED in out and out[col.SEED].notna().all():
        out[col.SEED] = out[col.SEED].astype("int64")
    return out


def _dedupe(frame: pd.DataFrame, keys: list[str], what: str) -> pd.DataFrame:
    # The writer promises each key once; an interrupted copy or a manual merge could break that.
    present = [k for k in keys if k in frame]
    if len(present) < len(keys):
        return frame
    dup = frame.duplicated(present, keep="last")
    if dup.any():
        logger.warning("%s: dropped %d duplicate rows of %s", what, int(dup.sum()), present)
        frame = frame.loc[~dup].reset_index(drop=True)
    return frame


def _setting_factors(trials: pd.DataFrame) -> list[str]:
    """Columns of settings made factors (`latent_dim`, `lr`, ...) that some trial lists."""
    if col.SWEEP_FACTORS not in trials:
        return []
    names = {n.strip() for text in trials[col.SWEEP_FACTORS].dropna().astype(str).unique()
             for n in text.split(",")}
    return sorted(n for n in names if n and n not in col.FACTORS and n not in (col.SEED, ""))


def _fill_setting_levels(trials: pd.DataFrame) -> pd.DataFrame:
    """A setting made a factor after some trials ran (a grown sweep: `model.latent_dim: [16, 32]`
    after runs at the default 16) has no column in those trials' rows, which are never
    rewritten: their level is the value they ran with, read from their `config` (data-set
    defaults resolved, as the launch matched them)."""
    factors = [f for f in _setting_factors(trials) if f in trials and trials[f].isna().any()]
    if not factors or col.CONFIG not in trials:
        return trials
    out = trials.copy()
    for index in out.index[out[factors].isna().any(axis=1)]:
        text = out.at[index, col.CONFIG]
        try:
            flat = result_settings(TrialConfig.from_dict(json.loads(str(text))))
        except (ValueError, TypeError, RlvError):  # a row without a usable config keeps its gap
            continue
        by_field = {path.rpartition(".")[2]: value for path, value in flat.items()}
        for factor in factors:
            if pd.isna(out.at[index, factor]) and by_field.get(factor) is not None:
                out.at[index, factor] = by_field[factor]
    for factor in factors:  # an integer setting read back as float because of the gaps
        values = out[factor]
        if values.notna().all() and pd.api.types.is_float_dtype(values) and \
                (values == values.round()).all():
            out[factor] = values.astype("int64")
    return out


def _attach_factors(epochs: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Copy factor columns that the epochs table lacks from the trials table (older stores)."""
    keys = [col.SWEEP, col.TRIAL_ID]
    if epochs.empty:
        return epochs
    # the trials' setting levels win: an epoch row written before the setting was a factor
    # has none (see _fill_setting_levels)
    settings = [f for f in _setting_factors(trials) if f in trials]
    epochs = epochs.drop(columns=[f for f in settings if f in epochs])
    missing = [f for f in col.FACTORS if f not in epochs and f in trials] + settings
    if not missing:
        return epochs
    return epochs.merge(trials[keys + missing], on=keys, how="left")


def load_store(store: str | os.PathLike[str] | Store, sweep: str | None = None) -> Results:
    """Load the trials and epochs tables of a store (a folder, a URI or an opened Store), all
    sweeps or one.

    Factor columns come back as ordered Categoricals (thesis order, only the levels present),
    `sweep` as str, and the overfitting gaps derived from the train and test columns
    (rlv/analysis/gaps.py: positive = the test set is worse, whatever sign the store holds).
    Raises RlvError for a missing store, a store without trials, an unknown
    sweep (naming those that exist) or a corrupt Parquet file (naming it).
    """
    opened, shown = _opened(store), _shown(store)
    fs = opened.fs
    if not opened.exists():
        raise RlvError(f"store not found: {shown}")
    trials_root = opened.path(col.TRIALS_TABLE)
    if fs.get_file_info(trials_root).type != pafs.FileType.Directory:
        raise RlvError(
            f"no trials table in store {shown}: expected {trials_root}/sweep=NAME/*.parquet"
        )
    known = _list_sweeps(fs, trials_root)
    if sweep is not None and sweep not in known:
        raise RlvError(
            f"unknown sweep {sweep!r} in store {shown}: "
            f"sweeps are {', '.join(known) if known else '(none)'}"
        )
    trials = _read_table(fs, trials_root, sweep)
    if trials is None or trials.empty:
        where = f"sweep {sweep!r} of store" if sweep else "store"
        raise RlvError(f"no finished trials in {where} {shown}")
    trials = _dedupe(with_gaps(categorize(_fill_setting_levels(trials))), [col.SWEEP, col.TRIAL_ID],
                     "trials")

    epochs = _read_table(fs, opened.path(col.EPOCHS_TABLE), sweep)
    if epochs is None:
        logger.info("store %s has no epochs rows; learning curves will be empty", opened.root)
        epochs = pd.DataFrame(columns=[col.SWEEP, col.TRIAL_ID, col.EPOCH, *col.EPOCH_METRICS])
    else:
        epochs = _attach_factors(categorize(epochs), trials)
        epochs = _dedupe(epochs, [col.SWEEP, col.TRIAL_ID, col.EPOCH], "epochs")
        epochs = epochs.sort_values([col.SWEEP, col.TRIAL_ID, col.EPOCH], ignore_index=True)
    logger.info("loaded %d trials and %d epoch rows from %s", len(trials), len(epochs),
                opened.root)
    return Results(store=shown, trials=trials, epochs=epochs, opened=opened)


def require_one_sweep_per_dataset(results: Results) -> None:
    """Refuse to pool sweeps that ran the same data set: their settings (epochs, objective, FID
    size) may differ, and their cells would be mixed as if they were more seeds of one experiment.
    Sweeps of different data sets are fine: every table and model is fitted per data set."""
    trials = results.trials
    if col.DATASET not in trials or trials.empty:
        return
    pairs = trials[[col.DATASET, col.SWEEP]].astype(str).drop_duplicates()
    for dataset, group in pairs.groupby(col.DATASET):
        if len(group) > 1:
            names = ", ".join(sorted(group[col.SWEEP]))
            raise RlvError(
                f"store {results.store} holds several {dataset} sweeps ({names}): "
                f"name one with --sweep (in Python: sweep=...)"
            )


def read_image(store: str | os.PathLike[str] | Store, relpath: str) -> bytes:
    """The bytes of a file named relative to the store root (image columns hold such paths)."""
    return _read_file(_opened(store), relpath)


def _read_file(store: Store, relpath: str) -> bytes:
    path = store.path(relpath.lstrip("/"))
    try:
        with store.fs.open_input_stream(path) as stream:
            return bytes(stream.read())
    except (FileNotFoundError, OSError, pa.ArrowException) as exc:
        raise RlvError(f"cannot read image {path}: {exc}") from exc


def trials_of(data: Results | pd.DataFrame) -> pd.DataFrame:
    """The trials DataFrame of a Results, or the DataFrame itself with its gaps derived
    (`gaps.with_gaps`; load_store has done so already). The analysis takes either."""
    return data.trials if isinstance(data, Results) else with_gaps(data)
