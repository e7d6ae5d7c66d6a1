"""The thesis's VAEs: layer types, encoders and priors (named in rlv/levels.py) and the model that
joins them."""

from rlv.trial.models.encoders import Encoder
from rlv.trial.models.layers import LayerType
from rlv.trial.models.priors import Prior
from rlv.trial.models.vae import VAE, build_vae, parameter_counts

__all__ = [
    "VAE", "Encoder", "LayerType", "Prior",
    "build_vae", "parameter_counts",
]
