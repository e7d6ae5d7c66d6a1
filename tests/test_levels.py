"""One tiny trial of every registered level (encoders, priors, inits, data sets): what trains,
what stays frozen (bit-identical after training), and the new levels' own promises."""

from __future__ import annotations

import dataclasses
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.io import savemat
from torch import nn

from rlv import columns as col
from rlv.config import ModelConfig, TrialConfig, from_dict
from rlv.datasets import CIFAR10_BATCHES, CIFAR10_DIR, Cifar10, SplitSizes, Svhn
from rlv.errors import RlvError
from rlv.levels import DATASETS, ENCODERS, INITS, OBJECTIVES, PRIORS
from rlv.sweep.validation import check_trial_config
from rlv.trial.catalog import model_catalog
from rlv.trial.loop import EpochMetrics, Trainer
from rlv.trial.models import build_vae
from rlv.trial.models.inits import LEAKY_SLOPE
from rlv.trial.run import run_trial


def tiny(**sections: dict[str, Any]) -> TrialConfig:
    base: dict[str, Any] = {"data": {"train_size": 256, "test_size": 128},
                            "train": {"epochs": 1, "batch_size": 128},
                            "eval": {"fid_samples": 0, "samples": 4, "interpolation_pairs": 1}}
    for key, values in sections.items():
        base.setdefault(key, {}).update(values)
    return from_dict(TrialConfig, base)


def train(cfg: TrialConfig) -> tuple[dict[str, torch.Tensor], nn.Module, dict[str, Any]]:
    """(initial parameters by name, the trained model, the trial's row) of one tiny trial."""
    dataset = DATASETS.build(cfg.data.dataset)
    fresh = build_vae(cfg.model, channels=dataset.channels, dataset_latent=dataset.latent_dim,
                      seed=cfg.seed, objective=OBJECTIVES.build(cfg.train.objective))
    before = {n: p.detach().clone() for n, p in fresh.named_parameters()}
    trained: list[nn.Module] = []

    def keep(m: EpochMetrics, trainer: Trainer) -> None:
        trained.append(trainer.model)

    result = run_trial(cfg, on_epoch=keep)
    return before, trained[-1], result.row


def moved(before: dict[str, torch.Tensor], model: nn.Module) -> dict[str, bool]:
    return {n: not torch.equal(before[n], p.detach().cpu()) for n, p in model.named_parameters()}


# what each encoder freezes: the parameter-name prefixes under `encoder.` that stay at their start
FROZEN_ENCODER_PART = {"L": None, "PNL": "encoder.trunk.", "NL": "encoder.trunk.",
                       "RKS": "encoder.trunk.", "PRKS": "encoder.trunk."}


@pytest.mark.parametrize("layer", ["fc", "conv"])
@pytest.mark.parametrize("encoder", ENCODERS.names())
def test_every_encoder_trains_what_it_should_and_keeps_the_rest_bit_identical(
        encoder: str, layer: str) -> None:
    cfg = tiny(model={"encoder": encoder, "layer": layer, "rks_width": 64})
    before, model, row = train(cfg)
    changed = moved(before, model)
    frozen = FROZEN_ENCODER_PART.get(encoder, "encoder.trunk.")
    for name, p in model.named_parameters():
        is_frozen = frozen is not None and name.startswith(frozen)
        assert p.requires_grad is not is_frozen, name
        assert changed[name] is not is_frozen, name  # frozen: bit-identical; trainable: moved
    frozen_count = sum(p.numel() for n, p in model.named_parameters() if not p.requires_grad)
    assert row[col.FROZEN_PARAMS] == frozen_count
    assert math.isfinite(row[col.TEST_NEG_ELBO])


@pytest.mark.parametrize("layer,frozen,head", [
    # fc: W (1024 x 64) + its bias + the 64 phases; head 64 -> 2 x 16 (mean, log-variance)
    ("fc", 1024 * 64 + 64 + 64, 64 * 32 + 32),
    # conv: a 16 x 16 stride-16 convolution to 64 channels + bias + phases; a 1 x 1 conv to 2 x 4
    ("conv", 16 * 16 * 64 + 64 + 64, 64 * 8 + 8),
])
def test_prks_is_frozen_cosine_features_and_one_trainable_layer(layer: str, frozen: int,
                                                                 head: int) -> None:
    model = build_vae(ModelConfig(encoder="PRKS", layer=layer, rks_width=64), channels=1,
                      dataset_latent=16, seed=0, objective=OBJECTIVES.build("elbo"))
    enc = model.encoder
    assert sum(p.numel() for p in enc.trunk.parameters()) == frozen
    assert sum(p.numel() for p in enc.head.parameters() if p.requires_grad) == head
    phase = enc.trunk[0].phase
    assert phase.min() >= 0 and phase.max() < 2 * math.pi and phase.std() > 1  # U[0, 2 pi)
    x = torch.rand(3, 1, 32, 32)
    projection = enc.trunk[0].projection(x)  # (3, 64) or (3, 64, 2, 2)
    shape = (1, -1) + (1, 1) * (projection.dim() == 4)
    expected = torch.cos(projection + phase.view(*shape))
    assert torch.allclose(enc.trunk(x), expected)
    mu, logvar = enc(x)
    assert mu.shape == logvar.shape == (3, 16) and logvar.std() > 0  # a learnt variance


@pytest.mark.parametrize("prior", PRIORS.names())
def test_every_prior_trains_in_a_tiny_trial(prior: str) -> None:
    before, model, row = train(tiny(model={"prior": prior}))
    changed = moved(before, model)
    prior_params = [n for n in changed if n.startswith("prior.")]
    assert all(changed[n] for n in prior_params)  # every parameter of a prior learns
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("prior."))
    if prior in ("mog", "vamp"):
        assert prior_params  # learnable means, variances and weights / pseudo-inputs
        assert row[col.FLOW_LOGDET] == 0.0 and row[col.TEST_RT] == row[col.TEST_RT_ELBO]
    assert math.isfinite(row[col.TEST_NEG_ELBO])


@pytest.mark.parametrize("encoder", ["NL", "RKS"])
def test_vamp_with_a_mean_only_encoder_trains_to_the_normal_priors_order(encoder: str) -> None:
    """NL and RKS fix q's variance at 1e-6; the VampPrior's components then learn a variance of
    their own (prior.logvar), and the trained model's test RT stays of the normal prior's order
    (within a factor of two; components of variance 1e-6 made it over 1,000 times the normal
    prior's at init)."""
    before, model, row = train(tiny(model={"prior": "vamp", "encoder": encoder}))
    _, _, normal_row = train(tiny(model={"prior": "normal", "encoder": encoder}))
    changed = moved(before, model)
    assert changed["prior.logvar"] and changed["prior.pseudo_inputs"]
    assert math.isfinite(row[col.TEST_RT]) and math.isfinite(row[col.TEST_NEG_ELBO])
    assert row[col.TEST_RT] >= 2 * normal_row[col.TEST_RT], (row[col.TEST_RT],
                                                              normal_row[col.TEST_RT])


def _largest_linear(model: nn.Module) -> nn.Linear:
    return max((m for m in model.decoder.modules() if isinstance(m, nn.Linear)),
               key=lambda m: m.weight.numel())


@pytest.mark.parametrize("init", INITS.names())
def test_every_init_draws_its_documented_distribution_and_trains(init: str) -> None:
    before, model, row = train(tiny(model={"init": init}))
    layer = _largest_linear(build_vae(ModelConfig(init=init), channels=1, dataset_latent=16,
                                      seed=0, objective=OBJECTIVES.build("elbo")))
    fan_out, fan_in = layer.weight.shape  # (1024, 1024) -> (1024 pixels,) in the fc decoder
    w, gain = layer.weight.detach(), math.sqrt(2 / (1 + LEAKY_SLOPE**2))
    expected_std = {"xavier_uniform": math.sqrt(2 / (fan_in + fan_out)),
                    "xavier_normal": math.sqrt(2 / (fan_in + fan_out)),
                    "kaiming_uniform": gain / math.sqrt(fan_in),
                    "kaiming_normal": gain / math.sqrt(fan_in),
                    "torch_default": 1 / math.sqrt(3 * fan_in)}[init]  # U(+-1/sqrt(fan_in))
    assert w.std().item() == pytest.approx(expected_std, rel=0.02)
    uniform = init.endswith("uniform") or init == "torch_default"
    bound = w.abs().max().item()
    assert (bound <= math.sqrt(3) * expected_std * 1.0001) is uniform  # a normal exceeds it
    assert (layer.bias.abs().max().item() == 0) is (init != "torch_default")
    assert any(moved(before, model).values()) and math.isfinite(row[col.TEST_NEG_ELBO])


def _write_cifar_batches(folder: Path, per_batch: int, seed: int = 0) -> np.ndarray:
    """Synthetic CIFAR-10 python batches (dicts with b"data" (N, 3072) uint8 and b"labels")."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(5 * per_batch, 3, 32, 32), dtype=np.uint8)
    for i, name in enumerate(CIFAR10_BATCHES):
        chunk = images[i * per_batch:(i + 1) * per_batch]
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": chunk.reshape(per_batch, -1), b"labels": [0] * per_batch}, f)
    return images


@pytest.fixture
def small_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir with a small synthetic SVHN .mat and CIFAR-10 folder, and the two data sets
    shrunk to their sizes (the real files hold 73,257 and 50,000 images; the format is the point)."""
    monkeypatch.setenv("RLV_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(Cifar10, "total", 1000)
    monkeypatch.setattr(Cifar10, "sizes", SplitSizes(500, 200, 300))
    monkeypatch.setattr(Svhn, "total", 600)
    monkeypatch.setattr(Svhn, "sizes", SplitSizes(300, 100, 200))
    _write_cifar_batches(tmp_path / "data" / CIFAR10_DIR, 200)
    rng = np.random.default_rng(1)
    svhn = rng.integers(0, 256, size=(32, 32, 3, 600), dtype=np.uint8)  # (H, W, C, N) as .mat
    savemat(tmp_path / "data" / "train_32x32.mat", {"X": svhn})
    return tmp_path / "data"


@pytest.mark.parametrize("dataset", DATASETS.names())
def test_every_data_set_runs_a_tiny_trial(dataset: str, small_datasets: Path) -> None:
    data_dir = None if dataset == "mnist" else str(small_datasets)  # MNIST: the offline copy
    cfg = tiny(data={"dataset": dataset, "data_dir": data_dir}, model={"layer": "conv"})
    check_trial_config(cfg)
    before, model, row = train(cfg)
    channels = {"mnist": 1, "svhn": 3, "cifar10": 3}[dataset]
    assert row[col.DATASET] == dataset and row[col.TRAIN_SIZE] == 256
    assert row[col.LATENT_DIM] == {"mnist": 16, "svhn": 32, "cifar10": 32}[dataset]
    with torch.no_grad():
        assert model.generate(2).shape == (2, channels, 32, 32)
    assert all(moved(before, model).values()) and math.isfinite(row[col.TEST_NEG_ELBO])


def test_cifar10_reads_the_python_batches_in_order(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLV_CACHE_DIR", str(tmp_path / "cache"))

    class TinyCifar(Cifar10):
        total = 50
        sizes = SplitSizes(25, 10, 15)

    images = _write_cifar_batches(tmp_path / CIFAR10_DIR, 10, seed=3)
    assert np.array_equal(TinyCifar().images(str(tmp_path)), images)  # the parent folder
    assert np.array_equal(TinyCifar().images(str(tmp_path / CIFAR10_DIR)), images)  # or itself
    assert Cifar10.sizes.test == 50_000 - 25_000 - 10_000 == 15_000


def test_cifar10_missing_files_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RLV_DATA_DIR", raising=False)
    with pytest.raises(RlvError, match=r"CIFAR-10 not found: .*cifar-10-python.tar.gz.*--data-dir"):
        Cifar10().locate(None)
    (tmp_path / CIFAR10_DIR).mkdir()
    (tmp_path / CIFAR10_DIR / "data_batch_1").write_bytes(b"")
    with pytest.raises(RlvError, match=r"lacks data_batch_2, data_batch_3, data_batch_4, data_batch_5"):
        Cifar10().locate(str(tmp_path))


def test_a_frozen_encoder_batch_norm_keeps_its_scale_but_tracks_the_data() -> None:
    """NL with batch norm: gamma and beta stay bit-identical (frozen), the running mean after one
    training batch is 0.9 * 0 + 0.1 * the batch mean of the first layer's pre-activations (an
    independent computation from its weights), and eval mode normalises with it."""
    cfg = ModelConfig(encoder="NL", batchnorm=True)
    model = build_vae(cfg, channels=1, dataset_latent=16, seed=0, objective=OBJECTIVES.build("elbo"))
    norm = model.encoder.trunk[0][2]  # Flatten, Linear, BatchNorm1d, LeakyReLU
    assert isinstance(norm, nn.BatchNorm1d) and not norm.weight.requires_grad
    linear = model.encoder.trunk[0][1]
    x = torch.rand(64, 1, 32, 32)
    scale = (norm.weight.clone(), norm.bias.clone())
    model.train()
    model(x).neg_elbo.mean().backward()
    pre = x.flatten(1) @ linear.weight.detach().T + linear.bias.detach()  # (64, 256)
    assert torch.allclose(norm.running_mean, 0.1 * pre.mean(0), atol=1e-6)
    assert torch.allclose(norm.running_var, 0.9 + 0.1 * pre.var(0), atol=1e-5)
    assert norm.weight.grad is None and torch.equal(norm.weight, scale[0])
    assert torch.equal(norm.bias, scale[1])
    model.eval()
    with torch.no_grad():
        out = model.encoder.trunk[0](x)
    expected = nn.functional.leaky_relu((pre - norm.running_mean) / torch.sqrt(norm.running_var + 1e-5))
    assert torch.allclose(out, expected, atol=1e-5)


def test_frozen_batch_norm_trains_nothing_in_a_trial_but_its_statistics_move() -> None:
    before, model, _ = train(tiny(model={"encoder": "NL", "batchnorm": True}))
    changed = moved(before, model)
    assert not any(changed[n] for n in changed if n.startswith("encoder."))
    norm = model.encoder.trunk[0][2]
    assert norm.running_mean.abs().sum() > 0 and int(norm.num_batches_tracked) == 2


def test_dropout_acts_in_frozen_layers_in_train_mode_only() -> None:
    base = build_vae(ModelConfig(encoder="NL"), channels=1, dataset_latent=16, seed=0,
                     objective=OBJECTIVES.build("elbo"))
    drop = build_vae(ModelConfig(encoder="NL", dropout=0.5), channels=1, dataset_latent=16,
                     seed=0, objective=OBJECTIVES.build("elbo"))
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(),
                                                 drop.state_dict().values(), strict=True))
    x = torch.rand(8, 1, 32, 32)
    drop.train()
    first, second = drop.encoder(x)[0], drop.encoder(x)[0]
    assert not torch.equal(first, second)  # stochastic although every weight is frozen
    drop.eval()
    base.eval()
    assert torch.equal(drop.encoder(x)[0], base.encoder(x)[0])


def test_kl_warm_up_weighs_rt_in_the_loss_only() -> None:
    """One batch, warm-up over one epoch: RT's weight at that batch is 0, so the mixture prior
    (which only RT reaches) gets a zero gradient and stays bit-identical, while the reported
    train_rt is the unweighted term; without warm-up the prior moves."""
    cfg = tiny(model={"prior": "mog"}, data={"train_size": 128}, train={"warmup_epochs": 1})
    before, model, row = train(cfg)
    changed = moved(before, model)
    assert not any(changed[n] for n in changed if n.startswith("prior."))
    assert any(changed[n] for n in changed if n.startswith("decoder."))
    assert row[col.TRAIN_RT] < -0.1  # the unweighted RT, not 0 * RT
    assert row[col.TRAIN_NEG_ELBO] == pytest.approx(row[col.TRAIN_RE] - row[col.TRAIN_RT])
    before, model, _ = train(tiny(model={"prior": "mog"}, data={"train_size": 128}))
    assert all(v for n, v in moved(before, model).items() if n.startswith("prior."))


def test_the_warm_up_weight_rises_linearly_from_zero_to_one() -> None:
    cfg = tiny(train={"warmup_epochs": 2})
    model = build_vae(cfg.model, channels=1, dataset_latent=16, seed=0,
                      objective=OBJECTIVES.build("elbo"))
    trainer = Trainer(model, torch.zeros(4, 1, 32, 32), cfg.train, 0)
    weights = [trainer.rt_weight(step, 4) for step in range(10)]
    assert weights == [0, 1 / 8, 2 / 8, 3 / 8, 4 / 8, 5 / 8, 6 / 8, 7 / 8, 1, 1]


def test_rlv_models_lists_every_level_with_its_parameter_counts() -> None:
    rows = model_catalog("mnist")
    cells = {(r["layer"], r["prior"], r["encoder"]) for r in rows}
    assert len(rows) == len(cells) == 2 * len(PRIORS.names()) * len(ENCODERS.names())
    assert {"mog", "vamp"} <= {r["prior"] for r in rows} and "PRKS" in {r["encoder"] for r in rows}
    prks = next(r for r in rows if (r["layer"], r["prior"], r["encoder"]) == ("fc", "normal", "PRKS"))
    assert prks["frozen_params"] == 1024 * 1024 + 1024 + 1024  # W, its bias, the phases
    mog = next(r for r in rows if (r["layer"], r["prior"], r["encoder"]) == ("fc", "mog", "L"))
    normal = next(r for r in rows if (r["layer"], r["prior"], r["encoder"]) == ("fc", "normal", "L"))
    assert mog["trainable_params"] - normal["trainable_params"] == 16 * 16 * 2 + 16


def test_rlv_models_counts_the_parameters_batch_norm_adds() -> None:
    """Batch norm adds a scale and a shift per feature of each hidden encoder layer (thesis
    appendix B: fc 256, 128, 64 features; conv 4, 8, 16 channels; PRKS one layer of its
    rks_width 1024 cosine features; RKS none): trainable where the layer learns, else frozen."""
    hidden = {("fc", "L"): (256, 128, 64), ("fc", "PNL"): (256, 128, 64),
              ("fc", "NL"): (256, 128, 64), ("fc", "RKS"): (), ("fc", "PRKS"): (1024,),
              ("conv", "L"): (4, 8, 16), ("conv", "PNL"): (4, 8, 16), ("conv", "NL"): (4, 8, 16),
              ("conv", "RKS"): (), ("conv", "PRKS"): (1024,)}
    learns = {"L": True, "PNL": False, "NL": False, "RKS": False, "PRKS": False}  # hidden layers
    for r in model_catalog("mnist"):
        added = 2 * sum(hidden[(r["layer"], r["encoder"])])
        trainable = r["trainable_params_batchnorm"] - r["trainable_params"]
        frozen = r["frozen_params_batchnorm"] - r["frozen_params"]
        assert (trainable, frozen) == ((added, 0) if learns[r["encoder"]] else (0, added)), r


@pytest.mark.parametrize("layer", ["fc", "conv"])
@pytest.mark.parametrize("encoder", ENCODERS.names())
def test_vamp_with_one_pseudo_input_and_batch_norm_is_refused_exactly_where_it_cannot_run(
        encoder: str, layer: str) -> None:
    """K = 1 pseudo-input is a batch of one for the encoder's batch norm: validation refuses the
    cells whose training step fails, in one line, and lets the others run."""
    cfg = tiny(model={"prior": "vamp", "prior_components": 1, "batchnorm": True,
                      "encoder": encoder, "layer": layer})
    model = build_vae(cfg.model, channels=1, dataset_latent=16, seed=0,
                      objective=OBJECTIVES.build("elbo")).train()
    try:
        model(torch.rand(8, 1, 32, 32)).neg_elbo.mean().backward()
        runs = True
    except ValueError as exc:
        assert "Expected more than 1 value per channel" in str(exc)
        runs = False
    if runs:
        check_trial_config(cfg)
    else:
        with pytest.raises(RlvError, match=r"^prior_components = 1 is not allowed for the vamp "
                                           r"prior with model.batchnorm on fc layers") as info:
            check_trial_config(cfg)
        assert "\n" not in str(info.value)
        check_trial_config(dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, prior_components=2)))
