"""Where rlv caches slow things on a node: converted data sets, FID weights and statistics."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$RLV_CACHE_DIR, else ~/.cache/rlv; created on first use. Absolute: Tune moves trials' cwd."""
    root = os.environ.get("RLV_CACHE_DIR") or os.path.join(Path.home(), ".cache", "rlv")
    path = Path(root).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
