"""One sweep's rows, as the board polls them: each Parquet file of a partition is read once.

The store's data files never change once written (a batch file appears whole, under a new name,
every flush: rlv/store/files.py), so a poll costs one listing per table, and only the files that
appeared since are read; on S3 that is a LIST and a GET per new file, not a read of the whole
table every few seconds. A file is known by its name and size: one replaced by hand is read anew.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rlv.errors import RlvError
from rlv.store.files import PARQUET, first_line

FileKey = tuple[str, int | None]  # (path, size)


def listing(fs: pafs.FileSystem, folder: str) -> tuple[pafs.FileInfo, ...]:
    """The data files of a partition folder, sorted by path (none while it does not exist);
    names starting with `.` or `_` are files being written, not data."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except OSError as exc:
        raise RlvError(f"cannot list {folder}: {first_line(exc)}") from None
    files = [f for f in infos if f.type == pafs.FileType.File and f.base_name.endswith(PARQUET)
             and not f.base_name.startswith((".", "_"))]
    return tuple(sorted(files, key=lambda f: f.path))


def signature(files: tuple[pafs.FileInfo, ...]) -> tuple[FileKey, ...]:
    return tuple((f.path, f.size) for f in files)


@dataclass
class PartitionReader:
    """The rows of one table partition (`STORE/TABLE/sweep=NAME`), files cached by name and size."""

    fs: pafs.FileSystem
    folder: str
    _tables: dict[FileKey, pa.Table] = field(default_factory=dict, repr=False)

    def read(self, files: tuple[pafs.FileInfo, ...]) -> pd.DataFrame:
        """The rows of `files` (a `listing` of this folder) as one DataFrame; empty when none."""
        keys = signature(files)
        for key in keys:
            if key not in self._tables:
                self._tables[key] = self._read_file(key[0])
        for gone in set(self._tables) - set(keys):  # moved away by hand: its rows are gone too
            del self._tables[gone]
        if not keys:
            return pd.DataFrame()
        # permissive: files of a grown sweep may hold more columns (a setting made a factor)
        merged = pa.concat_tables([self._tables[k] for k in keys], promote_options="permissive")
        return merged.to_pandas()

    def _read_file(self, path: str) -> pa.Table:
        try:
            return pq.read_table(path, filesystem=self.fs)
        except (OSError, pa.ArrowException) as exc:
            raise RlvError(f"corrupt store file {path} ({first_line(exc)}); move it away: the "
                           "driver writes its rows again") from None
