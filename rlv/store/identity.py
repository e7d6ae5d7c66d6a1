"""What a trial is, by content: the settings that determine its result, and a key for them.

A trial is identified by its resolved TrialConfig, not by its name: a sweep that later makes
`model.latent_dim` a factor names its trials `...-latent_dim16-s0`, yet the trials that ran with
the data set's latent size 16 before are the same experiment and count as that level. So:

- naming fields (`sweep`, `trial_id`, `factors`) and settings that change no number of the result
  (where the data lies, how often to checkpoint) are left out;
- defaults that depend on the data set are resolved (latent_dim None -> 16 on MNIST, sizes None ->
  the thesis's split), so "not given" and "given as the default" are one trial;
- settings equal to TrialConfig's own default are left out of the key, so a setting that a later
  rlv adds (with a default that keeps the old behaviour) does not make old trials new ones.

A cell's key (everything but the seed) is hashed once; a trial's key is `CELL-sSEED`, so the keys
of a grid of 100,000 seeds cost what its cells cost. Neither torch nor Ray.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from typing import Any

from rlv.config import TrialConfig
from rlv.errors import RlvError

NAMING_FIELDS = ("sweep", "trial_id", "factors", "seed")  # not settings (the seed is in the key)
# change no number of a result (test_every's evaluations fork the RNG: training is the same)
NOT_RESULT = ("data.data_dir", "train.checkpoint_every", "eval.test_every")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


@cache
def _dataset_defaults(name: str) -> tuple[int, int, int]:
    """(latent_dim, train size, test size) that "not given" means for data set `name`."""
    from rlv.levels import DATASETS  # numpy-only data set classes (imported by path)

    dataset = DATASETS.build(name)
    return dataset.latent_dim, dataset.sizes.train, dataset.sizes.test


@cache
def _defaults() -> dict[str, Any]:
    return flatten(TrialConfig().to_dict())


def result_settings(cfg: TrialConfig) -> dict[str, Any]:
    """The flat settings of `cfg` that determine its result, with data-set defaults resolved
    (all of them, defaults included: what the store keeps and compares)."""
    flat = flatten(cfg.to_dict())
    for name in NAMING_FIELDS + NOT_RESULT:
        flat.pop(name, None)
    latent, train, test = _dataset_defaults(cfg.data.dataset)
    for path, value in (("model.latent_dim", latent), ("data.train_size", train),
                        ("data.test_size", test)):
        if flat.get(path) is None:
            flat[path] = value
    return flat


def cell_key(settings: dict[str, Any]) -> str:
    """A short hash of the result settings that differ from TrialConfig's defaults."""
    defaults = _defaults()
    marker = object()
    asked = {k: v for k, v in settings.items() if defaults.get(k, marker) != v}
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()[:16]


def trial_key(cell: str, seed: int) -> str:
    return f"{cell}-s{seed}"


def config_key(cfg: TrialConfig) -> str:
    """The key of one trial from its config."""
    return trial_key(cell_key(result_settings(cfg)), cfg.seed)


def stored_config_key(config_json: str, where: str) -> str:
    """The key of a trial from the `config` column of its stored row."""
    try:
        return config_key(TrialConfig.from_dict(json.loads(config_json)))
    except (json.JSONDecodeError, TypeError, RlvError) as exc:
        raise RlvError(f"{where}: its config column is not a TrialConfig ({exc}); move the "
                       "file away or launch the sweep into another store") from None
