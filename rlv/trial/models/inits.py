"""Weight initialisations (the `model.init` setting) of the encoder's and decoder's layers.

The thesis (section 4.6) initialises with Xavier-uniform weights and zero biases, rlv's default;
the others are the alternatives it names. Every init but `torch_default` sets the weights of every
linear and convolutional layer and zeroes their biases; `torch_default` keeps what torch's layer
constructors drew (Kaiming-uniform with a = sqrt(5), and uniform biases). Parameters that are not
a layer's weight or bias (the random phases of PRKS, batch norm's scale and shift) are left alone.
Register a new one with `INITS.register`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

LEAKY_SLOPE = 0.01  # nn.LeakyReLU's default negative slope, the non-linearity of every layer


class Init(ABC):
    """Initialises a module's linear and convolutional layers in place (under the caller's seed)."""

    def apply(self, module: nn.Module) -> None:
        for m in module.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                self.weight(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @abstractmethod
    def weight(self, w: torch.Tensor) -> None:
        """Draw one layer's weight in place."""


class XavierUniform(Init):
    def weight(self, w: torch.Tensor) -> None:
        nn.init.xavier_uniform_(w)


class XavierNormal(Init):
    def weight(self, w: torch.Tensor) -> None:
        nn.init.xavier_normal_(w)


class KaimingUniform(Init):
    """He et al.: variance 2 / ((1 + a^2) fan_in) for leaky ReLUs of slope a."""

    def weight(self, w: torch.Tensor) -> None:
        nn.init.kaiming_uniform_(w, a=LEAKY_SLOPE, nonlinearity="leaky_relu")


class KaimingNormal(Init):
    def weight(self, w: torch.Tensor) -> None:
        nn.init.kaiming_normal_(w, a=LEAKY_SLOPE, nonlinearity="leaky_relu")


class TorchDefault(Init):
    def apply(self, module: nn.Module) -> None:
        pass  # torch's constructors already drew the weights and biases

    def weight(self, w: torch.Tensor) -> None:
        pass
