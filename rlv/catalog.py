"""`rlv models`: every cell of the design with its parameter counts, from the built models."""

from __future__ import annotations

from typing import Any

from rlv.config import ModelConfig
from rlv.data import DATASETS
from rlv.models import ENCODERS, LAYERS, PRIORS, build_vae, parameter_counts
from rlv.objective import OBJECTIVES


def model_catalog(dataset: str) -> list[dict[str, Any]]:
    """One dict per (layer, prior, encoder) cell: latent size, trainable and frozen parameters."""
    data = DATASETS.build(dataset)
    rows = []
    for layer in LAYERS.names():
        for prior in PRIORS.names():
            for encoder in ENCODERS.names():
                cfg = ModelConfig(encoder=encoder, layer=layer, prior=prior)
                model = build_vae(cfg, channels=data.channels, dataset_latent=data.latent_dim,
                                  seed=0, objective=OBJECTIVES.build("elbo"))
                trainable, frozen = parameter_counts(model)
                rows.append({"dataset": dataset, "layer": layer, "prior": prior,
                             "encoder": encoder, "latent_dim": data.latent_dim,
                             "trainable_params": trainable, "frozen_params": frozen})
    return rows
