"""Small synthetic stores for the analysis tests: real Parquet files in the store's layout.

Metric values follow a known additive model (plus seeded Gaussian noise), so tests compare the
analysis against independent computations on the same data, never against hard-coded outputs.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rlv import columns as col

ENCODERS = ("L", "PNL", "NL", "RKS")
LAYERS = ("fc", "conv")
PRIORS = ("normal", "flow2", "flow6")

# Planted effects: encoder order L < PNL < RKS < NL with gaps of 5 noise sds.
ENCODER_EFFECT = {"L": 0.0, "PNL": 5.0, "RKS": 10.0, "NL": 15.0}
LAYER_EFFECT = {"fc": 0.0, "conv": 1.0}
PRIOR_EFFECT = {"normal": 0.0, "flow2": -3.0, "flow6": -6.0}
OBJECTIVE_EFFECT = {"elbo": 0.0, "thesis": 2.0}

METRICS = (
    col.TEST_NEG_ELBO, col.TEST_RE, col.TEST_RT, col.TEST_RT_ELBO, col.FLOW_LOGDET,
    col.TRAIN_NEG_ELBO, col.TRAIN_RE, col.TRAIN_RT, col.GAP_NEG_ELBO, col.GAP_RE, col.GAP_RT,
    col.FID, col.EPOCH_TIME_S,
)  # fmt: skip
BASE = {m: 10.0 * (i + 1) for i, m in enumerate(METRICS)}  # distinct offsets per metric


def synthetic_trials(
    dataset: str = "mnist",
    encoders: Iterable[str] = ENCODERS,
    layers: Iterable[str] = LAYERS,
    priors: Iterable[str] = PRIORS,
    objectives: Iterable[str] = ("elbo",),
    seeds: Iterable[int] = range(5),
    encoder_effect: Mapping[str, float] = ENCODER_EFFECT,
    noise: float = 1.0,
    rng_seed: int = 0,
    sweep_dir: str = "test",
    extra: tuple[str, Mapping[Any, float]] | None = None,
    factors: str | None = None,
    seed_effect: Mapping[int, float] | None = None,
    prior_effect: Mapping[str, float] = PRIOR_EFFECT,
) -> pd.DataFrame:
    """One row per trial with every column of the store's trials table (no `sweep`: partition).

    `extra`: a setting made a factor, (column, {level: planted effect}), e.g. ("latent_dim",
    {8: 0.0, 16: 2.0}); it gets its own column and joins the `factors` column, which `factors`
    sets explicitly (None and no extra: no `factors` column, as older stores). `seed_effect`:
    a planted block effect per seed, added to every metric. `prior_effect`: the planted prior
    effects (priors beyond the thesis's, mog or vamp, need one here).
    """
    rng = np.random.default_rng(rng_seed)
    rows = []
    extra_name, extra_effect = extra if extra is not None else ("", {None: 0.0})
    if extra is not None and factors is None:
        factors = f"{col.ENCODER},{col.LAYER},{col.PRIOR},{extra_name}"
    grid = itertools.product(objectives, layers, priors, encoders, extra_effect, seeds)
    for objective, layer, prior, encoder, level, seed in grid:
        effect = (
            encoder_effect[encoder]
            + LAYER_EFFECT[layer]
            + prior_effect[prior]
            + OBJECTIVE_EFFECT[objective]
            + extra_effect[level]
            + (seed_effect or {}).get(seed, 0.0)
        )
        tag = f"-{extra_name}{level}" if extra is not None else ""
        trial_id = f"{dataset}-{encoder}-{layer}-{prior}-{objective}{tag}-s{seed}"
        images = f"{col.IMAGES_DIR}/{sweep_dir}/{trial_id}"
        row = {
            col.TRIAL_ID: trial_id,
            col.DATASET: dataset,
            col.ENCODER: encoder,
            col.LAYER: layer,
            col.PRIOR: prior,
            col.OBJECTIVE: objective,
            col.SEED: seed,
            col.EPOCHS: 3,
            col.LATENT_DIM: 16,
            col.TRAIN_SIZE: 100,
            col.TEST_SIZE: 100,
            col.FID_SAMPLES: 100,
            col.TRAINABLE_PARAMS: 1000 + 10 * len(encoder),
            col.FROZEN_PARAMS: 0,
            col.DEVICE: "cpu",
            col.STARTED_AT: pd.Timestamp("2024-01-01", tz="UTC"),
            col.FINISHED_AT: pd.Timestamp("2024-01-01 00:01", tz="UTC"),
            col.TRIAL_SECONDS: 60.0,
            col.RLV_VERSION: "0.1.0",
            col.TORCH_VERSION: "x",
            col.RAY_VERSION: "x",
            col.CONFIG: json.dumps({"encoder": encoder, "layer": layer, "seed": seed}),
            col.IMAGE_RECONSTRUCTIONS: f"{images}/reconstructions.png",
            col.IMAGE_SAMPLES: f"{images}/samples.png",
            col.IMAGE_INTERPOLATIONS: f"{images}/interpolations.png",
        }
        if extra is not None:
            row[extra_name] = level
        if factors is not None:
            row[col.SWEEP_FACTORS] = factors
        for metric in METRICS:
            row[metric] = BASE[metric] + effect + rng.normal(0.0, noise)
        rows.append(row)
    return pd.DataFrame(rows)


def synthetic_epochs(trials: pd.DataFrame, n_epochs: int = 3) -> pd.DataFrame:
    """Per-epoch rows for each trial: a decaying curve ending near the trial's train metrics."""
    rows = []
    for trial in trials.itertuples(index=False):
        for epoch in range(1, n_epochs + 1):
            decay = 1.0 + 1.0 / epoch
            row = {
                col.TRIAL_ID: trial.trial_id,
                col.EPOCH: epoch,
                col.TRAIN_NEG_ELBO: trial.train_neg_elbo * decay,
                col.TRAIN_RE: trial.train_re * decay,
                col.TRAIN_RT: trial.train_rt,
                col.EPOCH_TIME_S: trial.epoch_time_s,
            }
            row.update({f: getattr(trial, f) for f in col.FACTORS})
            rows.append(row)
    return pd.DataFrame(rows)


def write_png(path: Path, seed: int) -> None:
    """A tiny grey-scale PNG (an 8 x 8 noise image)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).random((8, 8))
    mpimg.imsave(path, pixels, cmap="gray", format="png")


def write_store(
    root: Path,
    trials: pd.DataFrame,
    sweep: str = "test",
    epochs: pd.DataFrame | None = None,
    images: bool = False,
) -> Path:
    """Write `trials` (and `epochs`, and PNGs for the lowest seed) as the store writer would."""
    for table, frame in ((col.TRIALS_TABLE, trials), (col.EPOCHS_TABLE, epochs)):
        if frame is None:
            continue
        folder = root / table / f"{col.SWEEP}={sweep}"
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / "part-0.parquet")
    if images:
        first = trials[trials[col.SEED] == trials[col.SEED].min()]
        for k, trial in enumerate(first.itertuples(index=False)):
            for kind in col.IMAGE_COLUMNS:
                write_png(root / getattr(trial, kind), k)
    return root


def synthetic_store(
    root: Path, sweep: str = "test", images: bool = False, **kwargs: object
) -> Path:
    """A complete store: synthetic trials (kwargs as for `synthetic_trials`) and their epochs."""
    trials = synthetic_trials(sweep_dir=sweep, **kwargs)  # type: ignore[arg-type]
    return write_store(root, trials, sweep, synthetic_epochs(trials), images=images)


def sum_coded_design(
    rows: pd.DataFrame, terms: list[tuple[str, ...]]
) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Intercept, then per term the products of its factors' sum-coded (deviation) columns, with
    the term owning each column (() for the intercept): SPSS's parameterisation, built here."""
    coded = {}
    for factor in {f for term in terms for f in term}:
        values = rows[factor].astype(str).to_numpy()
        levels = np.unique(values)
        # level k's column: 1 at k, -1 at the last level, so the effects sum to zero
        coded[factor] = [(values == k).astype(float) - (values == levels[-1]) for k in levels[:-1]]
    columns: list[np.ndarray] = [np.ones(len(rows))]
    owner: list[tuple[str, ...]] = [()]
    for term in terms:
        for combo in itertools.product(*(coded[f] for f in term)):
            columns.append(np.prod(combo, axis=0))
            owner.append(term)
    return np.column_stack(columns), owner
