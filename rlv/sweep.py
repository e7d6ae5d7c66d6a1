"""Sweep files: a factorial grid x seeds with fixed settings, validated before anything runs.

A sweep file (YAML) is small and declarative:

    name: quick                      # names the sweep in the store and in Ray
    store: results                   # a folder or a URI (s3://..., gs://...); --store overrides
    factors:                         # each factor becomes a tune.grid_search
      encoder: [L, PNL, NL, RKS]
      layer: [fc, conv]
      prior: [normal, flow2, flow6]
    seeds: 5                         # a count (0..4) or a list [0, 3]
    settings:                        # fixed settings, by TrialConfig section
      train: {epochs: 2}
    resources: {cpu: 1, gpu: auto}   # per trial; gpu: a fraction (0.25 packs four on a GPU),
                                     # 0, or auto (0.25 where the cluster has GPUs, else CPU)
    max_failures: 2                  # retries of a failed trial, from its last checkpoint

Factors not named take the TrialConfig default (dataset mnist, objective elbo). This module knows
nothing of Ray: `param_space` is a plain dict whose grid entries `trainable.py` turns into
`tune.grid_search`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlv.config import TrialConfig, from_dict, trial_name
from rlv.errors import RlvError
from rlv.validation import check_trial_config

# factor name -> (TrialConfig section, setting); the seed is a factor of its own
FACTOR_SETTINGS: dict[str, tuple[str, str]] = {
    "dataset": ("data", "dataset"),
    "encoder": ("model", "encoder"),
    "layer": ("model", "layer"),
    "prior": ("model", "prior"),
    "objective": ("train", "objective"),
}
FACTOR_ORDER = ("dataset", "encoder", "layer", "prior", "objective")  # trial-name order
SWEEP_KEYS = ("name", "store", "factors", "seeds", "settings", "resources", "max_failures",
              "description")
RESOURCE_KEYS = ("cpu", "gpu")
SECTIONS = ("model", "data", "train", "eval")


@dataclass(frozen=True)
class Resources:
    """What one trial asks for: CPUs, and a GPU fraction or `auto`."""

    cpu: float = 1.0
    gpu: float | str = "auto"  # a number in [0, 1] or "auto"


@dataclass(frozen=True)
class SweepSpec:
    name: str
    store: str = "results"
    factors: dict[str, tuple[str, ...]] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    max_failures: int = 2
    description: str = ""

    def varying(self) -> tuple[str, ...]:
        """Factors with more than one level (they name the trials beyond encoder-layer-prior)."""
        return tuple(f for f in FACTOR_ORDER if len(self.factors.get(f, ())) > 1)

    def trial_config(self, levels: dict[str, Any]) -> TrialConfig:
        """The TrialConfig of one grid point: `levels` maps factor names (and `seed`) to values."""
        data: dict[str, Any] = {s: dict(self.settings.get(s, {})) for s in SECTIONS}
        for factor, value in levels.items():
            if factor == "seed":
                continue
            section, key = FACTOR_SETTINGS[factor]
            data[section][key] = value
        data["seed"] = levels["seed"]
        data["sweep"] = self.name
        cfg = from_dict(TrialConfig, data)
        name = trial_name(cfg, self.varying())
        return from_dict(TrialConfig, {**cfg.to_dict(), "trial_id": name})

    def grid(self) -> list[dict[str, Any]]:
        """Every grid point (factor levels and seed), in a stable order."""
        names = [f for f in FACTOR_ORDER if f in self.factors]
        combos = itertools.product(*(self.factors[f] for f in names), self.seeds)
        return [dict(zip([*names, "seed"], combo, strict=True)) for combo in combos]

    def trials(self) -> list[TrialConfig]:
        return [self.trial_config(levels) for levels in self.grid()]

    def describe(self) -> list[str]:
        """What `rlv check` prints: trial count, what each trial asks for, the budget."""
        trials = self.trials()
        factors = ", ".join(f"{k} {len(v)}" for k, v in self.factors.items())
        gpu = self.resources.gpu
        asks = "0.25 GPU where the cluster has GPUs, else none" if gpu == "auto" else f"{gpu:g} GPU"
        first = trials[0]
        return [f"sweep {self.name}: OK, {len(trials)} trials ({factors}, seeds {len(self.seeds)})",
                f"each trial asks for {self.resources.cpu:g} CPU and {asks}",
                f"epochs {first.train.epochs}, FID samples {first.eval.fid_samples}, "
                f"max failures {self.max_failures}, store {self.store}",
                f"trials: {first.name} ... {trials[-1].name}"]

    def fingerprint(self) -> str:
        """Changes when the grid or the settings change (resuming the sweep is then refused); not
        with the description, the retries (a resumed run uses the file's) or the resources
        (trials keep those they were created with)."""
        asked = {"name": self.name, "factors": self.to_dict()["factors"], "seeds": list(self.seeds),
                 "settings": self.settings}
        return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()[:16]

    def param_space(self) -> dict[str, Any]:
        """A plain dict for Tune: factor -> {"grid_search": levels}, the rest constant."""
        space: dict[str, Any] = {f: {"grid_search": list(v)} for f, v in self.factors.items()}
        space["seed"] = {"grid_search": list(self.seeds)}
        space["sweep_spec"] = self.to_dict()
        return space

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "store": self.store,
                "factors": {k: list(v) for k, v in self.factors.items()},
                "seeds": list(self.seeds), "settings": self.settings,
                "resources": {"cpu": self.resources.cpu, "gpu": self.resources.gpu},
                "max_failures": self.max_failures, "description": self.description}


def _fail(source: str, message: str) -> RlvError:
    return RlvError(f"{source}: {message}")


def _levels(source: str, factor: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _fail(source, f"factor {factor!r} needs a non-empty list of level names, got {value!r}")
    if len(set(value)) != len(value):
        raise _fail(source, f"factor {factor!r} lists a level twice: {value}")
    return tuple(value)


def _seeds(source: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, bool) or value is None:
        raise _fail(source, f"seeds must be a count or a list of integers, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise _fail(source, f"seeds = {value}: a count must be >= 1")
        return tuple(range(value))
    if (not isinstance(value, list) or not value
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)):
        raise _fail(source, f"seeds must be a count or a list of integers >= 0, got {value!r}")
    if len(set(value)) != len(value):
        raise _fail(source, f"seeds lists a seed twice: {value}")
    return tuple(value)


def _resources(source: str, value: Any) -> Resources:
    if value is None:
        return Resources()
    if not isinstance(value, dict):
        raise _fail(source, f"resources must be a mapping with keys {', '.join(RESOURCE_KEYS)}")
    unknown = sorted(set(value) - set(RESOURCE_KEYS))
    if unknown:
        raise _fail(source, f"unknown resources key {unknown[0]!r}; allowed: {', '.join(RESOURCE_KEYS)}")
    cpu = value.get("cpu", Resources.cpu)
    if isinstance(cpu, bool) or not isinstance(cpu, int | float) or cpu <= 0:
        raise _fail(source, f"resources.cpu = {cpu!r}: must be a number > 0")
    gpu = value.get("gpu", Resources.gpu)
    if gpu != "auto" and (isinstance(gpu, bool) or not isinstance(gpu, int | float)
                          or not 0 <= gpu <= 1 and not (gpu > 1 and float(gpu).is_integer())):
        raise _fail(source, f"resources.gpu = {gpu!r}: use a fraction in [0, 1] (0.25 packs "
                            "four trials on a GPU), a whole number of GPUs, or auto")
    return Resources(cpu=float(cpu), gpu=gpu if gpu == "auto" else float(gpu))


def parse_sweep(data: Any, source: str = "sweep") -> SweepSpec:
    """Validate a parsed sweep file; every error names the bad key or value and the allowed ones."""
    if not isinstance(data, dict):
        raise _fail(source, "a sweep file must be a YAML mapping")
    unknown = sorted(set(data) - set(SWEEP_KEYS))
    if unknown:
        raise _fail(source, f"unknown key {unknown[0]!r}; allowed: {', '.join(SWEEP_KEYS)}")
    name = data.get("name")
    if (not isinstance(name, str) or not name or name.startswith(".")
            or not all(c.isalnum() or c in "-_." for c in name)):
        raise _fail(source, f"name = {name!r}: a name of letters, digits, - _ . is needed "
                            "(not starting with .)")
    factors_in = data.get("factors") or {}
    if not isinstance(factors_in, dict):
        raise _fail(source, "factors must be a mapping of factor -> list of levels")
    bad = sorted(set(factors_in) - set(FACTOR_SETTINGS))
    if bad:
        raise _fail(source, f"unknown factor {bad[0]!r}; factors: {', '.join(FACTOR_ORDER)} "
                            "(seeds have their own key)")
    factors = {f: _levels(source, f, factors_in[f]) for f in FACTOR_ORDER if f in factors_in}
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        raise _fail(source, f"settings must be a mapping with sections {', '.join(SECTIONS)}")
    for section, values in settings.items():
        if section not in SECTIONS:
            raise _fail(source, f"unknown settings section {section!r}; allowed: {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise _fail(source, f"settings.{section} must be a mapping of setting -> value")
        for factor, (fsection, key) in FACTOR_SETTINGS.items():
            if fsection == section and key in values:
                raise _fail(source, f"settings.{section}.{key} is a factor: list its levels under "
                                    f"factors.{factor}")
    max_failures = data.get("max_failures", SweepSpec.max_failures)
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 0:
        raise _fail(source, f"max_failures = {max_failures!r}: must be an integer >= 0")
    spec = SweepSpec(
        name=name,
        store=str(data.get("store", SweepSpec.store)),
        factors=factors,
        seeds=_seeds(source, data.get("seeds", 1)),
        settings={k: dict(v) for k, v in settings.items()},
        resources=_resources(source, data.get("resources")),
        max_failures=max_failures,
        description=str(data.get("description", "")),
    )
    try:
        for cfg in spec.trials():
            check_trial_config(cfg)
    except RlvError as exc:
        raise _fail(source, str(exc)) from None
    return spec


def sweep_dirs() -> list[Path]:
    """Where sweep names are looked up: ./sweeps, then the sweeps/ folder beside the package."""
    here = Path.cwd() / "sweeps"
    shipped = Path(__file__).resolve().parent.parent / "sweeps"
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
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RlvError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_sweep(data, source=str(path))
