"""The Ray Tune function trainable: one grid point of a sweep, as a trial.

Each epoch is reported to Tune; every `checkpoint_every` epochs, and after the last one, the report
carries a checkpoint (the Trainer's state) and `committed: True`, which tells the driver's store
writer that those epochs will never be re-run. The final report carries the trial's row and its
PNG images (base64, so that they reach the driver whichever node ran the trial). Trials never
write the store.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from functools import lru_cache
from typing import Any

import torch
from ray import tune

from rlv.config import TrialConfig
from rlv.sweep import FACTOR_ORDER, SweepSpec, parse_sweep
from rlv.train import EpochMetrics, Trainer
from rlv.trial import epoch_row, run_trial

STATE_FILE = "trainer.pt"
ROW_KEY, IMAGES_KEY, EPOCH_KEY, COMMITTED_KEY = "rlv_row", "rlv_images", "rlv_epoch", "committed"


def _threads() -> None:
    """Use as many threads as CPUs Ray gave the trial (Ray sets OMP_NUM_THREADS to that)."""
    wanted = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if wanted > 0 and torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


@lru_cache(maxsize=8)
def _spec(spec_json: str) -> SweepSpec:
    data = json.loads(spec_json)
    return parse_sweep(data, source=f"sweep {data.get('name')}")


def trial_config(config: dict[str, Any]) -> TrialConfig:
    """The TrialConfig of the grid point Tune resolved into `config`."""
    spec = _spec(json.dumps(config["sweep_spec"], sort_keys=True))
    return spec.trial_config({f: config[f] for f in (*FACTOR_ORDER, "seed") if f in config})


def trial_name(trial: Any) -> str:
    """Tune's trial name (and folder): the trial id, e.g. NL-conv-flow6-s3."""
    return trial_config(trial.config).name


def run_sweep_trial(config: dict[str, Any]) -> None:
    """Tune calls this with the grid point (factor levels, seed) and the sweep spec."""
    _threads()
    cfg = trial_config(config)
    every = cfg.train.checkpoint_every

    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = torch.load(os.path.join(folder, STATE_FILE), map_location="cpu",
                                weights_only=False)

    def on_epoch(m: EpochMetrics, trainer: Trainer) -> None:
        metrics = {EPOCH_KEY: epoch_row(cfg, m), COMMITTED_KEY: False,
                   "epoch": m.epoch, "train_neg_elbo": m.train_neg_elbo}
        # the last epoch too: a trial that fails in evaluation or FID then resumes there
        if m.epoch % every == 0 or m.epoch == cfg.train.epochs:
            with tempfile.TemporaryDirectory() as folder:
                torch.save(trainer.state_dict(), os.path.join(folder, STATE_FILE))
                metrics[COMMITTED_KEY] = True
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(metrics)

    result = run_trial(cfg, resume=resume, on_epoch=on_epoch)
    images = {k: base64.b64encode(v).decode("ascii") for k, v in result.images.by_column().items()}
    # the final report commits every epoch: the trial is done and will not be re-run
    tune.report({ROW_KEY: result.row, IMAGES_KEY: images, COMMITTED_KEY: True,
                 "epoch": cfg.train.epochs, "train_neg_elbo": result.epochs[-1].train_neg_elbo})


def decode_images(encoded: dict[str, str]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in encoded.items()}
