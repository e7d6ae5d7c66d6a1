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
    where:                           # optional: settings for the cells whose levels match
      - when: {layer: conv}          # factor -> a level or a list of levels (all must match)
        settings: {model: {flow_hidden: 128}}
    resources: {cpu: 1, gpu: auto}   # per trial; gpu: a fraction (0.25 packs four on a GPU),
                                     # 0, or auto (0.25 where the cluster has GPUs, else CPU)
    max_failures: 2                  # retries of a failed trial, from its last checkpoint
    keep_model: true                 # a finished trial keeps its trained weights in the store
    until: {metric: test_re, factor: encoder, delta: 1.0, max_seeds: 15, step: 2}
                                     # optional: grow the seeds until the question is answered
                                     # (rlv/sweep/until.py)

Factors not named take the TrialConfig default (dataset mnist, objective elbo). Any setting can be
a factor too, named `section.field` with its levels typed like the setting:

    factors:
      encoder: [L, NL]
      model.latent_dim: [8, 16, 32]  # trials L-fc-normal-latent_dim8-s0, ...; column latent_dim

Trial ids show a setting factor as field name + level, only where the sweep varies it.

A `where` entry's settings go on top of `settings` (a later entry on top of an earlier one), and
the cell's factor levels on top of both; an entry may not set a factor. Its `when` names factors
of the sweep (not the seed) and levels the sweep has, so every entry matches some cell. Trial ids
do not change: the setting is part of each trial's config, so the store tells trials apart by it
as by any setting, and a launch refuses a changed one as it does a changed fixed setting
(rlv/sweep/where.py, rlv/store/plan.py). The thesis sweeps use it for their conv flow priors.

This module knows nothing of Ray: the trials' configs are plain dicts (rlv/service/launch/run.py
hands each to Tune once).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlv.config import SECTIONS as SECTION_CONFIGS
from rlv.config import TrialConfig, from_dict, level_label, setting_column, trial_name
from rlv.datasets import data_availability
from rlv.errors import RlvError
from rlv.sweep.until import Until, parse_until
from rlv.sweep.validation import check_trial_config
from rlv.sweep.where import Conditional, entry_label, parse_where

# factor name -> (TrialConfig section, setting); the seed is a factor of its own
FACTOR_SETTINGS: dict[str, tuple[str, str]] = {
    "dataset": ("data", "dataset"),
    "encoder": ("model", "encoder"),
    "layer": ("model", "layer"),
    "prior": ("model", "prior"),
    "objective": ("train", "objective"),
}
FACTOR_ORDER = ("dataset", "encoder", "layer", "prior", "objective")  # trial-name order
SWEEP_KEYS = ("name", "store", "factors", "seeds", "settings", "where", "resources",
              "max_failures", "description", "keep_model", "until")
RESOURCE_KEYS = ("cpu", "gpu")
SECTIONS = tuple(SECTION_CONFIGS)  # model, data, train, eval
TRIAL_KEY = "trial"  # the one key of a Tune trial's config: the TrialConfig as a plain dict


@dataclass(frozen=True)
class Resources:
    """What one trial asks for: CPUs, and a GPU fraction or `auto`."""

    cpu: float = 1.0
    gpu: float | str = "auto"  # a number in [0, 1] or "auto"


@dataclass(frozen=True)
class SweepSpec:
    name: str
    store: str = "results"
    # named factors (FACTOR_ORDER) -> level names; settings as "section.field" -> typed levels
    factors: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    # settings for the cells whose levels match (where.py), applied in order on top of settings
    where: tuple[Conditional, ...] = ()
    resources: Resources = field(default_factory=Resources)
    max_failures: int = 2
    description: str = ""
    keep_model: bool = True  # finished trials keep their weights (STORE/_checkpoints/...)
    until: Until | None = None  # grow the seeds until this question is answered (until.py)

    def varying(self) -> tuple[str, ...]:
        """Factors with more than one level (they name the trials beyond encoder-layer-prior)."""
        return tuple(f for f in self._factor_names() if len(self.factors[f]) > 1)

    def factor_columns(self) -> tuple[str, ...]:
        """The store columns of the sweep's factors, in trial-name order (no seed)."""
        return tuple(setting_column(f) for f in self._factor_names())

    def trial_config(self, levels: dict[str, Any]) -> TrialConfig:
        """The TrialConfig of one grid point: `levels` maps factor names (and `seed`) to values."""
        data: dict[str, Any] = {s: dict(self.settings.get(s, {})) for s in SECTIONS}
        for entry in self.where:
            if entry.matches(levels):
                for section, values in entry.settings.items():
                    data[section].update(values)
        for factor, value in levels.items():
            if factor == "seed":
                continue
            section, key = FACTOR_SETTINGS.get(factor) or factor.split(".")
            data[section][key] = value
        data["seed"] = levels["seed"]
        data["sweep"] = self.name
        data["factors"] = self._factor_names()
        cfg = from_dict(TrialConfig, data)
        return dataclasses.replace(cfg, trial_id=trial_name(cfg, self.varying()))

    def _factor_names(self) -> list[str]:
        """Trial-name order: the named factors, then settings as the file lists them."""
        return ([f for f in FACTOR_ORDER if f in self.factors]
                + [f for f in self.factors if f not in FACTOR_SETTINGS])

    def cells(self) -> list[dict[str, Any]]:
        """Every combination of factor levels (no seed), in a stable order."""
        names = self._factor_names()
        combos = itertools.product(*(self.factors[f] for f in names))
        return [dict(zip(names, combo, strict=True)) for combo in combos]

    def grid(self) -> list[dict[str, Any]]:
        """Every grid point (factor levels and seed), in a stable order: cells x seeds."""
        return [{**cell, "seed": seed} for cell in self.cells() for seed in self.seeds]

    def size(self) -> int:
        """The number of trials, without building them."""
        return math.prod(len(v) for v in self.factors.values()) * len(self.seeds)

    def trials(self) -> list[TrialConfig]:
        return [self.trial_config(levels) for levels in self.grid()]

    def store_location(self, override: str | None = None) -> str:
        """The sweep's store: `override` or the file's, a local folder made absolute."""
        store = override or self.store
        return store if "://" in store else str(Path(store).expanduser().resolve())

    def describe(self) -> list[str]:
        """What `rlv check` prints: trial count, what each trial asks for, the budget. Builds two
        trials, not the grid: a grid of millions is described at once."""
        cells = self.cells()
        first = self.trial_config({**cells[0], "seed": self.seeds[0]})
        last = self.trial_config({**cells[-1], "seed": self.seeds[-1]})
        factors = ", ".join(f"{k} {len(v)}" for k, v in self.factors.items())
        gpu = self.resources.gpu
        asks = "0.25 GPU where the cluster has GPUs, else none" if gpu == "auto" else f"{gpu:g} GPU"
        lines = [f"sweep {self.name}: OK, {self.size():,} trials ({factors}, seeds {len(self.seeds)})",
                 f"each trial asks for {self.resources.cpu:g} CPU and {asks}",
                 f"epochs {first.train.epochs}, FID samples {first.eval.fid_samples}, "
                 f"max failures {self.max_failures}, store {self.store}",
                 f"trials: {first.name} ... {last.name}"]
        lines += [f"where {entry.condition()}: {entry.assignments()} "
                  f"({entry.cells(self.factors) * len(self.seeds):,} of {self.size():,} trials)"
                  for entry in self.where]
        for dataset in self.factors.get("dataset", (first.data.dataset,)):
            missing = data_availability(dataset, first.data.data_dir)
            if missing:
                lines.append(f"data: {missing}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "store": self.store,
                "factors": {k: list(v) for k, v in self.factors.items()},
                "seeds": list(self.seeds), "settings": self.settings,
                **({"where": [entry.to_dict() for entry in self.where]} if self.where else {}),
                "resources": {"cpu": self.resources.cpu, "gpu": self.resources.gpu},
                "max_failures": self.max_failures, "description": self.description,
                "keep_model": self.keep_model,
                **({"until": self.until.to_dict()} if self.until is not None else {})}


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


_NAME_SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.+-")


def _setting_levels(source: str, factor: str, value: Any) -> tuple[Any, ...]:
    """The typed levels of a setting made a factor (`model.latent_dim: [8, 16]`)."""
    section, _, key = factor.partition(".")
    if section not in SECTION_CONFIGS:
        raise _fail(source, f"unknown factor {factor!r}: {section!r} is no settings section; "
                            f"sections: {', '.join(SECTIONS)}")
    named = [n for n, target in FACTOR_SETTINGS.items() if target == (section, key)]
    if named:
        raise _fail(source, f"factor {factor!r} is the factor {named[0]!r}: list its levels under "
                            f"factors.{named[0]}")
    cls = SECTION_CONFIGS[section]
    if not isinstance(value, list):
        value = [value]
    if not value:
        raise _fail(source, f"factor {factor!r} needs a non-empty list of levels")
    levels = []
    for v in value:
        if v is None or isinstance(v, dict | list):
            raise _fail(source, f"factor {factor!r}: level {v!r} is not allowed; levels are "
                                "numbers, true/false or names (leave a setting out for its default)")
        try:  # the setting's own type check (int -> float where the setting is a float)
            levels.append(getattr(from_dict(cls, {key: v}, prefix=f"{section}."), key))
        except RlvError as exc:
            raise _fail(source, f"factor {factor!r}: {exc}") from None
    if len(set(levels)) != len(levels):
        raise _fail(source, f"factor {factor!r} lists a level twice: {value}")
    if len(levels) > 1:
        for level in levels:
            if not set(level_label(level)) <= _NAME_SAFE:
                raise _fail(source, f"factor {factor!r}: level {level!r} cannot be part of a "
                                    "trial id (letters, digits, _ . + - only)")
    return tuple(levels)


# far beyond any experiment (the thesis's is 140 trials), and small enough that a typo such as
# `seeds: 1000000000` is an error line rather than gigabytes of seed tuple and a MemoryError
MAX_TRIALS = 10_000_000


def _seeds(source: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, bool) or value is None:
        raise _fail(source, f"seeds must be a count or a list of integers, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise _fail(source, f"seeds = {value}: a count must be >= 1")
        if value > MAX_TRIALS:
            raise _fail(source, f"seeds = {value:,}: a sweep holds at most {MAX_TRIALS:,} trials")
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
    bad = sorted(f for f in factors_in if f not in FACTOR_SETTINGS and "." not in str(f))
    if bad:
        raise _fail(source, f"unknown factor {bad[0]!r}; factors: {', '.join(FACTOR_ORDER)}, or "
                            "any setting as section.field (seeds have their own key)")
    factors: dict[str, tuple[Any, ...]] = {
        f: _levels(source, f, factors_in[f]) for f in FACTOR_ORDER if f in factors_in}
    for f, value in factors_in.items():
        if f not in FACTOR_SETTINGS:
            factors[f] = _setting_levels(source, f, value)
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
        for key in values:
            if f"{section}.{key}" in factors:
                raise _fail(source, f"settings.{section}.{key} is also a factor: give its levels "
                                    f"under factors.{section}.{key} only")
    factor_paths = {".".join(path): name for name, path in FACTOR_SETTINGS.items()}
    factor_paths.update({f: f for f in factors if f not in FACTOR_SETTINGS})
    try:
        where = parse_where(data.get("where"), factors, factor_paths)
    except RlvError as exc:
        raise _fail(source, str(exc)) from None
    max_failures = data.get("max_failures", SweepSpec.max_failures)
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 0:
        raise _fail(source, f"max_failures = {max_failures!r}: must be an integer >= 0")
    keep_model = data.get("keep_model", SweepSpec.keep_model)
    if not isinstance(keep_model, bool):
        raise _fail(source, f"keep_model = {keep_model!r}: must be true or false")
    spec = SweepSpec(
        name=name,
        store=str(data.get("store", SweepSpec.store)),
        factors=factors,
        seeds=_seeds(source, data.get("seeds", 1)),
        settings={k: dict(v) for k, v in settings.items()},
        where=where,
        resources=_resources(source, data.get("resources")),
        max_failures=max_failures,
        description=str(data.get("description", "")),
        keep_model=keep_model,
    )
    if spec.size() > MAX_TRIALS:
        raise _fail(source, f"the grid has {spec.size():,} trials (cells x seeds): a sweep holds "
                            f"at most {MAX_TRIALS:,}")
    try:
        # one check per cell: the seed changes nothing that validation looks at, so a grid of
        # 100,000 seeds costs what one seed costs; ids end in -sSEED, so two trials share an id
        # only where two cells do at the first seed
        named: dict[str, dict[str, Any]] = {}
        for cell in spec.cells():
            cfg = _checked_cell(spec, cell)
            if cfg.name in named:
                raise RlvError(_same_id(cfg.name, named[cfg.name], cell))
            named[cfg.name] = cell
    except RlvError as exc:
        raise _fail(source, str(exc)) from None
    if data.get("until") is not None:
        spec = dataclasses.replace(spec, until=parse_until(source, data["until"], spec))
    return spec


def _checked_cell(spec: SweepSpec, cell: dict[str, Any]) -> TrialConfig:
    """The cell's config at the first seed, checked; an error that a `where` entry brings in
    names the entry (the first whose settings, added in order, give the cell this error)."""
    levels = {**cell, "seed": spec.seeds[0]}
    cfg = spec.trial_config(levels)
    try:
        check_trial_config(cfg)
    except RlvError as exc:
        applied = [i for i, entry in enumerate(spec.where) if entry.matches(cell)]
        # the fixed settings alone giving this error: no entry's doing
        if applied and _error(dataclasses.replace(spec, where=()), levels) != str(exc):
            for n in range(1, len(applied) + 1):
                partial = tuple(spec.where[i] for i in applied[:n])
                if _error(dataclasses.replace(spec, where=partial), levels) == str(exc):
                    index = applied[n - 1]
                    raise RlvError(f"{entry_label(index, spec.where[index])}: {exc}") from None
        raise
    return cfg


def _error(spec: SweepSpec, levels: dict[str, Any]) -> str | None:
    """The message check_trial_config gives the grid point `levels` of `spec`, or None."""
    try:
        check_trial_config(spec.trial_config(levels))
    except RlvError as exc:
        return str(exc)
    return None


def _same_id(trial_id: str, first: dict[str, Any], second: dict[str, Any]) -> str:
    """The line refusing two cells whose trials get one id (a store keeps one row per id)."""
    differ = [f for f in first if first[f] != second[f]]

    def levels(cell: dict[str, Any]) -> str:
        return ", ".join(f"{f} = {cell[f]!r}" for f in differ)

    return (f"two trials get the id {trial_id}: {levels(first)} and {levels(second)}; give "
            "levels that differ in their ids")
