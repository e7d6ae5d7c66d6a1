"""Checks of a TrialConfig against the registries and the data set, before anything runs.

Every message names the bad value and what is allowed, in one line (RlvError).
"""

from __future__ import annotations

from rlv.config import PRECISIONS, TEST_OVERLAPS, TrialConfig
from rlv.datasets import effective_sizes
from rlv.errors import RlvError
from rlv.levels import DATASETS, ENCODERS, INITS, LAYERS, OBJECTIVES, PRIORS


def _positive(name: str, value: int | float | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise RlvError(f"{name} = {value} is not allowed; it must be {bound}")


def check_trial_config(cfg: TrialConfig) -> None:
    """Raise RlvError on the first setting that cannot run."""
    ENCODERS.get(cfg.model.encoder)
    LAYERS.get(cfg.model.layer)
    PRIORS.get(cfg.model.prior)
    OBJECTIVES.get(cfg.train.objective)
    INITS.get(cfg.model.init)
    dataset = DATASETS.build(cfg.data.dataset)
    if cfg.train.precision not in PRECISIONS:
        raise RlvError(f"unknown precision {cfg.train.precision!r}; choose one of: "
                       f"{', '.join(PRECISIONS)}")
    if cfg.data.test_overlap not in TEST_OVERLAPS:
        raise RlvError(f"unknown data.test_overlap {cfg.data.test_overlap!r}; choose one of: "
                       f"{', '.join(TEST_OVERLAPS)}")
    for name, value in (("epochs", cfg.train.epochs), ("batch_size", cfg.train.batch_size),
                        ("lr", cfg.train.lr), ("checkpoint_every", cfg.train.checkpoint_every),
                        ("train_size", cfg.data.train_size), ("test_size", cfg.data.test_size),
                        ("latent_dim", cfg.model.latent_dim), ("sigma2", cfg.model.sigma2),
                        ("flow_hidden", cfg.model.flow_hidden),
                        ("prior_components", cfg.model.prior_components),
                        ("rks_width", cfg.model.rks_width),
                        ("fid_batch_size", cfg.eval.fid_batch_size),
                        ("reconstructions", cfg.eval.reconstructions),
                        ("samples", cfg.eval.samples),
                        ("interpolation_pairs", cfg.eval.interpolation_pairs),
                        ("interpolation_steps", cfg.eval.interpolation_steps),
                        ("kl_weight", cfg.train.kl_weight)):
        _positive(name, value)
    _positive("fid_samples", cfg.eval.fid_samples, allow_zero=True)
    if cfg.eval.fid_samples == 1:
        raise RlvError("fid_samples = 1 is not allowed: FID needs a covariance, so 0 (skip FID) "
                       "or at least 2 samples")
    _positive("seed", cfg.seed, allow_zero=True)
    _positive("warmup_epochs", cfg.train.warmup_epochs, allow_zero=True)
    _positive("test_every", cfg.eval.test_every, allow_zero=True)
    if not 0 <= cfg.model.dropout < 1:
        raise RlvError(f"dropout = {cfg.model.dropout} is not allowed; it must be in [0, 1)")
    train_n, test_n = effective_sizes(dataset, cfg.data)
    if train_n > dataset.sizes.train:
        raise RlvError(f"train_size = {train_n} is too large; {dataset.name}'s training split "
                       f"holds {dataset.sizes.train}")
    if test_n > dataset.sizes.test:
        raise RlvError(f"test_size = {test_n} is too large; {dataset.name}'s test split "
                       f"holds {dataset.sizes.test}")
    if cfg.eval.fid_samples > train_n:
        raise RlvError(f"fid_samples = {cfg.eval.fid_samples} exceeds the {train_n} training "
                       "images FID compares against; lower it or raise train_size")
    if cfg.eval.reconstructions > test_n:
        raise RlvError(f"reconstructions = {cfg.eval.reconstructions} exceeds test_size = {test_n}")
    if cfg.model.batchnorm and train_n % cfg.train.batch_size == 1:
        raise RlvError(f"train_size = {train_n} leaves a last batch of one image, which batch "
                       f"norm cannot normalise; change train_size or batch_size = "
                       f"{cfg.train.batch_size}")
    # the VampPrior's K pseudo-inputs pass through the encoder as one batch; in fc layers batch
    # norm normalises each feature over the batch, which needs two values (conv layers have the
    # positions of a feature map too, and RKS has no hidden layer, so no batch norm)
    if (cfg.model.prior == "vamp" and cfg.model.prior_components == 1 and cfg.model.batchnorm
            and cfg.model.layer == "fc" and cfg.model.encoder != "RKS"):
        raise RlvError("prior_components = 1 is not allowed for the vamp prior with "
                       "model.batchnorm on fc layers: batch norm cannot normalise a batch of one "
                       "pseudo-input; use prior_components >= 2 or batchnorm false")
    dim = cfg.model.resolved_latent_dim(dataset.latent_dim)
    if cfg.model.layer == "conv" and dim % 4:
        raise RlvError(f"latent_dim = {dim} must be a multiple of 4 for conv layers "
                       "(the latent is D/4 channels on a 2 x 2 grid)")
    if cfg.model.prior in ("flow2", "flow6") and dim % 2:
        raise RlvError(f"latent_dim = {dim} must be even for the flow priors (they split z in halves)")
