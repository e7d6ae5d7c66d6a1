"""The Ray Tune function trainable: one grid point of a sweep, as a trial.

Checkpoints live in the store (rlv/store/checkpoints.py), which every node reads. Each run of the
function is an attempt with a token of its own: it starts from the trial's newest committed
checkpoint (the first try, a Tune retry, or a later launch, on whichever node), writes its own
checkpoints every `checkpoint_every` epochs and after the last one under its attempt folder, and
reports each with its token as `committed`; the driver then promotes it and writes the epochs it
covers, which will never be re-run. After the last epoch it also writes model.pt, the trained
weights alone (unless the sweep says keep_model: false). The final report carries the trial's row
and its PNG images (base64, so that they reach the driver whichever node ran the trial).
Checkpoints are the one thing trials write in the store, and only into their own attempt's
folder; the tables and the pointers are the driver's.
"""

from __future__ import annotations

import base64
import io
import os
import sys
import uuid
from dataclasses import asdict
from typing import Any

import torch
from ray import tune

from rlv import columns as col
from rlv.config import TrialConfig
from rlv.errors import RlvError
from rlv.service import hold
from rlv.service.placement import gpu_share, node_columns
from rlv.store.checkpoints import (
    MODEL_FILE,
    Committed,
    attempt_dir,
    resume_path,
    state_name,
    trial_dir,
)
from rlv.store.store import Store
from rlv.sweep.spec import TRIAL_KEY
from rlv.trial.loop import EpochMetrics, Trainer, read_state
from rlv.trial.run import epoch_row, run_trial

ROW_KEY, IMAGES_KEY, EPOCH_KEY, COMMITTED_KEY = "rlv_row", "rlv_images", "rlv_epoch", "committed"
HISTORY_KEY = "rlv_history"  # a resumed trial's epoch rows so far (the driver skips known ones)
ATTEMPT_KEY = "rlv_attempt"  # the reporting attempt's token, in every report
CHECKPOINT_KEY = "rlv_checkpoint"  # a committed report's checkpoint (checkpoints.Committed)


def _threads() -> None:
    """Use as many threads as CPUs Ray gave the trial (Ray sets OMP_NUM_THREADS to that)."""
    wanted = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if wanted > 0 and torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


def trial_config(config: dict[str, Any]) -> TrialConfig:
    """The TrialConfig Tune passes a trial, as the plain dict the driver resolved."""
    return TrialConfig.from_dict(config[TRIAL_KEY])


def trial_name(trial: Any) -> str:
    """Tune's trial name (and folder): the trial id, e.g. NL-conv-flow6-s3."""
    return str(trial.config[TRIAL_KEY]["trial_id"])


def _torch_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def run_sweep_trial(config: dict[str, Any], store: Store, keep_model: bool = True) -> None:
    """Tune calls this with the trial's resolved config (one plain dict, built by the driver);
    `store` and `keep_model` come with the run (tune.with_parameters), not in the config: the
    store arrives as its location and is opened once in this process (Store.__reduce__)."""
    _threads()
    cfg = trial_config(config)
    fs = store.fs
    folder = trial_dir(store.root, cfg.sweep, cfg.name)
    token = uuid.uuid4().hex[:16]  # this attempt's: it writes under attempt_dir(folder, token)
    mine = attempt_dir(folder, token)

    resume = None
    saved_path = resume_path(fs, folder)
    saved = store.read_optional(saved_path) if saved_path else None
    if saved is not None and saved_path is not None:
        try:
            resume = read_state(saved, saved_path)
        except RlvError as exc:  # nothing of it ran; the next checkpoint replaces it
            print(f"{exc}; {cfg.name} starts over from epoch 1", file=sys.stderr, flush=True)
    if resume is not None:
        # the epochs this checkpoint covers are committed, whether or not the driver that got
        # their commit report lived to write them: send them again (it writes the missing ones)
        history = [epoch_row(cfg, EpochMetrics(**m)) for m in resume["history"]]
        if history:
            tune.report({HISTORY_KEY: history, COMMITTED_KEY: True, ATTEMPT_KEY: token,
                         col.EPOCH: history[-1][col.EPOCH],
                         col.TRAIN_NEG_ELBO: history[-1][col.TRAIN_NEG_ELBO]})

    def on_epoch(m: EpochMetrics, trainer: Trainer) -> None:
        hold.trained(cfg.name, m.epoch)
        metrics = {EPOCH_KEY: {**epoch_row(cfg, m), **node_columns()}, COMMITTED_KEY: False,
                   ATTEMPT_KEY: token, col.EPOCH: m.epoch, col.TRAIN_NEG_ELBO: m.train_neg_elbo}
        if cfg.train.checkpoint_due(m.epoch):
            name = state_name(m.epoch)
            store.write_bytes(f"{mine}/{name}", _torch_bytes(trainer.state_dict()))
            metrics[COMMITTED_KEY] = True
            metrics[CHECKPOINT_KEY] = asdict(Committed(token, name, m.epoch))
        if m.epoch == cfg.train.epochs and keep_model:
            # the trained model alone: what a notebook loads (rlv/trial/saved.py), once the
            # driver has made it the trial's
            store.write_bytes(f"{mine}/{MODEL_FILE}", _torch_bytes(trainer.model.state_dict()))
        tune.report(metrics)
        hold.hold_after(cfg.name, m.epoch)

    result = run_trial(cfg, resume=resume, on_epoch=on_epoch)
    images = {k: base64.b64encode(v).decode("ascii") for k, v in result.images.by_column().items()}
    # the final report commits every epoch: the trial is done and will not be re-run
    tune.report({ROW_KEY: {**result.row, **node_columns(), **gpu_share()}, IMAGES_KEY: images,
                 COMMITTED_KEY: True, ATTEMPT_KEY: token,
                 col.EPOCH: cfg.train.epochs,
                 col.TRAIN_NEG_ELBO: result.epochs[-1].train_neg_elbo})


def decode_images(encoded: dict[str, str]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in encoded.items()}
