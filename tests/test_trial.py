"""One trial end to end, outside Ray: the row it produces, resuming, and determinism."""

from __future__ import annotations

import io

import pytest
import torch
from crafted import crafted_checkpoint
from PIL import Image

from rlv import columns as col
from rlv.config import TrialConfig, from_dict
from rlv.errors import RlvError
from rlv.trial.loop import EpochMetrics, Trainer, read_state
from rlv.trial.run import run_trial

TRIAL_COLUMNS = [
    col.TRIAL_ID, col.DATASET, col.ENCODER, col.LAYER, col.PRIOR, col.SEED, col.EPOCHS,
    col.LATENT_DIM, col.TEST_NEG_ELBO, col.TEST_RE, col.TEST_RT, col.TRAIN_NEG_ELBO, col.TRAIN_RE,
    col.TRAIN_RT, col.FID, col.FID_SAMPLES, col.EPOCH_TIME_S, col.TRAINABLE_PARAMS, col.DEVICE,
    col.STARTED_AT, col.FINISHED_AT, col.RLV_VERSION, col.TORCH_VERSION, col.RAY_VERSION,
    col.CONFIG, col.TEST_RT_ELBO, col.FLOW_LOGDET, col.GAP_NEG_ELBO, col.GAP_RE, col.GAP_RT,
]


def tiny(**sections: dict) -> TrialConfig:  # type: ignore[type-arg]
    base: dict = {"data": {"train_size": 512, "test_size": 256},  # type: ignore[type-arg]
                  "train": {"epochs": 2, "batch_size": 128},
                  "eval": {"fid_samples": 0, "samples": 16, "interpolation_pairs": 2}}
    for key, values in sections.items():
        base.setdefault(key, {}).update(values)
    return from_dict(TrialConfig, base)


def test_a_trial_reports_every_column_of_the_store_contract() -> None:
    cfg = tiny(model={"encoder": "PNL", "layer": "conv", "prior": "flow2"})
    result = run_trial(cfg)
    row = result.row
    assert set(TRIAL_COLUMNS) <= set(row), set(TRIAL_COLUMNS) - set(row)
    assert row[col.TRIAL_ID] == "PNL-conv-flow2-s0"
    assert row[col.TEST_NEG_ELBO] == pytest.approx(row[col.TEST_RE] - row[col.TEST_RT])
    assert row[col.GAP_RE] == pytest.approx(row[col.TEST_RE] - row[col.TRAIN_RE])  # + = test worse
    assert row[col.GAP_RT] == pytest.approx(row[col.TRAIN_RT] - row[col.TEST_RT])
    assert row[col.TRAIN_NEG_ELBO] == result.epochs[-1].train_neg_elbo
    assert len(result.epochs) == 2 and [m.epoch for m in result.epochs] == [1, 2]
    assert TrialConfig.from_dict(__import__("json").loads(row[col.CONFIG])) == cfg
    for png, size in ((result.images.reconstructions, (8, 2)), (result.images.samples, (8, 2)),
                      (result.images.interpolations, (7, 2))):
        width, height = Image.open(io.BytesIO(png)).size
        assert (width, height) == (size[0] * 34 + 2, size[1] * 34 + 2)


def test_training_lowers_the_loss() -> None:
    result = run_trial(tiny(model={"encoder": "L"}, train={"epochs": 3}))
    first, last = result.epochs[0], result.epochs[-1]
    assert last.train_neg_elbo < first.train_neg_elbo


def test_resuming_from_a_checkpoint_continues_the_same_run() -> None:
    """Two epochs, a saved state, two more epochs == four epochs straight (CPU is deterministic)."""
    cfg = tiny(model={"encoder": "L", "prior": "flow2"}, train={"epochs": 4})
    straight = run_trial(cfg)
    saved: dict = {}

    def stop_after_two(m: EpochMetrics, trainer: Trainer) -> None:
        if m.epoch == 2:
            saved.update(trainer.state_dict())
            raise KeyboardInterrupt  # the trial dies here

    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, on_epoch=stop_after_two)
    buffer = io.BytesIO()
    torch.save(saved, buffer)  # as the trainable writes it, and reads it back as data only
    resumed = run_trial(cfg, resume=read_state(buffer.getvalue(), "state.pt"))
    assert [m.epoch for m in resumed.epochs] == [1, 2, 3, 4]
    for a, b in zip(straight.epochs, resumed.epochs, strict=True):
        assert a.train_neg_elbo == pytest.approx(b.train_neg_elbo, rel=1e-6)
    assert straight.row[col.TEST_NEG_ELBO] == pytest.approx(resumed.row[col.TEST_NEG_ELBO], rel=1e-6)


def test_thesis_objective_reports_the_true_rt_beside_its_own() -> None:
    result = run_trial(tiny(model={"prior": "flow6"}, train={"objective": "thesis"}))
    row = result.row
    d = row[col.LATENT_DIM]
    assert row[col.TEST_RT] - row[col.TEST_RT_ELBO] == pytest.approx(
        row[col.FLOW_LOGDET] * (1 - 1 / d), abs=1e-3)


def test_bf16_autocast_trains_to_a_similar_loss() -> None:
    settings = {"epochs": 3, "batch_size": 64}
    fp32 = run_trial(tiny(data={"train_size": 1024}, train=settings))
    bf16 = run_trial(tiny(data={"train_size": 1024}, train={**settings, "precision": "bf16"}))
    a, b = fp32.epochs[-1].train_neg_elbo, bf16.epochs[-1].train_neg_elbo
    assert abs(a - b) / a < 0.05, (a, b)
    assert torch.get_default_dtype() == torch.float32


def test_a_checkpoint_that_would_run_code_or_is_corrupt_is_refused_naming_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "ran"
    crafted = crafted_checkpoint(str(marker))
    # the crafted file really is code: an ordinary unpickling runs it
    torch.load(io.BytesIO(crafted), weights_only=False)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(RlvError, match=r"^checkpoint STORE/x/state.pt is not a valid rlv checkpoint"):
        read_state(crafted, "STORE/x/state.pt")
    assert not marker.exists()
    with pytest.raises(RlvError, match="state.pt is not a valid rlv checkpoint"):
        read_state(b"PK\x03\x04 torn", "state.pt")
    buffer = io.BytesIO()
    torch.save({"weights": torch.zeros(2)}, buffer)  # a valid torch file, not a trainer state
    with pytest.raises(RlvError, match=r"state.pt is not a valid rlv checkpoint \(not a trainer"):
        read_state(buffer.getvalue(), "state.pt")
