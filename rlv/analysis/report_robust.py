"""The report's sections beside the thesis's F tests: seeds as a random effect (mixed.py), robust
summaries (robust.py) and which test to read (assumptions.py, permutation.py).

Each function turns one of those tables into report blocks (render.py), numbers formatted as
text here; report.py places them next to the ANOVA, the post hoc tests and the checks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rlv.analysis.anova import ALPHA
from rlv.analysis.effects import CI_LEVEL
from rlv.analysis.mixed import RESIDUAL, SEED
from rlv.analysis.render import Block, Heading, Para, Table
from rlv.analysis.robust import BASE_COLUMNS, IMPROVEMENT, IQM, VALUE_COLUMNS


def _num(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if np.isfinite(value) else ""


def _with_interval(value: float, low: float, high: float, digits: int = 2) -> str:
    if not np.isfinite(value):
        return ""
    interval = f" [{low:.{digits}f}, {high:.{digits}f}]" if np.isfinite(low) and np.isfinite(high) else ""
    return f"{value:.{digits}f}{interval}"


def _p(value: float) -> str:
    if not np.isfinite(value):
        return ""
    return "< .001" if value < 0.001 else f"{value:.3f}"


def random_effects_blocks(random: pd.DataFrame, dataset: str) -> list[Block]:
    """One dataset's variance components, one row per metric, for beside its ANOVA."""
    part = random[random["dataset"] == dataset]
    if part.empty:
        return []
    by = part.set_index(["metric", "model", "component"])
    rows = []
    for metric, model in dict.fromkeys(zip(part["metric"], part["model"], strict=True)):
        seed, resid = by.loc[(metric, model, SEED)], by.loc[(metric, model, RESIDUAL)]
        rows.append(
            {
                "metric": metric,
                "model": model,
                "seed variance": _num(seed["variance"], 4),
                "residual variance": _num(resid["variance"], 4),
                "ICC": _num(seed["share"], 3),
                "seeds": seed["seeds"],
                "note": seed["note"],
            }
        )
    return [
        Heading(f"Seeds as a random effect ({dataset}, REML)", 3),
        Para(
            "Each model with a random intercept per seed instead of the seed block (statsmodels "
            "MixedLM, REML): the seed and residual variance components and the intraclass "
            "correlation ICC = seed / (seed + residual), the share of the variance the design "
            "leaves that two trials of one seed have in common. The blocked ANOVA above tests "
            "whether the seed matters; the ICC says how much (random_effects.csv)."
        ),
        Table(pd.DataFrame(rows)),
    ]


def _cell_iqms(part: pd.DataFrame) -> pd.DataFrame:
    """Rows the cells (factor columns), columns the metrics: IQM [interval]."""
    iqms = part[part["statistic"] == IQM]
    named = {*BASE_COLUMNS, *VALUE_COLUMNS}
    factors = [c for c in iqms.columns if c not in named and iqms[c].notna().any()]
    shown = iqms.assign(
        text=[
            _with_interval(v, lo, hi)
            for v, lo, hi in zip(iqms["value"], iqms["lower"], iqms["upper"], strict=True)
        ],
        **{f: iqms[f].fillna("").astype(str) for f in factors},
    )
    metrics = list(dict.fromkeys(shown["metric"]))
    if not factors:  # one cell: nothing varies
        return pd.DataFrame([dict(zip(shown["metric"], shown["text"], strict=True))], columns=metrics)
    wide = shown.pivot_table(index=factors, columns="metric", values="text", aggfunc="first", sort=False)
    return wide.reindex(columns=metrics).reset_index()


def robust_blocks(robust: pd.DataFrame, resamples: int) -> list[Block]:
    """Per dataset: each cell's IQM, and P(a better than b) for the thesis's ordered factors."""
    if robust.empty:
        return []
    blocks: list[Block] = [
        Heading(f"Robust summaries (IQM, probability of improvement; {CI_LEVEL:.0%} bootstrap)", 2),
        Para(
            "Per cell the interquartile mean over seeds (the mean of the middle 50%), and for each "
            "pair of levels of a factor the thesis orders the probability that a run at the first "
            "level is better than one at the second (ties 1/2), compared within each cell of the "
            "other factors and averaged over them; 0.5 is no difference. Better is the metric's "
            "own direction (lower, except RT). Intervals: percentile, stratified bootstrap "
            f"({resamples} resamples of the seeds within each cell; robust.csv)."
        ),
    ]
    for dataset in dict.fromkeys(robust["dataset"]):
        part = robust[robust["dataset"] == dataset]
        blocks.append(Table(_cell_iqms(part), caption=f"{dataset}: IQM [{CI_LEVEL:.0%} interval]"))
        pairs = part[part["statistic"] == IMPROVEMENT]
        if pairs.empty:
            continue
        shown = pd.DataFrame(
            {
                "metric": pairs["metric"],
                "better": pairs["better"],
                "factor": pairs["factor"],
                "comparison": [f"P({a} better than {b})" for a, b in zip(
                    pairs["level_a"], pairs["level_b"], strict=True)],
                f"value [{CI_LEVEL:.0%} interval]": [_with_interval(v, lo, hi) for v, lo, hi in zip(
                    pairs["value"], pairs["lower"], pairs["upper"], strict=True)],
                "cells": pairs["cells"],
                "note": pairs["note"],
            }
        )  # fmt: skip
        blocks.append(Table(shown, caption=f"{dataset}: probability of improvement"))
    return blocks


def assumption_blocks(assumptions: pd.DataFrame, permutations: int) -> list[Block]:
    """The Shapiro-Wilk and Brown-Forsythe checks of every model and which test to read."""
    if assumptions.empty:
        return []
    shown = pd.DataFrame(
        {
            "dataset": assumptions["dataset"],
            "metric": assumptions["metric"],
            "model": assumptions["model"],
            "Shapiro-Wilk W": [_num(v, 3) for v in assumptions["shapiro_W"]],
            "p (SW)": [_p(v) for v in assumptions["shapiro_p"]],
            "Brown-Forsythe W": [_num(v, 3) for v in assumptions["brown_forsythe_W"]],
            "p (BF)": [_p(v) for v in assumptions["brown_forsythe_p"]],
            "read": assumptions["read"],
            "note": assumptions["note"],
        }
    )
    return [
        Heading("Which test to read", 3),
        Para(
            "Shapiro-Wilk on each model's residuals and Brown-Forsythe (median-centred Levene) "
            f"across its cells. Where either rejects at alpha = {ALPHA:g}, read the Freedman-Lane "
            f"permutation p of the model's terms ({permutations} permutations; column p perm of "
            "the ANOVA) instead of the F test's p; elsewhere the F test (column read). p (Holm) "
            "adjusts the p to read over the metrics (assumptions.csv)."
        ),
        Table(shown),
    ]
