"""`where:` in a sweep file: settings that depend on a cell's levels.

    where:
      - when: {layer: conv, prior: [flow2, flow6]}  # factor -> a level or a list of levels
        settings: {model: {flow_hidden: 128}}       # by TrialConfig section, as `settings`

An entry applies to the cells whose levels match every factor it names. SweepSpec.trial_config
puts its settings on top of the sweep's `settings` (a later entry on top of an earlier one) and
the cell's factor levels on top of both, so an entry never sets a factor. Trial ids do not change
(a conditional setting is no factor), but the setting is in each trial's config, so the store
tells trials apart by it as by any setting (rlv/store/identity.py, rlv/store/plan.py).

`when` names factors of the sweep, named (`layer`) or settings (`model.latent_dim`), and levels
the sweep has: every entry therefore matches some cell, and a misspelt level is an error rather
than an entry that silently applies nowhere. The seed is no factor here: a setting that depends
on the seed would differ between a cell's replicates. Each error is one line naming the entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rlv.config import SECTIONS as SECTION_CONFIGS
from rlv.config import from_dict, level_label
from rlv.errors import RlvError

ENTRY_KEYS = ("when", "settings")
# where the data lies is no setting of the design: one folder holds every data set's files, and
# a launch makes only settings.data.data_dir absolute for the trials
NOT_CONDITIONAL = ("data.data_dir",)


@dataclass(frozen=True)
class Conditional:
    """Settings for the cells whose levels are among `when`'s (one entry of `where:`)."""

    when: dict[str, tuple[Any, ...]]  # factor -> the levels the entry applies to
    settings: dict[str, dict[str, Any]]  # by TrialConfig section, as SweepSpec.settings

    def matches(self, levels: dict[str, Any]) -> bool:
        """Does the entry apply to the grid point `levels` (factor -> level, seed ignored)? Not
        where `levels` lacks one of its factors (a store's older entry, rlv/store/plan.py)."""
        return all(f in levels and levels[f] in allowed for f, allowed in self.when.items())

    def cells(self, factors: dict[str, tuple[Any, ...]]) -> int:
        """How many cells of a grid with these factors the entry applies to."""
        return math.prod(len(self.when.get(f, levels)) for f, levels in factors.items())

    def condition(self) -> str:
        """`layer = conv, prior = flow2|flow6`."""
        return ", ".join(f"{f} = {'|'.join(level_label(v) for v in levels)}"
                         for f, levels in self.when.items())

    def assignments(self) -> str:
        """`model.flow_hidden = 128, train.lr = 0.0005`."""
        return ", ".join(f"{section}.{key} = {'null' if value is None else level_label(value)}"
                         for section, values in self.settings.items()
                         for key, value in values.items())

    def to_dict(self) -> dict[str, Any]:
        return {"when": {f: list(v) for f, v in self.when.items()},
                "settings": {s: dict(v) for s, v in self.settings.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Conditional:
        """An entry as to_dict wrote it (a store's manifest), unvalidated: parse_where checked
        it when the sweep was launched. KeyError, TypeError or AttributeError where it is not."""
        return cls({f: tuple(v) for f, v in data["when"].items()},
                   {s: dict(v) for s, v in data["settings"].items()})


def entry_label(index: int, entry: Conditional) -> str:
    """How an error names an entry: `where[0] (layer = conv)`."""
    return f"where[{index}] ({entry.condition()})"


def _same_level(value: Any, level: Any) -> bool:
    """`value` is `level` as YAML gives it: 8 is the level 8.0 of a float setting, but 1 is not
    the level true (Python's True == 1)."""
    return value == level and isinstance(value, bool) == isinstance(level, bool)


def _when(label: str, value: Any, factors: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    names = ", ".join(factors)
    if not isinstance(value, dict) or not value:
        raise RlvError(f"{label}.when must be a mapping of factor -> level or list of levels, "
                       f"naming at least one of this sweep's factors: {names} (a setting for "
                       f"every cell goes under settings), got {value!r}")
    when: dict[str, tuple[Any, ...]] = {}
    for factor, wanted in value.items():
        if factor == "seed":
            raise RlvError(f"{label}.when names the seed, which is no factor here: a setting that "
                           f"depends on the seed would differ between a cell's replicates; "
                           f"factors: {names}")
        if factor not in factors:
            raise RlvError(f"{label}.when names {factor!r}, which is no factor of this sweep; "
                           f"its factors: {names}")
        wanted = wanted if isinstance(wanted, list) else [wanted]
        levels = factors[factor]
        shown = ", ".join(level_label(v) for v in levels)
        if not wanted:
            raise RlvError(f"{label}.when.{factor} needs a level or a list of levels; its levels: "
                           f"{shown}")
        chosen = []
        for v in wanted:
            same = [level for level in levels if _same_level(v, level)]
            if not same:
                raise RlvError(f"{label}.when: {factor} = {v!r} is no level of this sweep; "
                               f"its levels: {shown}")
            if same[0] in chosen:
                raise RlvError(f"{label}.when.{factor} lists a level twice: {wanted}")
            chosen.append(same[0])
        when[factor] = tuple(chosen)
    return when


def _settings(label: str, value: Any, factor_paths: dict[str, str]) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or not value:
        raise RlvError(f"{label}.settings must be a mapping with sections {', '.join(SECTION_CONFIGS)}, "
                       f"setting at least one value, got {value!r}")
    settings: dict[str, dict[str, Any]] = {}
    for section, values in value.items():
        if section not in SECTION_CONFIGS:
            raise RlvError(f"{label}: unknown settings section {section!r}; allowed: "
                           f"{', '.join(SECTION_CONFIGS)}")
        if not isinstance(values, dict) or not values:
            raise RlvError(f"{label}.settings.{section} must be a mapping of setting -> value, "
                           f"got {values!r}")
        for key in values:
            path = f"{section}.{key}"
            if path in factor_paths:
                raise RlvError(f"{label}: {path} is the factor {factor_paths[path]!r}: a cell's "
                               f"level is set by factors.{factor_paths[path]} alone")
            if path in NOT_CONDITIONAL:
                raise RlvError(f"{label}: {path} cannot depend on the levels (one folder holds "
                               f"every data set's files); give it under settings.{section}")
        try:  # the settings' own type check, as a plain setting gets in TrialConfig
            from_dict(SECTION_CONFIGS[section], values, prefix=f"{section}.")
        except RlvError as exc:
            raise RlvError(f"{label}: {exc}") from None
        settings[section] = dict(values)
    return settings


def parse_where(value: Any, factors: dict[str, tuple[Any, ...]],
                factor_paths: dict[str, str]) -> tuple[Conditional, ...]:
    """Validate `where:`; `factors` are the sweep's (name -> typed levels), `factor_paths` maps
    each setting that is a factor (of any sweep, or this one's `section.field`) to its name.
    Raises RlvError (without the file's name) on the first bad entry."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RlvError(f"where must be a list of entries {{when: {{factor: level}}, settings: "
                       f"{{section: {{setting: value}}}}}}, got {value!r}")
    entries = []
    for index, entry in enumerate(value):
        label = f"where[{index}]"
        if not isinstance(entry, dict):
            raise RlvError(f"{label} must be a mapping with keys {', '.join(ENTRY_KEYS)}, "
                           f"got {entry!r}")
        unknown = sorted(set(entry) - set(ENTRY_KEYS), key=str)
        if unknown:
            raise RlvError(f"{label}: unknown key {unknown[0]!r}; allowed: {', '.join(ENTRY_KEYS)}")
        when = _when(label, entry.get("when"), factors)
        entries.append(Conditional(when, _settings(label, entry.get("settings"), factor_paths)))
    return tuple(entries)
