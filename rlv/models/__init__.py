"""The thesis's VAEs: layer types, encoders and priors (registries) and the model that joins them."""

from rlv.models.encoders import ENCODERS, Encoder
from rlv.models.layers import LAYERS, LayerType
from rlv.models.priors import PRIORS, Prior
from rlv.models.vae import VAE, build_vae, parameter_counts

__all__ = [
    "ENCODERS", "LAYERS", "PRIORS", "VAE", "Encoder", "LayerType", "Prior",
    "build_vae", "parameter_counts",
]
