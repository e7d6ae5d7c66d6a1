"""Fencing of trial attempts (rlv/store/checkpoints.py): an attempt writes only under its own
token, the driver commits rows and promotes checkpoints and models only for the trial's current
attempt, and what a stale attempt writes after its retry began is read by no one.

Driven directly: the driver's real recorder and store sink get the reports two attempts of one trial would
send (real epoch rows and a real trial row from a tiny run), with a real Tune Trial and a real
store folder, in the order a partition produces: A reports, A is declared failed, B resumes and
reports, then A, thawed, writes and reports once more."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import torch
from ray.tune.experiment import Trial

from rlv import columns as col
from rlv.config import TrialConfig, from_dict
from rlv.service.recorder import SweepRecorder, SweepView
from rlv.service.store_sink import StoreSink
from rlv.service.trainable import (
    ATTEMPT_KEY,
    CHECKPOINT_KEY,
    COMMITTED_KEY,
    EPOCH_KEY,
    HISTORY_KEY,
    IMAGES_KEY,
    ROW_KEY,
)
from rlv.store.checkpoints import attempt_dir, resume_path, state_name, trial_dir
from rlv.store.store import Store
from rlv.trial.loop import EpochMetrics
from rlv.trial.run import epoch_row, run_trial

SWEEP, EPOCHS = "fence", 4


def tiny() -> TrialConfig:
    return from_dict(TrialConfig, {
        "sweep": SWEEP, "data": {"train_size": 256, "test_size": 128},
        "train": {"epochs": EPOCHS, "batch_size": 128, "checkpoint_every": 2},
        "eval": {"fid_samples": 0, "samples": 16, "interpolation_pairs": 2}})


def rows(cfg: TrialConfig, epochs: range, offset: float) -> list[dict]:  # type: ignore[type-arg]
    """Epoch rows of one attempt; `offset` tells the attempts' values apart."""
    return [epoch_row(cfg, EpochMetrics(e, 10.0 + offset + e, 9.0 + offset, -1.0, 0.5))
            for e in epochs]


def checkpoint(folder: str, token: str, epoch: int, payload: bytes) -> dict:  # type: ignore[type-arg]
    """What an attempt does at a checkpoint: its own file, then the report's pointer."""
    path = Path(attempt_dir(folder, token)) / state_name(epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return {"attempt": token, "file": state_name(epoch), "epoch": epoch}


def test_a_stale_attempt_commits_nothing_and_nothing_it_writes_is_read(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    cfg = tiny()
    finished = run_trial(cfg)  # a real row and images for the final report
    opened = Store.open(store)
    fs, folder = opened.fs, trial_dir(opened.root, SWEEP, cfg.name)
    trial = Trial("run_sweep_trial", config={}, trial_id="t1", stub=True,
                  trial_name_creator=lambda t: cfg.name)
    # the driver: its recorder, with the store's sink alone
    driver = SweepRecorder(SweepView(SWEEP, store, total=1), [StoreSink(opened, SWEEP, keep_model=True)])

    def report(result: dict) -> None:  # type: ignore[type-arg]
        driver.on_trial_result(0, [trial], trial, result)

    # attempt A trains epochs 1-2 and checkpoints; the driver promotes A's checkpoint
    for row in rows(cfg, range(1, 3), offset=0.0):
        result = {EPOCH_KEY: row, COMMITTED_KEY: row[col.EPOCH] == 2, ATTEMPT_KEY: "A"}
        if row[col.EPOCH] == 2:
            result[CHECKPOINT_KEY] = checkpoint(folder, "A", 2, b"A at 2")
        report(result)
    assert resume_path(fs, folder) == f"{attempt_dir(folder, 'A')}/{state_name(2)}"
    # A is cut off: Ray declares its node dead and Tune retries the trial as attempt B
    driver.on_trial_recover(0, [trial], trial)
    assert Path(resume_path(fs, folder) or "").read_bytes() == b"A at 2"  # B starts from it
    report({HISTORY_KEY: rows(cfg, range(1, 3), offset=0.0), COMMITTED_KEY: True,
            ATTEMPT_KEY: "B"})
    for row in rows(cfg, range(3, 5), offset=100.0):
        result = {EPOCH_KEY: row, COMMITTED_KEY: row[col.EPOCH] == 4, ATTEMPT_KEY: "B"}
        if row[col.EPOCH] == 4:
            result[CHECKPOINT_KEY] = checkpoint(folder, "B", 4, b"B at 4")
        report(result)
    # A thaws and goes on: its own files, and a report that would commit its epochs 3-4
    stale = checkpoint(folder, "A", 4, b"A at 4, stale")
    (Path(attempt_dir(folder, "A")) / "model.pt").write_bytes(b"A's stale weights")
    for row in rows(cfg, range(3, 5), offset=-100.0):
        report({EPOCH_KEY: row, COMMITTED_KEY: True, ATTEMPT_KEY: "A", CHECKPOINT_KEY: stale})
    assert json.loads(Path(folder, "committed.json").read_text()) == {
        "attempt": "B", "file": state_name(4), "epoch": 4}
    assert Path(resume_path(fs, folder) or "").read_bytes() == b"B at 4"
    assert not Path(attempt_dir(folder, "A"), state_name(2)).exists()  # replaced by B's

    # B finishes: its model becomes the trial's, its row and every epoch land once
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buffer)
    Path(attempt_dir(folder, "B"), "model.pt").write_bytes(buffer.getvalue())
    report({ROW_KEY: finished.row, COMMITTED_KEY: True, ATTEMPT_KEY: "B",
            IMAGES_KEY: {k: "" for k in finished.images.by_column()}})
    driver.on_experiment_end([trial])

    epochs = pd.read_parquet(tmp_path / "store" / "epochs").sort_values(col.EPOCH)
    assert epochs[col.EPOCH].tolist() == [1, 2, 3, 4]
    # epochs 1-2 from A (before it failed), 3-4 from B: none of A's late rows
    expected = [10.0 + 1, 10.0 + 2, 110.0 + 3, 110.0 + 4]
    assert epochs[col.TRAIN_NEG_ELBO].tolist() == expected
    assert pd.read_parquet(tmp_path / "store" / "trials")[col.TRIAL_ID].tolist() == [cfg.name]
    # the trial keeps B's weights alone: A's folder, stale files and all, is gone
    assert sorted(p.name for p in Path(folder).iterdir()) == ["model.pt"]
    assert Path(folder, "model.pt").read_bytes() == buffer.getvalue()
