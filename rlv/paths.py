"""Where rlv caches slow things on a node: converted data sets, FID weights and statistics."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from rlv.errors import RlvError


def cache_dir() -> Path:
    """$RLV_CACHE_DIR, else ~/.cache/rlv; created on first use. Absolute: Tune moves trials' cwd.
    RlvError naming the folder when it cannot be created or written."""
    given = os.environ.get("RLV_CACHE_DIR")
    root = given or os.path.join(Path.home(), ".cache", "rlv")
    path = Path(root).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError("not writable")
    except OSError as exc:
        name = "$RLV_CACHE_DIR" if given else "the cache folder"
        reason = exc.strerror or str(exc)
        raise RlvError(f"{name} {path} is not usable ({reason}); point $RLV_CACHE_DIR at a "
                       "writable folder") from None
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest ("sha256", "sha1", ...) of a file, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_file(package: str, relative: str) -> Path | None:
    """A data file inside an installed package, found without importing the package's code (the
    offline data and weights packages import heavy dependencies we do not install)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    return None
