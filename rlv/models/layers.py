"""Layer types (the `layer` factor): the networks of the thesis's appendix B, per layer type.

A layer type builds three things for images of C channels and a latent of D features:
the encoder's four-layer stack, the random-kitchen-sinks projection, and the decoder. Encoders
and the VAE see latents as flat (B, D) tensors; the conv layer type maps them to and from its
(B, D/4, 2, 2) feature maps itself. Register a new layer type with `LAYERS.register`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from rlv.registry import Registry

IMAGE_SIZE = 32  # every data set is 32 x 32 (MNIST is zero-padded by 2 pixels)


class LayerType(ABC):
    """Builds the networks of one layer type."""

    # Memory format the images (and the model) should use for speed: conv layers are 1.8x faster
    # in channels_last on oneDNN (PERF.md); flat fc layers want plain contiguous rows.
    memory_format: torch.memory_format = torch.contiguous_format

    def __init__(self, channels: int, latent_dim: int) -> None:
        self.channels = channels
        self.latent_dim = latent_dim

    @abstractmethod
    def encoder_stack(self, outputs_per_latent: int) -> list[nn.Module]:
        """The encoder's layers, in order; the last is a plain layer with D * outputs_per_latent
        outputs (mean, or mean and log-variance). Input (B, C, 32, 32)."""

    @abstractmethod
    def rks(self) -> nn.Module:
        """One linear projection (B, C, 32, 32) -> D features, no non-linearity."""

    @abstractmethod
    def decoder(self) -> nn.Module:
        """(B, D) -> (B, C, 32, 32); ends in a plain layer, no output activation (SPEC.md)."""

    @abstractmethod
    def split(self, h: torch.Tensor, parts: int) -> list[torch.Tensor]:
        """Cut the encoder's raw output into `parts` flat (B, D) tensors (mean, log-variance)."""


class FullyConnected(LayerType):
    def encoder_stack(self, outputs_per_latent: int) -> list[nn.Module]:
        act = nn.LeakyReLU
        return [
            nn.Sequential(nn.Flatten(), nn.Linear(IMAGE_SIZE * IMAGE_SIZE * self.channels, 256), act()),
            nn.Sequential(nn.Linear(256, 128), act()),
            nn.Sequential(nn.Linear(128, 64), act()),
            nn.Linear(64, self.latent_dim * outputs_per_latent),
        ]

    def rks(self) -> nn.Module:
        return nn.Sequential(
            nn.Flatten(), nn.Linear(IMAGE_SIZE * IMAGE_SIZE * self.channels, self.latent_dim)
        )

    def decoder(self) -> nn.Module:
        act = nn.LeakyReLU
        pixels = IMAGE_SIZE * IMAGE_SIZE * self.channels
        return nn.Sequential(
            nn.Linear(self.latent_dim, 128), act(),
            nn.Linear(128, 256), act(),
            nn.Linear(256, 512), act(),
            nn.Linear(512, 1024), act(),
            nn.Linear(1024, pixels),
            nn.Unflatten(1, (self.channels, IMAGE_SIZE, IMAGE_SIZE)),
        )  # fmt: skip

    def split(self, h: torch.Tensor, parts: int) -> list[torch.Tensor]:
        return list(h.chunk(parts, dim=1))  # (B, D * parts) -> parts x (B, D)


class Convolutional(LayerType):
    """Fully convolutional: the latent is D/4 channels on a 2 x 2 grid (4 x 2 x 2 on MNIST)."""

    memory_format = torch.channels_last

    def __init__(self, channels: int, latent_dim: int) -> None:
        super().__init__(channels, latent_dim)
        self.latent_channels = latent_dim // 4

    def encoder_stack(self, outputs_per_latent: int) -> list[nn.Module]:
        c, act = self.channels, nn.LeakyReLU
        return [
            nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), act(), nn.MaxPool2d(2)),  # (B, 4, 16, 16)
            nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), act(), nn.MaxPool2d(2)),  # (B, 8, 8, 8)
            nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), act(), nn.MaxPool2d(2)),  # (B, 16, 4, 4)
            nn.Conv2d(16, self.latent_channels * outputs_per_latent, 3, padding=0),  # (B, M*N, 2, 2)
        ]

    def rks(self) -> nn.Module:
        # kernel 16, stride 16: each output position sees one 16 x 16 quarter of the image
        return nn.Conv2d(self.channels, self.latent_channels, 16, stride=16)  # (B, M, 2, 2)

    def decoder(self) -> nn.Module:
        act = nn.LeakyReLU

        def up() -> nn.Module:
            return nn.Upsample(scale_factor=2, mode="nearest")

        return nn.Sequential(
            nn.Unflatten(1, (self.latent_channels, 2, 2)),  # (B, D) -> (B, M, 2, 2)
            nn.Conv2d(self.latent_channels, 64, 3, padding=1), act(), up(),  # (B, 64, 4, 4)
            nn.Conv2d(64, 32, 3, padding=1), act(), up(),  # (B, 32, 8, 8)
            nn.Conv2d(32, 16, 3, padding=1), act(), up(),  # (B, 16, 16, 16)
            nn.Conv2d(16, 8, 3, padding=1), act(), up(),  # (B, 8, 32, 32)
            nn.Conv2d(8, self.channels, 3, padding=1),  # (B, C, 32, 32)
        )

    def split(self, h: torch.Tensor, parts: int) -> list[torch.Tensor]:
        # (B, M * parts, 2, 2) -> parts x (B, M * 4), channel-major like the decoder's Unflatten
        return [p.flatten(1) for p in h.chunk(parts, dim=1)]


LAYERS: Registry[LayerType] = Registry("layer type", LayerType)
LAYERS.register("fc", FullyConnected)
LAYERS.register("conv", Convolutional)
