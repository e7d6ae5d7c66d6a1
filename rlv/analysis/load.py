"""Read a results store (a folder or a pyarrow/fsspec URI) into two pandas DataFrames.

The store's layout is a public contract (README, "The store, in Jupyter"; rlv/store.py):
`{store}/trials/sweep=NAME/*.parquet` and `{store}/epochs/sweep=NAME/*.parquet`, Hive-partitioned,
with temporary files named `_*` or `.*` that readers must skip. Only files named `*.parquet` are
read (anything else under a table, a stray CSV or PNG, is skipped and logged, never parsed as
Parquet). We read file by file rather than
through one `pyarrow.dataset` so that a corrupt file can be named in the error, and so that files
written by different rlv versions (more columns, say) are merged instead of cut to the first
file's schema.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from urllib.parse import unquote

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rlv import columns as col
from rlv.analysis.gaps import with_gaps
from rlv.config import TrialConfig
from rlv.errors import RlvError
from rlv.store.files import PARQUET, open_store  # pyarrow only: no torch, no Ray
from rlv.store.identity import result_settings

logger = logging.getLogger(__name__)

# Factors that become ordered Categoricals (seed stays an integer: it is a repetition, not a level).
CATEGORICAL_FACTORS: tuple[str, ...] = tuple(col.LEVEL_ORDER)


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames have no truth value to compare
class Results:
    """One store (or one sweep of it) in memory: `trials` (one row per trial) and `epochs`."""

    store: str
    trials: pd.DataFrame
    epochs: pd.DataFrame
    # The opened store (filesystem, root), reused by `image`: on s3 opening one is not free.
    _location: tuple[pafs.FileSystem, str] | None = field(default=None, repr=False)

    @property
    def sweeps(self) -> tuple[str, ...]:
        """The sweeps whose trials were loaded, sorted."""
        if self.trials.empty:
            return ()
        return tuple(sorted(self.trials[col.SWEEP].astype(str).unique()))

    def image(self, relpath: str) -> bytes:
        """The bytes of an image file named relative to the store root, as image columns are."""
        location = self._location
        if location is None:  # a Results built by hand: open the store once
            location = open_store(self.store)
            object.__setattr__(self, "_location", location)
        return _read_file(*location, relpath)


def _is_hidden(part: str) -> bool:
    # The writer stages files as `_tmp...` or `.name.tmp` before an atomic rename.
    return part.startswith(("_", "."))


def _partition_values(relpath: str) -> dict[str, str]:
    """`sweep=quick/part-0.parquet` -> {"sweep": "quick"} (values are URL-encoded by pyarrow)."""
    values: dict[str, str] = {}
    for part in relpath.split("/")[:-1]:
        if "=" in part:
            key, value = part.split("=", 1)
            values[key] = unquote(value)
    return values


def list_sweeps(store: str | os.PathLike[str]) -> tuple[str, ...]:
    """The sweep names of a store's trials table (its `sweep=NAME` folders), sorted."""
    fs, root = open_store(store)
    return _list_sweeps(fs, f"{root}/{col.TRIALS_TABLE}")


def _list_sweeps(fs: pafs.FileSystem, table_root: str) -> tuple[str, ...]:
    infos = fs.get_file_info(pafs.FileSelector(table_root, allow_not_found=True))
    names = []
    for info in infos:
        base = info.base_name
        if info.type == pafs.FileType.Directory and base.startswith(f"{col.SWEEP}="):
            names.append(unquote(base.split("=", 1)[1]))
    return tuple(sorted(names))


def _read_table(fs: pafs.FileSystem, table_root: str, sweep: str | None) -> pd.DataFrame | None:
    """All visible Parquet files under `table_root` (one sweep or all) as one DataFrame, or None."""
    infos = fs.get_file_info(pafs.FileSelector(table_root, recursive=True, allow_not_found=True))
    tables: list[pa.Table] = []
    for info in sorted(infos, key=lambda i: i.path):
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(table_root) :].lstrip("/")
        if any(_is_hidden(part) for part in rel.split("/")):
            continue
        if not rel.endswith(PARQUET):
            logger.warning("ignoring %s: not a Parquet file (*%s)", info.path, PARQUET)
            continue
        partitions = _partition_values(rel)
        # Compare decoded names: pyarrow URL-encodes partition values in folder names.
        if sweep is not None and partitions.get(col.SWEEP) != sweep:
            continue
        try:
            table = pq.read_table(info.path, filesystem=fs)
        except (pa.ArrowException, OSError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RlvError(f"corrupt parquet file {info.path}: {reason}") from exc
        for key, value in partitions.items():
            if key not in table.column_names:  # the partition is the truth, but never clobber data
                table = table.append_column(key, pa.array([value] * table.num_rows, pa.string()))
        tables.append(table)
    if not tables:
        return None
    # "permissive" merges files written with different schemas (an added column, an all-null fid).
    merged = pa.concat_tables(tables, promote_options="permissive")
    return merged.to_pandas()


def _ordered_levels(values: pd.Series, factor: str) -> list[str]:
    """The levels present, in the thesis's order; unknown levels last, alphabetically."""
    present = set(values.dropna().astype(str))
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


def load_store(store: str | os.PathLike[str], sweep: str | None = None) -> Results:
    """Load the trials and epochs tables of a store, all sweeps or one.

    Factor columns come back as ordered Categoricals (thesis order, only the levels present),
    `sweep` as str, and the overfitting gaps derived from the train and test columns
    (rlv/analysis/gaps.py: positive = the test set is worse, whatever sign the store holds).
    Raises RlvError for a missing store, a store without trials, an unknown
    sweep (naming those that exist) or a corrupt Parquet file (naming it).
    """
    fs, root = open_store(store)
    if fs.get_file_info(root).type == pafs.FileType.NotFound:
        raise RlvError(f"store not found: {os.fspath(store)}")
    trials_root = f"{root}/{col.TRIALS_TABLE}"
    if fs.get_file_info(trials_root).type != pafs.FileType.Directory:
        raise RlvError(
            f"no trials table in store {os.fspath(store)}: "
            f"expected {trials_root}/sweep=NAME/*.parquet"
        )
    known = _list_sweeps(fs, trials_root)
    if sweep is not None and sweep not in known:
        raise RlvError(
            f"unknown sweep {sweep!r} in store {os.fspath(store)}: "
            f"sweeps are {', '.join(known) if known else '(none)'}"
        )
    trials = _read_table(fs, trials_root, sweep)
    if trials is None or trials.empty:
        where = f"sweep {sweep!r} of store" if sweep else "store"
        raise RlvError(f"no finished trials in {where} {os.fspath(store)}")
    trials = _dedupe(with_gaps(categorize(_fill_setting_levels(trials))), [col.SWEEP, col.TRIAL_ID],
                     "trials")

    epochs = _read_table(fs, f"{root}/{col.EPOCHS_TABLE}", sweep)
    if epochs is None:
        logger.info("store %s has no epochs rows; learning curves will be empty", root)
        epochs = pd.DataFrame(columns=[col.SWEEP, col.TRIAL_ID, col.EPOCH, *col.EPOCH_METRICS])
    else:
        epochs = _attach_factors(categorize(epochs), trials)
        epochs = _dedupe(epochs, [col.SWEEP, col.TRIAL_ID, col.EPOCH], "epochs")
        epochs = epochs.sort_values([col.SWEEP, col.TRIAL_ID, col.EPOCH], ignore_index=True)
    logger.info("loaded %d trials and %d epoch rows from %s", len(trials), len(epochs), root)
    return Results(store=os.fspath(store), trials=trials, epochs=epochs, _location=(fs, root))


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


def read_image(store: str | os.PathLike[str], relpath: str) -> bytes:
    """The bytes of a file named relative to the store root (image columns hold such paths)."""
    return _read_file(*open_store(store), relpath)


def _read_file(fs: pafs.FileSystem, root: str, relpath: str) -> bytes:
    path = f"{root}/{relpath.lstrip('/')}"
    try:
        with fs.open_input_stream(path) as stream:
            return bytes(stream.read())
    except (FileNotFoundError, OSError, pa.ArrowException) as exc:
        raise RlvError(f"cannot read image {path}: {exc}") from exc


def trials_of(data: Results | pd.DataFrame) -> pd.DataFrame:
    """The trials DataFrame of a Results, or the DataFrame itself with its gaps derived
    (`gaps.with_gaps`; load_store has done so already). The analysis takes either."""
    return data.trials if isinstance(data, Results) else with_gaps(data)
