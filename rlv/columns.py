"""Result column names, defined once.

The trial reports under these names, the store writes them, the analysis reads them. They are a
public contract (README, "The store, in Jupyter"): rename nothing, add freely.
Imports nothing heavy so that `rlv.analysis` can use it without torch or Ray.
"""

from __future__ import annotations

import math
from typing import Final

# --- identity of a row -----------------------------------------------------------------------
SWEEP: Final = "sweep"
TRIAL_ID: Final = "trial_id"
EPOCH: Final = "epoch"

# --- factors (one column per factor of the design) --------------------------------------------
DATASET: Final = "dataset"
ENCODER: Final = "encoder"
LAYER: Final = "layer"
PRIOR: Final = "prior"
OBJECTIVE: Final = "objective"
SEED: Final = "seed"

FACTORS: Final = (DATASET, ENCODER, LAYER, PRIOR, OBJECTIVE, SEED)
# in `trials`: the sweep's factor columns, comma-separated in trial-name order (e.g.
# "encoder,layer,prior,latent_dim"): a setting made a factor (`model.latent_dim`) has a column
# named by its field, and the analysis takes its design from this list
SWEEP_FACTORS: Final = "factors"

# Display order of the levels, as in the thesis's tables (an unknown level sorts last).
LEVEL_ORDER: Final[dict[str, tuple[str, ...]]] = {
    DATASET: ("mnist", "svhn"),
    ENCODER: ("L", "PNL", "NL", "RKS"),
    LAYER: ("fc", "conv"),
    PRIOR: ("normal", "flow2", "flow6"),
    OBJECTIVE: ("elbo", "thesis"),
}

# --- settings of the trial worth a column of their own ------------------------------------------
EPOCHS: Final = "epochs"
LATENT_DIM: Final = "latent_dim"
TRAIN_SIZE: Final = "train_size"
TEST_SIZE: Final = "test_size"
FID_SAMPLES: Final = "fid_samples"

# --- per-epoch training metrics (train split, averaged over the epoch's images) ------------------
TRAIN_NEG_ELBO: Final = "train_neg_elbo"
TRAIN_RE: Final = "train_re"
TRAIN_RT: Final = "train_rt"
EPOCH_TIME_S: Final = "epoch_time_s"  # wall seconds of one epoch; in `trials`: mean over epochs

# --- test-set metrics after training -----------------------------------------------------------
TEST_NEG_ELBO: Final = "test_neg_elbo"
TEST_RE: Final = "test_re"
TEST_RT: Final = "test_rt"  # RT as the trial's objective defines it
TEST_RT_ELBO: Final = "test_rt_elbo"  # the correct per-dimension -KL estimate, whatever the objective
FLOW_LOGDET: Final = "flow_logdet"  # mean log|det df/dz| of the prior (0: normal prior);
# in `trials` over the test latents, in `epochs` over the epoch's training latents

# overfitting gaps, one per ELBO component, as the thesis reports them: positive when the test
# set is worse than the training set (last epoch): test - train for the negative ELBO and RE
# (lower is better), train - test for RT (higher is better). Stores written before this
# convention hold train - test; the analysis re-derives the gaps from the train/test columns.
GAP_NEG_ELBO: Final = "gap_neg_elbo"
GAP_RE: Final = "gap_re"
GAP_RT: Final = "gap_rt"

FID: Final = "fid"
TRAINABLE_PARAMS: Final = "trainable_params"
FROZEN_PARAMS: Final = "frozen_params"

# --- provenance ----------------------------------------------------------------------------------
DEVICE: Final = "device"
NODE_ID: Final = "node_id"  # the Ray node that ran the trial (in `epochs`: that epoch)
HOSTNAME: Final = "hostname"  # that node's host name
GPU_SHARE: Final = "gpu_share"  # in `trials`: the GPUs Ray assigned the trial (0.25: a quarter)
STARTED_AT: Final = "started_at"
FINISHED_AT: Final = "finished_at"
TRIAL_SECONDS: Final = "trial_seconds"  # wall seconds inside the trial, start to end
RLV_VERSION: Final = "rlv_version"
TORCH_VERSION: Final = "torch_version"
RAY_VERSION: Final = "ray_version"
CONFIG: Final = "config"  # the full TrialConfig as JSON: any row can be re-run from it

# --- images (paths relative to the store root, PNG) ----------------------------------------------
IMAGE_RECONSTRUCTIONS: Final = "image_reconstructions"
IMAGE_SAMPLES: Final = "image_samples"
IMAGE_INTERPOLATIONS: Final = "image_interpolations"
IMAGE_COLUMNS: Final = (IMAGE_RECONSTRUCTIONS, IMAGE_SAMPLES, IMAGE_INTERPOLATIONS)

# --- the two tables of the store --------------------------------------------------------------
TRIALS_TABLE: Final = "trials"
EPOCHS_TABLE: Final = "epochs"
IMAGES_DIR: Final = "images"

# --- the rounds of a sweep with `until:` (rlv/store/rounds.py): one row per round ----------------
ROUNDS_TABLE: Final = "rounds"
ROUND: Final = "round"  # 1, 2, ...
ROUND_SEEDS: Final = "seeds"  # seeds per cell the round ran
ROUND_TRIALS: Final = "trials"  # trials the metric's model was fitted to
SIGMA: Final = "sigma"  # the model's residual sd (NaN: no residual df yet)
PLANNED_SEEDS: Final = "planned_seeds"  # what `rlv plan` asks for (null: none or beyond its bound)
POWER: Final = "power"  # the power the round's seeds give for the question's delta
NEXT_SEEDS: Final = "next_seeds"  # the next round's seeds per cell (= seeds: the last round)
DECISION: Final = "decision"  # grow, power reached, max_seeds reached, ...
UNTIL: Final = "until"  # the question (the sweep file's until:) as JSON
DECIDED_AT: Final = "decided_at"

EPOCH_METRICS: Final = (TRAIN_NEG_ELBO, TRAIN_RE, TRAIN_RT, EPOCH_TIME_S)
TEST_METRICS: Final = (TEST_NEG_ELBO, TEST_RE, TEST_RT, TEST_RT_ELBO, FLOW_LOGDET)


def is_nan(value: object) -> bool:
    """Whether a metric is NaN: how a row says "not measured" (FID skipped) or "diverged"."""
    return isinstance(value, float) and math.isnan(value)


def fid_text(value: object) -> str:
    """How rlv prints a trial's FID everywhere: "FID 12.34", or "FID skipped" (0 samples)."""
    return "FID skipped" if value is None or is_nan(value) else f"FID {float(value):.2f}"  # type: ignore[arg-type]
