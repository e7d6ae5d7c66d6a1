"""Encoder types (the `encoder` factor): which parts of q(z|x) learn.

Every encoder is a frozen `trunk` followed by a learnable `head`. The trunk runs under no_grad
(frozen layers need no activations kept for backward: 5-15% faster on a CPU) and its parameters
have requires_grad False, so the optimiser never sees them. Encoders that output the mean only
use the constant variance sigma2 (thesis table 4.1: 1e-6).

  L    learnable        trunk = nothing          head = whole stack, outputs (mu, logvar)
  PNL  partially n.-l.  trunk = all but the last  head = last layer, outputs (mu, logvar)
  NL   non-learnable    trunk = whole stack       head = nothing, outputs mu; var = sigma2
  RKS  random k. sinks  trunk = one projection    head = nothing, outputs mu; var = sigma2
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rlv.models.layers import LayerType
from rlv.registry import Registry


class Encoder(nn.Module):
    """q(z|x) = N(mu, diag(exp(logvar))); forward returns (mu, logvar), each (B, D)."""

    def __init__(self, layers: LayerType, sigma2: float) -> None:
        super().__init__()
        self.layers = layers
        self.log_sigma2 = math.log(sigma2)
        trunk, head, self.parts = self.build(layers)
        self.trunk = trunk
        self.head = head
        self.trunk.requires_grad_(False)

    def build(self, layers: LayerType) -> tuple[nn.Module, nn.Module, int]:
        """(frozen trunk, learnable head, 2 if the encoder outputs a log-variance else 1)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
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


ENCODERS: Registry[Encoder] = Registry("encoder", Encoder)
ENCODERS.register("L", Learnable)
ENCODERS.register("PNL", PartiallyNonLearnable)
ENCODERS.register("NL", NonLearnable)
ENCODERS.register("RKS", RandomKitchenSinks)
