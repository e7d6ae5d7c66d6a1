"""The synthetic store the store benchmarks read (store_read.py, board_first_render.py): one
builder, so that both time the same shape, the shape of benchmarks/sweep_scale.py's big sweep as
its driver leaves it, without the 10 minutes of running its trials.

The thesis's 24 cells x seeds, planned by rlv itself from a sweep spec; rows as trials report
them (metrics following a planted additive model with noise, a learning curve per trial, data
sizes, latent size, timings, device and host; no FID, images or versions), written by rlv's own
StoreWriter in batches as the driver's 10-second flushes leave them, the sweep's manifest, and
the status file: ended, or (`mid_run`) with trials running, one failed and the rest pending.
Imports this checkout's rlv: put it on sys.path first.
"""

from __future__ import annotations

import math
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from rlv import columns as col
from rlv.config import TrialConfig
from rlv.levels import DATASETS
from rlv.store.manifest import write_manifest
from rlv.store.plan import plan_sweep
from rlv.store.store import Store
from rlv.store.writer import StoreWriter
from rlv.sweep.spec import parse_sweep

CELLS = {"encoder": ["L", "PNL", "NL", "RKS"], "layer": ["fc", "conv"],
         "prior": ["normal", "flow2", "flow6"]}
EFFECT = {"L": 0.0, "PNL": 5.0, "NL": 15.0, "RKS": 10.0, "fc": 0.0, "conv": 2.0, "normal": 0.0,
          "flow2": -3.0, "flow6": -6.0}
PER_FLUSH = 40  # trials per batch file: what a 2-CPU driver's 10-second flushes hold

Flush = int | tuple[int, int]  # trials per batch file, or the (least, most) each batch draws


def build_store(root: Path, trials: int, sweep: str = "scale", epochs: int = 1,
                mid_run: bool = False, flush: Flush = PER_FLUSH) -> int:
    """A sweep of `trials` trials (24 cells x seeds) as its driver leaves the store: finished,
    or (`mid_run`) with the last seeds' trials partly finished, three running, one failed and
    the rest pending, its driver this process. Returns the flushes that wrote, one batch file per
    table each (mid-run, the trials table may have fewer: unfinished trials have no trial row).

    `flush` is the trials per flush: a fixed number, or (least, most) for a size drawn anew per
    batch from the builder's generator, as flushes of a driver's timer vary."""
    seeds = math.ceil(trials / 24)
    spec = parse_sweep({"name": sweep, "store": str(root), "factors": CELLS, "seeds": seeds,
                        "settings": {"data": {"train_size": 64, "test_size": 64},
                                     "train": {"epochs": epochs, "batch_size": 64},
                                     "eval": {"fid_samples": 0}},
                        "resources": {"cpu": 1, "gpu": 0}, "keep_model": False}, source=sweep)
    store = Store.open(root)
    plan = plan_sweep(spec, store)
    configs = plan.trial_configs()
    write_manifest(store, plan.manifest, trials_run=len(configs))
    writer = StoreWriter(store, sweep)
    rng = np.random.default_rng(0)
    started = datetime(2025, 1, 1, tzinfo=UTC)
    next_flush, flushes = _batch_size(flush, rng), 0
    late, status = _mid_run(configs, seeds, epochs) if mid_run else (set(), {})
    for k, cfg in enumerate(configs):
        _queue_trial(writer, cfg, rng, epochs, status, pending=cfg.name in late,
                     begun=started + timedelta(seconds=2 * k))
        if k + 1 == next_flush:
            flushes += _flush(writer)
            next_flush += _batch_size(flush, rng)
    flushes += _flush(writer)
    writer.write_status({"sweep": sweep, "updated_at": datetime.now(UTC).isoformat(),
                         "ended": not mid_run, "driver": f"{socket.gethostname()}:{os.getpid()}",
                         "trials": status})
    return flushes


def _batch_size(flush: Flush, rng: np.random.Generator) -> int:
    """The next batch's trials; a range draws from `rng` (before the batch's own numbers)."""
    if isinstance(flush, int):
        return flush
    least, most = flush
    return int(rng.integers(least, most + 1))


def _flush(writer: StoreWriter) -> int:
    """1 if the writer had rows to write (and wrote them), else 0: no empty batch files."""
    if not writer.queued:
        return 0
    writer.flush()
    return 1


def _mid_run(configs: list[TrialConfig], seeds: int,
             epochs: int) -> tuple[set[str], dict[str, dict[str, Any]]]:
    """The trials a sweep mid-run has not finished, and the status file's trials. The configs
    run cell by cell, seeds inner: the seeds from 60% on are unfinished, and in the first of them
    the cells from 14 on, of which 14-16 are running (half their epochs done) and 17 failed; the
    other unfinished trials are pending (not in the status file)."""
    cut = max(2, math.ceil(0.6 * seeds))
    late: set[str] = set()
    status: dict[str, dict[str, Any]] = {}
    for k, cfg in enumerate(configs):
        cell = k // seeds
        if cfg.seed > cut or (cfg.seed == cut and cell >= 14):
            late.add(cfg.name)
        if cfg.seed == cut and 14 <= cell < 17:
            status[cfg.name] = {"status": "RUNNING", "epoch": max(1, epochs // 2),
                                "node": "127.0.0.1 pid 1"}
        elif cfg.seed == cut and cell == 17:
            status[cfg.name] = {"status": "ERROR", "error": "RlvError: the loss diverged (nan) "
                                                            "at epoch 3"}
    return late, status


def _queue_trial(writer: StoreWriter, cfg: TrialConfig, rng: np.random.Generator, epochs: int,
                 status: dict[str, dict[str, Any]], pending: bool, begun: datetime) -> None:
    """Queue one trial's epoch rows and, unless it is `pending`, its trial row. A pending trial
    in `status` (running or failed) has half its epochs' rows, any other none."""
    m = cfg.model
    effect = EFFECT[m.encoder] + EFFECT[m.layer] + EFFECT[m.prior] + rng.normal(0, 0.5)
    levels = {col.ENCODER: m.encoder, col.LAYER: m.layer, col.PRIOR: m.prior,
              col.DATASET: cfg.data.dataset, col.OBJECTIVE: cfg.train.objective,
              col.SEED: cfg.seed}
    epoch_s = 0.05 + abs(rng.normal(0, 0.01))
    curve = [60 / e + rng.normal(0, 2) for e in range(1, epochs + 1)]  # (epochs,)
    ran = (max(1, epochs // 2) if cfg.name in status else 0) if pending else epochs
    writer.queue_epochs([{col.TRIAL_ID: cfg.name, col.EPOCH: e, **levels,
                          col.TRAIN_NEG_ELBO: 545 + effect + curve[e - 1],
                          col.TRAIN_RE: 525 + effect + curve[e - 1],
                          col.TRAIN_RT: -20 - effect / 4, col.EPOCH_TIME_S: epoch_s}
                         for e in range(1, ran + 1)])
    if pending:
        return
    writer.queue_trial({
        col.TRIAL_ID: cfg.name, **levels, col.SWEEP_FACTORS: ",".join(CELLS),
        col.EPOCHS: epochs,
        col.LATENT_DIM: m.resolved_latent_dim(DATASETS.get(cfg.data.dataset).cls.latent_dim),
        col.TRAIN_SIZE: cfg.data.train_size, col.TEST_SIZE: cfg.data.test_size,
        col.TEST_NEG_ELBO: 540 + effect + rng.normal(), col.TEST_RE: 520 + effect + rng.normal(),
        col.TEST_RT: -20 - effect / 4 + rng.normal(),
        col.TRAIN_NEG_ELBO: 545 + effect + curve[-1], col.TRAIN_RE: 525 + effect + curve[-1],
        col.TRAIN_RT: -20 - effect / 4, col.FID: float("nan"), col.FID_SAMPLES: 0,
        col.EPOCH_TIME_S: epoch_s, col.DEVICE: "cpu", col.HOSTNAME: socket.gethostname(),
        col.STARTED_AT: begun.isoformat(),
        col.FINISHED_AT: (begun + timedelta(seconds=epochs * epoch_s + 0.3)).isoformat(),
        col.TRIAL_SECONDS: epochs * epoch_s + 0.3, col.CONFIG: cfg.to_json()}, {})
