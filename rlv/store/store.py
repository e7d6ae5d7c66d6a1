"""The one handle on a results store: its filesystem, its root, and the layout's paths.

A command opens its store once (`Store.open`) and passes the handle down; every reader and writer
of the store takes it, so that a remote store's client and credential lookup happen once per
command. A trial process gets the handle through Tune's parameters: it pickles as its location
and is opened again on arrival, once per process.

    store = Store.open("results")          # a folder (made absolute) or a URI
    store.partition("trials", "quick")     # ROOT/trials/sweep=quick
    store.read_json(store.path("_status", "quick.json"))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from rlv import columns as col
from rlv.errors import RlvError
from rlv.store.files import first_line, read_json, read_optional, write_bytes


@dataclass(frozen=True, eq=False)
class Store:
    location: str  # as printed and as pandas reads it: an absolute folder or the URI given
    fs: pafs.FileSystem
    root: str  # the store's path inside `fs`

    @classmethod
    def open(cls, location: str | os.PathLike[str]) -> Store:
        """A local folder (made absolute; it need not exist yet) or a URI: pyarrow's own schemes
        (file://, s3://, gs://, hdfs://), else fsspec's (memory://, ...) where fsspec is
        installed. A store that cannot be reached is an RlvError naming it."""
        text = os.fspath(location)
        if "://" not in text:
            root = os.path.abspath(os.path.expanduser(text))
            if os.path.exists(root) and not os.path.isdir(root):  # reads would see nothing
                raise RlvError(f"store {text!r} is a file, not a folder: name a store folder "
                               "(it may not exist yet) or a URI")
            return cls(root, pafs.LocalFileSystem(), root)
        uri = text
        if uri.startswith("s3://") and "allow_delayed_open" not in uri:
            # one PUT per small file, not a multipart upload's three requests (S3 bills requests)
            uri += ("&" if "?" in uri else "?") + "allow_delayed_open=true"
        try:
            fs, root = pafs.FileSystem.from_uri(uri)
            return cls(text, fs, root.rstrip("/"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
            pass  # a scheme pyarrow does not know natively
        except OSError as exc:  # a known scheme that cannot be reached (credentials, region, ...)
            raise RlvError(f"cannot open store {text!r}: {first_line(exc)}") from None
        try:
            import fsspec
        except ImportError:
            raise RlvError(f"cannot open store {text!r}: unknown scheme and fsspec is not "
                           "installed; use a folder, file://, s3://, gs:// or hdfs://") from None
        try:
            fs_spec, root = fsspec.core.url_to_fs(text)
        except (ValueError, ImportError) as exc:
            raise RlvError(f"cannot open store {text!r}: {first_line(exc)}") from None
        return cls(text, pafs.PyFileSystem(pafs.FSSpecHandler(fs_spec)), root.rstrip("/"))

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        # pickled as its location: the receiving process (a trial, a node) opens it with its own
        # credentials, and none travel with it
        return (Store.open, (self.location,))

    def __str__(self) -> str:
        return self.location

    @property
    def remote(self) -> bool:
        """Whether the store is not a local folder (an object store, a memory:// filesystem)."""
        return not isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, *parts: str) -> str:
        """A path inside the store: ROOT/part/part..."""
        return "/".join((self.root, *parts))

    def uri(self, *parts: str) -> str:
        """What a reader outside rlv opens (pandas, TensorBoard): the location plus parts."""
        return "/".join((self.location.rstrip("/"), *parts))

    def partition(self, table: str, sweep: str) -> str:
        """ROOT/TABLE/sweep=SWEEP: one sweep's files of a table."""
        return self.path(table, f"{col.SWEEP}={sweep}")

    def read_optional(self, path: str) -> bytes | None:
        return read_optional(self.fs, path)

    def read_json(self, path: str) -> Any:
        return read_json(self.fs, path)

    def write_bytes(self, path: str, data: bytes, created: set[str] | None = None) -> None:
        write_bytes(self.fs, path, data, created)

    def exists(self) -> bool:
        """Whether anything was ever written to the store (its root folder is there)."""
        try:
            return self.fs.get_file_info(self.root).type != pafs.FileType.NotFound
        except OSError as exc:
            raise RlvError(f"cannot open store {self.location}: {first_line(exc)}") from None
