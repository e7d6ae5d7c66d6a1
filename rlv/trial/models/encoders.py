"""Encoder types (the `encoder` factor): which parts of q(z|x) learn.

Every encoder is a frozen `trunk` followed by a learnable `head`. The trunk runs under no_grad
(frozen layers need no activations kept for backward: 5-15% faster on a CPU) and its parameters
have requires_grad False, so the optimiser never sees them. Encoders that output the mean only
use the constant variance sigma2 (thesis table 4.1: 1e-6).

  L    learnable        trunk = nothing          head = whole stack, outputs (mu, logvar)
  PNL  partially n.-l.  trunk = all but the last  head = last layer, outputs (mu, logvar)
  NL   non-learnable    trunk = whole stack       head = nothing, outputs mu; var = sigma2
  RKS  random k. sinks  trunk = one projection    head = nothing, outputs mu; var = sigma2
  PRKS partially RKS    trunk = rks_width random  head = one layer, outputs (mu, logvar)
                                cosine features

Dropout (model.dropout) acts in the hidden layers of trunk and head alike, in train mode only.
Batch norm (model.batchnorm) in a frozen trunk: its scale and shift stay at 1 and 0 (frozen
parameters), but its running mean and variance are statistics of the data, not learned by the
optimiser, so they are updated in train mode like any batch norm's (momentum 0.1) and used in
eval mode: a frozen encoder with batch norm standardises its features to the training data.
RKS has no hidden layer, so neither changes it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rlv.trial.models.layers import LayerType


class Encoder(nn.Module):
    """q(z|x) = N(mu, diag(exp(logvar))); forward returns (mu, logvar), each (B, D)."""

    def __init__(self, layers: LayerType, sigma2: float, rks_width: int = 1024) -> None:
        super().__init__()
        self.layers = layers
        self.log_sigma2 = math.log(sigma2)
        self.rks_width = rks_width
        trunk, head, self.parts = self.build(layers)
        self.trunk = trunk
        self.head = head
        self.trunk.requires_grad_(False)

    def build(self, layers: LayerType) -> tuple[nn.Module, nn.Module, int]:
        """(frozen trunk, learnable head, 2 if the encoder outputs a log-variance else 1)."""
        raise NotImplementedError

    @property
    def learns_variance(self) -> bool:
        """Whether q's variance is an output of the network (L, PNL, PRKS), not the constant
        sigma2 of the mean-only encoders (NL, RKS)."""
        return self.parts == 2

    def forward(self, x: torch.Tensor, input_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """`input_grad`: let gradients reach x through the frozen trunk (the VampPrior's
        pseudo-inputs learn through it; the trunk's own weights stay frozen)."""
        with torch.set_grad_enabled(input_grad and torch.is_grad_enabled()):
            h = self.trunk(x)
        h = self.head(h)
        parts = self.layers.split(h, self.parts)
        mu = parts[0]
        if self.parts == 2:
            return mu, parts[1]
        return mu, torch.full_like(mu, self.log_sigma2)


class Learnable(Encoder):
    def build(self, layers: LayerType) -> tuple[nn.Module, nn.Module, int]:
        return nn.Identity(), nn.Sequential(*layers.encoder_stack(2)), 2


class PartiallyNonLearnable(Encoder):
    def build(self, layers: LayerType) -> tuple[nn.Module, nn.Module, int]:
        stack = layers.encoder_stack(2)
        return nn.Sequential(*stack[:-1]), stack[-1], 2


class NonLearnable(Encoder):
    def build(self, layers: LayerType) -> tuple[nn.Module, nn.Module, int]:
        return nn.Sequential(*layers.encoder_stack(1)), nn.Identity(), 1


class RandomKitchenSinks(Encoder):
    def build(self, layers: LayerType) -> tuple[nn.Module, nn.Module, int]:
        return layers.rks(), nn.Identity(), 1


class PartialRandomKitchenSinks(Encoder):
    """The thesis's future work: RKS's random projection widened to rks_width cosine features,
    frozen, then one trainable layer to mean and log-variance."""

    def build(self, layers: LayerType) -> tuple[nn.Module, nn.Module, int]:
        return (layers.random_features(self.rks_width),
                layers.features_head(self.rks_width, 2), 2)
