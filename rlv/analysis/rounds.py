"""The report's section on a sweep with `until:`: its rounds, as the store keeps them."""

from __future__ import annotations

import json
from collections.abc import Iterable

import pandas as pd

from rlv import columns as col
from rlv.analysis.render import Block, Heading, Para, Table
from rlv.store.rounds import read_rounds
from rlv.store.store import Store


def rounds_blocks(store: Store, sweeps: Iterable[str]) -> list[Block]:
    """Per sweep with rounds: the question, why only sigma was re-estimated, and each round
    (seeds per cell, trials, sigma, the plan's seeds, the power, the decision). None without."""
    blocks: list[Block] = []
    for sweep in sweeps:
        rounds = read_rounds(store, sweep)
        if not rounds:
            continue
        until = json.loads(rounds[-1].until) if rounds[-1].until else {}
        question = ", ".join(f"{k} {v}" for k, v in until.items())
        blocks.append(Heading(f"Seeds until the question is answered ({sweep})", 2))
        blocks.append(Para(
            f"until: {question}. Each round ran the grid at its seeds per cell, refitted the "
            "metric's model and re-estimated its residual sd (sigma) only: delta is the sweep "
            "file's, fixed beforehand, and the observed effect was never used (an internal "
            "pilot, Wittes and Brittain 1990), so the F tests of this report keep their alpha. "
            "power: at the round's seeds for delta; planned_seeds: what rlv plan asks for."))
        frame = pd.DataFrame([{
            col.ROUND: r.round, col.ROUND_SEEDS: r.seeds, col.ROUND_TRIALS: r.trials,
            col.SIGMA: f"{r.sigma:.4g}" if pd.notna(r.sigma) else "",
            col.PLANNED_SEEDS: "" if r.planned_seeds is None else str(r.planned_seeds),
            col.POWER: f"{r.power:.3f}" if pd.notna(r.power) else "",
            col.NEXT_SEEDS: r.next_seeds, col.DECISION: r.decision,
        } for r in rounds])
        blocks.append(Table(frame))
    return blocks
