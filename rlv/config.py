"""Typed, frozen configs: one per component, composed into the TrialConfig a trial receives.

A TrialConfig round-trips through a plain dict (what Ray Tune passes to a trial and what the store
saves with every row). `from_dict` is strict: an unknown key or a wrong type is an RlvError naming
it and the allowed keys, so a misspelt setting never silently takes its default. The defaults here
are the thesis's (table 4.1) and are stated nowhere else.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

from rlv.errors import RlvError

C = TypeVar("C")

PRECISIONS = ("fp32", "bf16")  # TrainConfig.precision
# DataConfig.test_overlap: how a seed's test images are drawn. disjoint: the split of thesis 4.5
# (train, validation and test cut from one permutation); independent: the test images are drawn
# from a second, independent permutation of the same images, so about train/total of them (25/60 on
# MNIST) are training images too. Only for testing an explanation of the thesis's fc numbers.
TEST_OVERLAPS = ("disjoint", "independent")


@dataclass(frozen=True)
class ModelConfig:
    """Which VAE: the three model factors plus the sizes that follow from the data set."""

    encoder: str = "L"  # L | PNL | NL | RKS | PRKS
    layer: str = "fc"  # fc | conv
    prior: str = "normal"  # normal | flow2 | flow6 | mog | vamp
    latent_dim: int | None = None  # None: the data set's (16 on MNIST, 32 on SVHN and CIFAR-10)
    sigma2: float = 1e-6  # constant variance of the mean-only encoders (NL, RKS)
    flow_hidden: int = 64  # width of the RealNVP scale and translation nets
    prior_components: int = 16  # K of the mixture priors (mog: Gaussians, vamp: pseudo-inputs)
    rks_width: int = 1024  # random cosine features of the PRKS encoder
    init: str = "xavier_uniform"  # weight initialisation of encoder and decoder (rlv/levels.py INITS)
    dropout: float = 0.0  # dropout rate after the encoder's hidden layers (frozen ones too)
    batchnorm: bool = False  # batch norm after the encoder's hidden layers

    def resolved_latent_dim(self, dataset_latent: int) -> int:
        """The latent size: this config's, else the data set's (16 on MNIST, 32 on SVHN)."""
        return self.latent_dim if self.latent_dim is not None else dataset_latent


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist"  # a data set of rlv/levels.py DATASETS: mnist | svhn | cifar10
    data_dir: str | None = None  # folder with the data set's files; None: $RLV_DATA_DIR or offline copy
    train_size: int | None = None  # None: the thesis's 25,000; smaller for quick runs
    test_size: int | None = None  # None: the whole test split (25,000 MNIST, 38,257 SVHN)
    test_overlap: str = "disjoint"  # one of TEST_OVERLAPS: disjoint (thesis 4.5) | independent


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 250
    batch_size: int = 256
    lr: float = 1e-3
    objective: str = "elbo"  # elbo (correct) | thesis (the thesis's flow-prior RT)
    precision: str = "fp32"  # one of PRECISIONS: fp32 | bf16 (autocast; opt-in)
    checkpoint_every: int = 10  # epochs between checkpoints (Ray Tune resumes from the last)
    warmup_epochs: int = 0  # KL warm-up: the RT weight rises linearly 0 -> 1 over these epochs
    # RT's weight in the optimised loss, RE - kl_weight * RT (the metrics stay unweighted): 1 is
    # the ELBO; D (the latent size) optimises the KL summed over dimensions while the tables
    # average it, one reading of the thesis's code
    kl_weight: float = 1.0

    def checkpoint_due(self, epoch: int) -> bool:
        """Checkpoint after this epoch? Every `checkpoint_every` epochs and after the last one,
        so a trial that fails in evaluation or FID resumes there rather than retraining."""
        return epoch % self.checkpoint_every == 0 or epoch == self.epochs


@dataclass(frozen=True)
class EvalConfig:
    fid_samples: int = 10_000  # generated and real images for FID; 0 skips FID
    fid_batch_size: int | None = None  # None: 16 on a CPU (fastest there), 100 on a GPU
    reconstructions: int = 8
    samples: int = 64
    interpolation_pairs: int = 4
    interpolation_steps: int = 6  # intervals between the two end points (thesis: six)
    # epochs between test-set evaluations during training (their terms go into the epochs table
    # as test_neg_elbo, test_re, test_rt); 0: only after the last epoch, as the thesis does
    test_every: int = 0

    def test_due(self, epoch: int) -> bool:
        """Evaluate the test split after this (1-based) epoch?"""
        return self.test_every > 0 and epoch % self.test_every == 0


@dataclass(frozen=True)
class TrialConfig:
    """Everything a trial needs; a row of the store carries it, so any row can be re-run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0  # draws the data split and the (frozen) initial weights
    sweep: str = "adhoc"
    trial_id: str = ""  # empty: derived from the factors, e.g. NL-conv-flow6-s3
    # the sweep's factor columns in trial-name order (rlv.columns.SWEEP_FACTORS), e.g.
    # ("encoder", "layer", "prior", "latent_dim"); settings made factors by their section.field
    # ("model.latent_dim"); empty outside a sweep
    factors: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        return from_dict(cls, data)

    @property
    def name(self) -> str:
        """The trial's id: given, or `encoder-layer-prior[-objective]-sSEED`."""
        if self.trial_id:
            return self.trial_id
        return trial_name(self, ("objective",) if self.train.objective != "elbo" else ())

    def setting(self, path: str) -> Any:
        """The value of setting `section.field` (e.g. "model.latent_dim")."""
        section, _, key = path.partition(".")
        return getattr(getattr(self, section), key)

    def factor_columns(self) -> tuple[str, ...]:
        """The sweep's factor columns (rlv.columns.SWEEP_FACTORS), a setting by its field name;
        outside a sweep, the factors its name shows."""
        named = self.factors or ("encoder", "layer", "prior") + (
            ("objective",) if self.train.objective != "elbo" else ())
        return tuple(setting_column(f) for f in named)


# the sections of a TrialConfig that hold settings (what a sweep's `settings` and `factors` name)
SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig,
                             "eval": EvalConfig}


def setting_column(factor: str) -> str:
    """The store column of a factor: a setting `section.field` by its field, a named one as is."""
    return factor.rpartition(".")[2]


def level_label(value: Any) -> str:
    """A level as a trial id shows it: 8, 0.001, 0.0010000001, 0, true, kaiming_normal.

    A float prints in its short `:g` form (0, 1e-05: the ids of the stores so far) where that
    form reads back as the same number, else in its shortest exact form (repr): `:g` keeps six
    digits, so 0.001 and 0.0010000001 would both print 0.001 and two trials share one id. Two
    different floats never share a label: each label reads back as its own number."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def trial_name(cfg: TrialConfig, extra: tuple[str, ...] = ()) -> str:
    """`NL-conv-flow6-s3`; `extra` adds the levels of "dataset" (first) or "objective", and of
    settings made factors (`model.latent_dim` -> `...-latent_dim8-s3`, in the order given)."""
    parts = [cfg.model.encoder, cfg.model.layer, cfg.model.prior]
    if "objective" in extra:
        parts.append(cfg.train.objective)
    if "dataset" in extra:
        parts.insert(0, cfg.data.dataset)
    for factor in extra:
        if "." in factor:
            parts.append(f"{setting_column(factor)}{level_label(cfg.setting(factor))}")
    return "-".join(parts) + f"-s{cfg.seed}"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_value(path: str, value: Any, tp: Any) -> Any:
    """Return `value` coerced to `tp` (int -> float only), or raise naming `path`."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(path, value, option)
            except RlvError:
                continue
        allowed = " or ".join("null" if o is type(None) else _type_name(o) for o in options)
        raise RlvError(f"{path} = {value!r} has the wrong type; expected {allowed}")
    if origin is tuple:  # tuple[str, ...]: a list in JSON and YAML
        if not isinstance(value, list | tuple):
            raise RlvError(f"{path} = {value!r} has the wrong type; expected a list")
        item = typing.get_args(tp)[0]
        return tuple(_check_value(f"{path}[{i}]", v, item) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RlvError(f"{path} must be a mapping of settings, got {value!r}")
        return from_dict(tp, value, prefix=f"{path}.")  # type: ignore[arg-type]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise RlvError(f"{path} = {value!r} has the wrong type; expected {_type_name(tp)}")
    if not isinstance(value, tp):
        raise RlvError(f"{path} = {value!r} has the wrong type; expected {_type_name(tp)}")
    return value


def from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    if unknown:
        raise RlvError(
            f"unknown setting '{prefix}{unknown[0]}'; allowed: {', '.join(sorted(fields))}"
        )
    kwargs = {key: _check_value(prefix + key, value, hints[key]) for key, value in data.items()}
    return cls(**kwargs)
