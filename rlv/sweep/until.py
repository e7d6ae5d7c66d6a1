"""`until:` in a sweep file: run seeds until a question about one factor is answered.

    until: {metric: test_re, factor: encoder, delta: 1.0, power: 0.8, alpha: 0.01,
            max_seeds: 15, step: 2}

`rlv launch` runs the file's seeds, fits the metric's model to the store's trials, and grows the
sweep by `step` seeds per cell (never past `max_seeds`, never past the seeds `rlv plan` asks for)
until the F test of `factor` has power `power` at level `alpha` for a difference `delta` between
two of its levels (rlv/analysis/adaptive.py decides; rlv/service/adaptive.py runs the rounds).
Only the residual variance is re-estimated, never the effect: `delta` is fixed here, beforehand.

This module validates the mapping (one RlvError line naming the bad value and what is allowed)
and knows nothing of the analysis beyond the names of the metrics that have a model, looked up
only for a file that has `until:` (the analysis package takes seconds to import).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from rlv.config import setting_column
from rlv.errors import RlvError

if TYPE_CHECKING:
    from rlv.sweep.spec import SweepSpec

REQUIRED = ("metric", "factor", "delta", "max_seeds")
OPTIONAL = ("power", "alpha", "step")
UNTIL_KEYS = REQUIRED + OPTIONAL


@dataclass(frozen=True)
class Until:
    """The question a sweep runs seeds for, and how far it may grow (seeds are per cell)."""

    metric: str  # a store metric with a model (rlv/analysis/design.py METRIC_MODELS)
    factor: str  # a varying factor of the sweep, by its store column (encoder, latent_dim, ...)
    delta: float  # the difference between two of its levels to detect, in the metric's units
    power: float  # the power wanted for it
    alpha: float  # the level of the F test
    max_seeds: int  # never more seeds per cell than this
    step: int = 1  # seeds added per round

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    def describe(self, seeds: int) -> str:
        """One line for `rlv check` and `rlv status`: the question and the growth rule."""
        return (f"until: {self.metric} by {self.factor}, delta {self.delta:g}, power "
                f"{self.power:g} at alpha {self.alpha:g}; from {seeds} seeds per cell, "
                f"+{self.step} per round, at most {self.max_seeds}")


def grow_seeds(seeds: tuple[int, ...], count: int) -> tuple[int, ...]:
    """`seeds` with the smallest unused seeds >= 0 added until there are `count` (a count-form
    `seeds: N`, 0..N-1, grows as `seeds: count` would); never fewer than given."""
    out, taken, candidate = list(seeds), set(seeds), 0
    while len(out) < count:
        if candidate not in taken:
            out.append(candidate)
        candidate += 1
    return tuple(out)


def _number(source: str, key: str, value: Any, low: float, high: float | None = None) -> float:
    bounds = f"> {low:g}" if high is None else f"strictly between {low:g} and {high:g}"
    if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            or value <= low or (high is not None and value >= high)):
        raise RlvError(f"{source}: until.{key} = {value!r} is not allowed; it must be {bounds}")
    return float(value)


def _count(source: str, key: str, value: Any, low: int, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise RlvError(f"{source}: until.{key} = {value!r} is not allowed; it must be an integer "
                       f">= {low}{why}")
    return value


def parse_until(source: str, value: Any, spec: SweepSpec) -> Until:
    """Validate a sweep file's `until:` mapping against its (already validated) spec."""
    from rlv.analysis.anova import ALPHA
    from rlv.analysis.design import METRIC_MODELS
    from rlv.analysis.plan import POWER
    from rlv.sweep.spec import MAX_TRIALS

    if not isinstance(value, dict):
        raise RlvError(f"{source}: until must be a mapping with keys {', '.join(UNTIL_KEYS)}, "
                       f"got {value!r}")
    unknown = sorted(set(value) - set(UNTIL_KEYS), key=str)
    if unknown:
        raise RlvError(f"{source}: unknown until key {unknown[0]!r}; allowed: "
                       f"{', '.join(UNTIL_KEYS)}")
    missing = [k for k in REQUIRED if k not in value]
    if missing:
        raise RlvError(f"{source}: until needs {', '.join(missing)} (keys: {', '.join(REQUIRED)}; "
                       f"optional: {', '.join(OPTIONAL)})")
    metric = value["metric"]
    if not isinstance(metric, str) or metric not in METRIC_MODELS:
        raise RlvError(f"{source}: until.metric = {metric!r} is not allowed; metrics with a "
                       f"model: {', '.join(METRIC_MODELS)}")
    first = spec.trial_config({**spec.cells()[0], "seed": spec.seeds[0]})
    if metric == "fid" and first.eval.fid_samples == 0:
        raise RlvError(f"{source}: until.metric = 'fid' needs FID: eval.fid_samples is 0")
    # by its store column (`latent_dim`) or as the file names it (`model.latent_dim`)
    varying = {f: setting_column(f) for f in spec.varying()}
    name = value["factor"]
    factor = varying.get(name, name) if isinstance(name, str) else None
    if factor is None or factor not in varying.values():
        allowed = ", ".join(varying.values()) or "none"
        raise RlvError(f"{source}: until.factor = {name!r} is not allowed; the sweep's factors "
                       f"with two or more levels: {allowed}")
    if "dataset" in varying:
        raise RlvError(f"{source}: until needs a sweep of one data set (the model is fitted per "
                       "data set); this one varies dataset")
    seeds = len(spec.seeds)
    max_seeds = _count(source, "max_seeds", value["max_seeds"], seeds,
                       f" (the file's seeds: {seeds})")
    cells = spec.size() // seeds
    if max_seeds * cells > MAX_TRIALS:
        raise RlvError(f"{source}: until.max_seeds = {max_seeds:,} gives {max_seeds * cells:,} "
                       f"trials; a sweep holds at most {MAX_TRIALS:,}")
    return Until(metric=metric, factor=factor,
                 delta=_number(source, "delta", value["delta"], 0.0),
                 power=_number(source, "power", value.get("power", POWER), 0.0, 1.0),
                 alpha=_number(source, "alpha", value.get("alpha", ALPHA), 0.0, 1.0),
                 max_seeds=max_seeds,
                 step=_count(source, "step", value.get("step", Until.step), 1))
