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
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Final

from rlv import columns as col

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
    """Main effects first (thesis order), then the crossed factors' interactions by degree."""
    terms: list[Term] = [(f,) for f in DESIGN_FACTORS if f in spec.crossed or f in spec.main]
    for degree in range(2, len(spec.crossed) + 1):
        terms += list(itertools.combinations(spec.crossed, degree))
    return tuple(terms)


def describe(spec: ModelSpec) -> str:
    """`encoder * layer + prior`: the thesis's notation for a model."""
    parts = [" * ".join(spec.crossed)] if spec.crossed else []
    parts += list(spec.main)
    return " + ".join(parts) if parts else "1 (no factor varies)"
