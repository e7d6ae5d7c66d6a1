"""The VAE: encoder q(z|x), decoder, prior p(z), built from a ModelConfig.

Each part is initialised from its own seed derived from (trial seed, part name), so that every
cell of one seed starts from the same encoder weights (a paired design: NL-fc-normal-s3 and
NL-fc-flow6-s3 share their frozen random encoder) whatever else the cell changes.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from rlv.config import ModelConfig
from rlv.levels import ENCODERS, INITS, LAYERS, PRIORS
from rlv.trial.models.encoders import Encoder
from rlv.trial.models.priors import Prior
from rlv.trial.objective import Objective, Terms, elbo_terms


def derived_seed(seed: int, tag: str) -> int:
    """A stable seed for one part of a trial (crc32, not Python's salted hash)."""
    return zlib.crc32(f"{seed}:{tag}".encode())


@contextmanager
def seeded(seed: int, tag: str) -> Iterator[None]:
    """Run the block with torch's global CPU generator seeded for (seed, tag), then restore it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derived_seed(seed, tag))
        yield


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every linear and conv layer (thesis 4.6)."""
    INITS.build("xavier_uniform").apply(module)


class VAE(nn.Module):
    def __init__(self, encoder: Encoder, decoder: nn.Module, prior: Prior, objective: Objective):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior
        self.objective = objective

    def forward(self, x: torch.Tensor) -> Terms:
        """One-sample ELBO terms of a batch x (B, C, 32, 32), unweighted (KL warm-up weighs RT in
        the training loop's loss only)."""
        mu, logvar = self.encoder(x)  # (B, D) each
        eps = torch.randn_like(mu)
        z = mu + torch.exp(0.5 * logvar) * eps
        x_hat = self.decoder(z)  # (B, C, 32, 32)
        return elbo_terms(x, x_hat, eps, logvar, self.prior.log_prob_parts(z), self.objective)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decoder output at the posterior mean, (B, C, 32, 32)."""
        mu, _ = self.encoder(x)
        return self.decoder(mu)

    def generate(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images decoded from prior samples, (n, C, 32, 32), not clamped."""
        return self.decoder(self.prior.sample(n, generator))


def build_vae(cfg: ModelConfig, *, channels: int, dataset_latent: int, seed: int,
              objective: Objective) -> VAE:
    """The model of one cell, initialised for `seed`, on the CPU."""
    dim = cfg.resolved_latent_dim(dataset_latent)
    layers = LAYERS.build(cfg.layer, channels, dim, dropout=cfg.dropout, batchnorm=cfg.batchnorm)
    init = INITS.build(cfg.init)
    with seeded(seed, f"encoder/{cfg.layer}"):
        encoder = ENCODERS.build(cfg.encoder, layers, cfg.sigma2, rks_width=cfg.rks_width)
        init.apply(encoder)
    with seeded(seed, f"decoder/{cfg.layer}"):
        decoder = layers.decoder()
        init.apply(decoder)
    with seeded(seed, "prior"):
        prior = PRIORS.build(cfg.prior, dim, hidden=cfg.flow_hidden,
                             components=cfg.prior_components, encoder=encoder, channels=channels)
    return VAE(encoder, decoder, prior, objective).to(memory_format=layers.memory_format)


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts: trainable = requires_grad."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen
