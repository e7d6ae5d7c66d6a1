"""One trial, start to end: data, model, training, evaluation, FID, images. Knows nothing of Ray.

`run_trial` takes a TrialConfig and callbacks; the Ray Tune trainable (rlv/service/trainable.py)
and the `rlv train` command (rlv/trial/standalone.py) are two thin drivers of it. The device is
chosen here, from torch: CUDA when available, else the CPU, with the same code path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import torch

import rlv
from rlv import columns as col
from rlv.config import TrialConfig, setting_column
from rlv.datasets import Dataset, effective_sizes
from rlv.levels import DATASETS, LAYERS, OBJECTIVES
from rlv.trial.data import load_split
from rlv.trial.evaluate import ImageGrids, generate_uint8, image_grids, test_metrics
from rlv.trial.loop import EpochMetrics, Trainer
from rlv.trial.models import build_vae, parameter_counts
from rlv.trial.models.vae import VAE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialResult:
    row: dict[str, Any]  # one row of the store's `trials` table (rlv.columns names)
    images: ImageGrids
    epochs: list[EpochMetrics]  # every epoch of the run, resumed ones included


def choose_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{torch.get_num_threads()} threads"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""


def factor_values(cfg: TrialConfig) -> dict[str, Any]:
    """The factor columns every row of this trial carries: the named factors, the seed, and each
    setting the sweep made a factor, by its field name (`model.latent_dim` -> `latent_dim`),
    typed like the setting (int, float, bool or str: pyarrow keeps the type in every file)."""
    settings = {setting_column(f): cfg.setting(f) for f in cfg.factors if "." in f}
    return {col.DATASET: cfg.data.dataset, col.ENCODER: cfg.model.encoder,
            col.LAYER: cfg.model.layer, col.PRIOR: cfg.model.prior,
            col.OBJECTIVE: cfg.train.objective, col.SEED: cfg.seed, **settings}


def epoch_row(cfg: TrialConfig, m: EpochMetrics) -> dict[str, Any]:
    """One row of the store's `epochs` table."""
    return {col.TRIAL_ID: cfg.name, col.EPOCH: m.epoch, col.TRAIN_NEG_ELBO: m.train_neg_elbo,
            col.TRAIN_RE: m.train_re, col.TRAIN_RT: m.train_rt,
            col.EPOCH_TIME_S: m.epoch_time_s, col.FLOW_LOGDET: m.flow_logdet,
            col.TEST_NEG_ELBO: m.test_neg_elbo, col.TEST_RE: m.test_re, col.TEST_RT: m.test_rt,
            **factor_values(cfg)}


def build_model(cfg: TrialConfig, dataset: Dataset, device: torch.device) -> VAE:
    model = build_vae(cfg.model, channels=dataset.channels, dataset_latent=dataset.latent_dim,
                      seed=cfg.seed, objective=OBJECTIVES.build(cfg.train.objective))
    return model.to(device)


def run_trial(
    cfg: TrialConfig,
    *,
    resume: dict[str, Any] | None = None,
    on_epoch: Callable[[EpochMetrics, Trainer], None] = lambda m, t: None,
    on_phase: Callable[[str], None] = lambda phase: None,
) -> TrialResult:
    """Train and evaluate one cell for one seed; `resume` is a Trainer.state_dict() to continue.
    `cfg` was validated where it was made (the sweep file, or `rlv train`'s options)."""
    started = datetime.now(UTC)
    clock = time.perf_counter()
    torch.manual_seed(cfg.seed)
    device = choose_device()
    dataset = DATASETS.build(cfg.data.dataset)
    memory_format = LAYERS.get(cfg.model.layer).cls.memory_format
    on_phase("loading data")
    split = load_split(cfg.data, cfg.seed, device, memory_format)
    model = build_model(cfg, dataset, device)
    trainer = Trainer(model, split.train, cfg.train, cfg.seed)
    if resume is not None:
        trainer.load_state_dict(resume)
        log.info("%s resumes after epoch %d", cfg.name, trainer.epoch)
    on_phase("training")
    while trainer.epoch < cfg.train.epochs:
        metrics = trainer.run_epoch()
        if cfg.eval.test_due(metrics.epoch):  # one forward pass of the test split, RNG forked
            metrics = trainer.record_test(test_metrics(model, split.test, cfg.seed))
        on_epoch(metrics, trainer)

    on_phase("testing")
    test = test_metrics(model, split.test, cfg.seed)
    last = trainer.history[-1]
    fid = float("nan")
    n_fid = cfg.eval.fid_samples
    if n_fid > 0:
        on_phase(f"FID on {n_fid} samples")
        from rlv.trial.fid import fid_score  # torch-fidelity is imported only when FID runs

        fake = generate_uint8(model, n_fid, cfg.seed)
        # 16 is fastest on a CPU; 100 keeps four trials sharing a 24 GB GPU well inside it
        batch = cfg.eval.fid_batch_size or (100 if device.type == "cuda" else 16)
        fid = fid_score(fake, f"{cfg.data.dataset}-s{cfg.seed}-n{n_fid}",
                        lambda: split.train_uint8[:n_fid], device=device, batch_size=batch)
    on_phase("images")
    grids = image_grids(model, split.test, cfg.eval, cfg.seed)
    trainable, frozen = parameter_counts(model)
    train_n, test_n = effective_sizes(dataset, cfg.data)
    row: dict[str, Any] = {
        col.TRIAL_ID: cfg.name,
        **factor_values(cfg),
        col.SWEEP_FACTORS: ",".join(cfg.factor_columns()),
        col.EPOCHS: cfg.train.epochs,
        col.LATENT_DIM: cfg.model.resolved_latent_dim(dataset.latent_dim),
        col.TRAIN_SIZE: train_n,
        col.TEST_SIZE: test_n,
        **test,
        col.TRAIN_NEG_ELBO: last.train_neg_elbo,
        col.TRAIN_RE: last.train_re,
        col.TRAIN_RT: last.train_rt,
        # overfitting gaps as the thesis reports them: positive when the test set is worse
        col.GAP_NEG_ELBO: test[col.TEST_NEG_ELBO] - last.train_neg_elbo,
        col.GAP_RE: test[col.TEST_RE] - last.train_re,
        col.GAP_RT: last.train_rt - test[col.TEST_RT],
        col.FID: fid,
        col.FID_SAMPLES: n_fid,
        col.EPOCH_TIME_S: sum(m.epoch_time_s for m in trainer.history) / len(trainer.history),
        col.TRAINABLE_PARAMS: trainable,
        col.FROZEN_PARAMS: frozen,
        col.DEVICE: device_label(device),
        col.STARTED_AT: started.isoformat(),
        col.FINISHED_AT: datetime.now(UTC).isoformat(),
        col.TRIAL_SECONDS: time.perf_counter() - clock,
        col.RLV_VERSION: rlv.__version__,
        col.TORCH_VERSION: torch.__version__,
        col.RAY_VERSION: _version("ray"),
        col.CONFIG: cfg.to_json(),
    }
    return TrialResult(row=row, images=grids, epochs=list(trainer.history))
