"""The rlv this Python imports, as a wheel: what a cluster's nodes install (`rlv launch --cluster`).

The wheel is packed from the installed files themselves, whatever the install: the package folder
that `import rlv` loads (a project checkout for an editable install, site-packages for a normal
one) and the distribution's metadata (its pinned dependencies, its `rlv` command). So a cluster
runs exactly the rlv this machine has, with no project folder and no build tool needed. Packing
is deterministic (sorted entries, fixed timestamps): the same code gives the same bytes, which
`ray up` sees as nothing to update.

    stage_wheel(STAGE)   STAGE/rlv-VERSION-py3-none-any.whl and STAGE/requirements.txt naming it

`requirements.txt` (`./rlv-VERSION-py3-none-any.whl`) lets a node's setup install the wheel just
staged whatever older ones its copy of the folder still holds (Ray's file_mounts add, never
delete).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import io
import zipfile
from pathlib import Path

import rlv
from rlv.errors import RlvError

# where `rlv launch --cluster` stages the wheel on this machine: the clusters' files mount it
# on every node as ~/rlv-dist (a fixed path, since a launcher file cannot name a variable one)
STAGE = Path("~/.cache/rlv-dist")
_WHEEL_META = "Wheel-Version: 1.0\nGenerator: rlv\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold


def package_dir() -> Path:
    """The folder `import rlv` loads: what the wheel, and a Ray Job's py_modules, carry."""
    return Path(rlv.__file__).resolve().parent


def wheel_name() -> str:
    return f"rlv-{rlv.__version__.replace('-', '_')}-py3-none-any.whl"


def _metadata() -> tuple[importlib.metadata.Distribution, str]:
    """rlv's distribution as this Python finds it first, and its core metadata (a .dist-info's
    METADATA, or the PKG-INFO of the .egg-info an editable install leaves in the project)."""
    for dist in importlib.metadata.distributions(name="rlv"):
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
        if text:
            return dist, text
    raise RlvError(f"rlv at {package_dir()} is not an installed package, so it cannot be sent "
                   "to a cluster; install it (pip install . or scripts/install.sh)")


def _files(dist_info: str) -> list[tuple[str, bytes]]:
    """(path in the wheel, bytes): the package's files, then its metadata."""
    root = package_dir()
    files = [(f"rlv/{path.relative_to(root).as_posix()}", path.read_bytes())
             for path in sorted(root.rglob("*"))
             if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"]
    dist, text = _metadata()
    # the version is the code's own (rlv.__version__), whatever an editable install recorded
    header, blank, body = text.partition("\n\n")
    header = "".join(f"Version: {rlv.__version__}\n" if line.startswith("Version:") else line
                     for line in header.splitlines(keepends=True))
    metadata = header + blank + body if blank else header
    files.append((f"{dist_info}/METADATA", metadata.encode()))
    files.append((f"{dist_info}/WHEEL", _WHEEL_META.encode()))
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        files.append((f"{dist_info}/entry_points.txt", entry_points.encode()))
    return files


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}\n"


def wheel_bytes() -> bytes:
    """The wheel of the imported rlv (PEP 427), byte for byte the same for the same files."""
    dist_info = f"rlv-{rlv.__version__.replace('-', '_')}.dist-info"
    files = _files(dist_info)
    record = "".join(_record_line(path, data) for path, data in files) + f"{dist_info}/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as wheel:
        for path, data in [*files, (f"{dist_info}/RECORD", record.encode())]:
            entry = zipfile.ZipInfo(path, date_time=_EPOCH)
            entry.external_attr = 0o644 << 16
            wheel.writestr(entry, data, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def stage_wheel(stage: Path = STAGE) -> Path:
    """Put the imported rlv's wheel and a requirements.txt naming it in `stage` (alone: older
    wheels are removed; an unchanged one is left as it is). Returns the wheel's path."""
    stage = stage.expanduser()
    wheel, data = stage / wheel_name(), wheel_bytes()
    requirements = stage / "requirements.txt"
    try:
        stage.mkdir(parents=True, exist_ok=True)
        if not wheel.exists() or wheel.read_bytes() != data:
            partial = stage / f".{wheel.name}.partial"
            partial.write_bytes(data)
            partial.replace(wheel)
        if not requirements.exists() or requirements.read_text() != f"./{wheel.name}\n":
            requirements.write_text(f"./{wheel.name}\n")
        for old in stage.iterdir():
            if old.name not in (wheel.name, requirements.name):
                old.unlink()
    except OSError as exc:
        raise RlvError(f"cannot stage rlv's wheel for the cluster in {stage}: "
                       f"{exc.strerror or exc}") from None
    return wheel
