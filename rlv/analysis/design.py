"""Which ANOVA model each metric gets (thesis section 4.5, chapter 5), as data.

| metric                                      | model                   | resid df at n = 5 |
|---------------------------------------------|-------------------------|-------------------|
| test_neg_elbo, test_rt (and test_rt_elbo)   | prior + encoder * layer | 110               |
| test_re, fid                                | encoder * layer * prior | 96                |
| gap_neg_elbo, gap_re, gap_rt, epoch_time_s  | encoder + layer + prior | 113               |

"prior (categorical covariate)" in the thesis is a factor without interactions: its F(2, 110)
has 2 df, so SPSS cannot have used prior as a numeric covariate (1 df). When the data hold both
objectives, objective joins the full factorial of the RE/FID models and enters the others as a
main effect. A factor with a single level in the data is dropped, which turns every model into
the thesis's one-way ANOVA on encoder for its SVHN follow-up (df 16).

Any sweep: the design's factors are the sweep's varying factors, read from the trials' `factors`
column (rlv.columns.SWEEP_FACTORS: the sweep's factor columns, comma-separated; without it, the
named factors encoder/layer/prior/objective). Where they are among the thesis's factors, the
thesis's models above are fitted; where a sweep varies anything else (latent_dim, lr, init, ...),
the thesis has no model of its own and each test metric gets the full factorial of the varying
factors (numeric levels as categories). Dataset is no factor: each dataset is analysed alone.

Seed blocks: every seed shares its data split and frozen initialisation across all cells, so seed
is a block of a randomised block design. `blocked` adds `+ seed` (no interactions) to a model.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Final

import pandas as pd

from rlv import columns as col
from rlv.errors import RlvError

Term = tuple[str, ...]

# Design factors in the order terms are listed (thesis order).
DESIGN_FACTORS: Final = (col.ENCODER, col.LAYER, col.PRIOR, col.OBJECTIVE)


@dataclass(frozen=True)
class ModelSpec:
    """Which factors are crossed (all their interactions) and which enter as main effects only."""

    crossed: tuple[str, ...]
    main: tuple[str, ...]


PRIOR_COVARIATE: Final = "prior-covariate"
FULL_FACTORIAL: Final = "full-factorial"
MAIN_EFFECTS: Final = "main-effects"

MODEL_SPECS: Final[dict[str, ModelSpec]] = {
    PRIOR_COVARIATE: ModelSpec(crossed=(col.ENCODER, col.LAYER), main=(col.PRIOR,)),
    FULL_FACTORIAL: ModelSpec(crossed=(col.ENCODER, col.LAYER, col.PRIOR), main=()),
    MAIN_EFFECTS: ModelSpec(crossed=(), main=(col.ENCODER, col.LAYER, col.PRIOR)),
}

METRIC_MODELS: Final[dict[str, str]] = {
    col.TEST_NEG_ELBO: PRIOR_COVARIATE,
    col.TEST_RT: PRIOR_COVARIATE,
    col.TEST_RT_ELBO: PRIOR_COVARIATE,  # same scale dependence on the prior as test_rt
    col.TEST_RE: FULL_FACTORIAL,
    col.FID: FULL_FACTORIAL,
    col.GAP_NEG_ELBO: MAIN_EFFECTS,
    col.GAP_RE: MAIN_EFFECTS,
    col.GAP_RT: MAIN_EFFECTS,
    col.EPOCH_TIME_S: MAIN_EFFECTS,
}

# The thesis's analyses, in the order of its chapter 5.
DEFAULT_METRICS: Final = (
    col.TEST_NEG_ELBO,
    col.TEST_RT,
    col.TEST_RE,
    col.GAP_NEG_ELBO,
    col.GAP_RE,
    col.GAP_RT,
    col.FID,
    col.EPOCH_TIME_S,
)


# What a sweep that varies other settings gets: the full factorial on the test metrics.
GENERIC_METRICS: Final = (col.TEST_NEG_ELBO, col.TEST_RT, col.TEST_RE, col.FID)
BLOCK_SUFFIX: Final = " (block)"


def sweep_factors(trials: pd.DataFrame) -> tuple[str, ...]:
    """The sweep's factor columns (not seed, not dataset), in the sweep's order.

    From the `factors` column where the trials have one (the union over rows, so pooled sweeps
    keep every factor), else the named factors present. RlvError when a named factor has no
    column.
    """
    names: list[str] = []
    listed = trials[col.SWEEP_FACTORS].dropna() if col.SWEEP_FACTORS in trials else None
    if listed is not None and len(listed):
        for text in listed.astype(str).unique():
            names += [n.strip() for n in text.split(",") if n.strip() and n.strip() not in names]
        names = [n for n in names if n not in (col.SEED, col.DATASET)]
        missing = [n for n in names if n not in trials]
        if missing:
            raise RlvError(
                f"the trials name factor {missing[0]!r} in column {col.SWEEP_FACTORS!r} "
                f"but have no column {missing[0]!r}: columns are {', '.join(map(str, trials))}"
            )
        return tuple(names)
    return tuple(f for f in DESIGN_FACTORS if f in trials)


def varying_factors(trials: pd.DataFrame) -> tuple[str, ...]:
    """The sweep's factors with more than one level in `trials` (one dataset's rows)."""
    return tuple(f for f in sweep_factors(trials) if trials[f].nunique(dropna=True) > 1)


def is_thesis_design(factors: tuple[str, ...] | list[str]) -> bool:
    """Whether the thesis's models apply: no factor varies beyond encoder/layer/prior/objective."""
    return set(factors) <= set(DESIGN_FACTORS)


def spec_for(metric: str, factors: tuple[str, ...] | list[str]) -> ModelSpec:
    """The metric's model for these varying factors: the thesis's (restricted to them) where it
    has one for this design, else the full factorial of the factors in the sweep's order."""
    if is_thesis_design(factors):
        return model_spec(METRIC_MODELS[metric], list(factors))
    return ModelSpec(crossed=tuple(factors), main=())


def model_spec(kind: str, factors: list[str]) -> ModelSpec:
    """The kind's model restricted to `factors` (those that vary), objective added by the rule."""
    base = MODEL_SPECS[kind]
    crossed, main = list(base.crossed), list(base.main)
    (crossed if kind == FULL_FACTORIAL else main).append(col.OBJECTIVE)
    return ModelSpec(
        crossed=tuple(f for f in DESIGN_FACTORS if f in crossed and f in factors),
        main=tuple(f for f in DESIGN_FACTORS if f in main and f in factors),
    )


def model_terms(spec: ModelSpec) -> tuple[Term, ...]:
    """Main effects first (thesis order, then any other factor in the spec's order), then the
    crossed factors' interactions by degree."""
    named = [f for f in DESIGN_FACTORS if f in spec.crossed or f in spec.main]
    others = [f for f in (*spec.crossed, *spec.main) if f not in DESIGN_FACTORS]
    terms: list[Term] = [(f,) for f in (*named, *others)]
    for degree in range(2, len(spec.crossed) + 1):
        terms += list(itertools.combinations(spec.crossed, degree))
    return tuple(terms)


def describe(spec: ModelSpec) -> str:
    """`encoder * layer + prior`: the thesis's notation for a model."""
    parts = [" * ".join(spec.crossed)] if spec.crossed else []
    parts += list(spec.main)
    return " + ".join(parts) if parts else "1 (no factor varies)"


def describe_blocked(spec: ModelSpec, block: str) -> str:
    """`encoder * layer + prior + seed (block)`: the model with a block term added."""
    base = describe(spec) if (spec.crossed or spec.main) else "1"
    return f"{base} + {block}{BLOCK_SUFFIX}"
