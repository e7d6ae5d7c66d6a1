"""`rlv models`: every cell of the design with its parameter counts, from the built models."""

from __future__ import annotations

from typing import Any

from rlv.config import ModelConfig
from rlv.levels import DATASETS, ENCODERS, LAYERS, OBJECTIVES, PRIORS
from rlv.trial.models import build_vae, parameter_counts


def model_catalog(dataset: str) -> list[dict[str, Any]]:
    """One dict per (layer, prior, encoder) cell: latent size, trainable and frozen parameters,
    and both again with model.batchnorm (its scale and shift per hidden feature: trainable in a
    learnable layer, frozen in a frozen one; its running statistics are no parameters)."""
    data = DATASETS.build(dataset)
    rows = []
    for layer in LAYERS.names():
        for prior in PRIORS.names():
            for encoder in ENCODERS.names():
                counts = {}
                for batchnorm in (False, True):
                    cfg = ModelConfig(encoder=encoder, layer=layer, prior=prior,
                                      batchnorm=batchnorm)
                    model = build_vae(cfg, channels=data.channels,
                                      dataset_latent=data.latent_dim, seed=0,
                                      objective=OBJECTIVES.build("elbo"))
                    counts[batchnorm] = parameter_counts(model)
                rows.append({"dataset": dataset, "layer": layer, "prior": prior,
                             "encoder": encoder, "latent_dim": data.latent_dim,
                             "trainable_params": counts[False][0],
                             "frozen_params": counts[False][1],
                             "trainable_params_batchnorm": counts[True][0],
                             "frozen_params_batchnorm": counts[True][1]})
    return rows
