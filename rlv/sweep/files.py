"""Finding and reading sweep files: `sweeps/NAME.yaml` or a path, parsed into a SweepSpec."""

from __future__ import annotations

from pathlib import Path

import yaml

from rlv.errors import RlvError
from rlv.sweep.spec import SweepSpec, parse_sweep


def sweep_dirs() -> list[Path]:
    """Where sweep names are looked up: ./sweeps, then the sweeps/ folder beside the package."""
    here = Path.cwd() / "sweeps"
    shipped = Path(__file__).resolve().parents[2] / "sweeps"
    return [here] if here.resolve() == shipped else [here, shipped]


def available_sweeps() -> list[str]:
    names = {p.stem for d in sweep_dirs() if d.is_dir() for p in d.glob("*.yaml")}
    return sorted(names)


def find_sweep(name_or_path: str) -> Path:
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise RlvError(f"sweep file {path} does not exist")
        return path
    for folder in sweep_dirs():
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.exists():
            return candidate
    raise RlvError(f"unknown sweep {name_or_path!r}; available: {', '.join(available_sweeps())} "
                   "(or give a path to a .yaml file)")


def load_sweep(name_or_path: str) -> SweepSpec:
    path = find_sweep(name_or_path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RlvError(f"cannot read sweep file {path}: {exc.strerror or exc}") from None
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise RlvError(f"{path}: not a text file (byte {nul} is NUL); a sweep file is UTF-8 YAML")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RlvError(f"{path}: not UTF-8 (byte {exc.start} is 0x{raw[exc.start]:02x}); save the "
                       "sweep file as UTF-8 YAML") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RlvError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_sweep(data, source=str(path))
