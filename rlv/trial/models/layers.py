"""Layer types (the `layer` factor): the networks of the thesis's appendix B, per layer type.

A layer type builds, for images of C channels and a latent of D features: the encoder's
four-layer stack, the random-kitchen-sinks projection, the random cosine features of PRKS and the
layer after them, and the decoder. Encoders and the VAE see latents as flat (B, D) tensors; the
conv layer type maps them to and from its (B, D/4, 2, 2) feature maps itself. Register a new
layer type with `LAYERS.register`.

Regularisation (model.batchnorm, model.dropout) goes into the encoder's hidden layers, the ones
before its output layer (frozen ones too): batch norm right after the linear map or convolution,
dropout at the end of the layer. With neither, the layers are exactly the thesis's.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import cast

import torch
from torch import nn

IMAGE_SIZE = 32  # every data set is 32 x 32 (MNIST is zero-padded by 2 pixels)


class LayerType(ABC):
    """Builds the networks of one layer type."""

    # Memory format the images (and the model) should use for speed: conv layers are 1.8x faster
    # in channels_last on oneDNN (about 2x per epoch on a 2-core CPU); flat fc layers want
    # plain contiguous rows.
    memory_format: torch.memory_format = torch.contiguous_format

    def __init__(self, channels: int, latent_dim: int, *, dropout: float = 0.0,
                 batchnorm: bool = False) -> None:
        self.channels = channels
        self.latent_dim = latent_dim
        self.dropout = dropout
        self.batchnorm = batchnorm

    def hidden(self, first: list[nn.Module], rest: list[nn.Module], width: int) -> nn.Module:
        """One hidden encoder layer: `first` (ending in the linear map), batch norm of its
        `width` features if asked, `rest` (activation, pooling), dropout if asked."""
        norm = [self.norm(width)] if self.batchnorm else []
        drop = [nn.Dropout(self.dropout)] if self.dropout > 0 else []
        return nn.Sequential(*first, *norm, *rest, *drop)

    @abstractmethod
    def norm(self, width: int) -> nn.Module:
        """Batch norm over `width` features or channels."""

    @abstractmethod
    def encoder_stack(self, outputs_per_latent: int) -> list[nn.Module]:
        """The encoder's layers, in order; the last is a plain layer with D * outputs_per_latent
        outputs (mean, or mean and log-variance). Input (B, C, 32, 32)."""

    @abstractmethod
    def rks(self) -> nn.Module:
        """One linear projection (B, C, 32, 32) -> D features, no non-linearity."""

    @abstractmethod
    def random_projection(self, width: int) -> nn.Module:
        """The frozen projection of PRKS: (B, C, 32, 32) -> `width` features (fc: (B, width);
        conv: (B, width, 2, 2)), before the cosine."""

    @abstractmethod
    def features_head(self, width: int, outputs_per_latent: int) -> nn.Module:
        """The one trainable layer of PRKS: `width` cosine features -> D * outputs_per_latent."""

    def random_features(self, width: int) -> nn.Module:
        """cos(Wx + b) with b ~ U[0, 2 pi) (Rahimi and Recht), as one hidden layer."""
        return self.hidden([CosineFeatures(self.random_projection(width), width)], [], width)

    @abstractmethod
    def decoder(self) -> nn.Module:
        """(B, D) -> (B, C, 32, 32); ends in a plain layer, no output activation (thesis appendix
        B; a sigmoid there stalls a conv decoder at an all-black output)."""

    @abstractmethod
    def split(self, h: torch.Tensor, parts: int) -> list[torch.Tensor]:
        """Cut the encoder's raw output into `parts` flat (B, D) tensors (mean, log-variance)."""


class FullyConnected(LayerType):
    def encoder_stack(self, outputs_per_latent: int) -> list[nn.Module]:
        act, pixels = nn.LeakyReLU, IMAGE_SIZE * IMAGE_SIZE * self.channels
        return [
            self.hidden([nn.Flatten(), nn.Linear(pixels, 256)], [act()], 256),
            self.hidden([nn.Linear(256, 128)], [act()], 128),
            self.hidden([nn.Linear(128, 64)], [act()], 64),
            nn.Linear(64, self.latent_dim * outputs_per_latent),
        ]

    def norm(self, width: int) -> nn.Module:
        return nn.BatchNorm1d(width)

    def rks(self) -> nn.Module:
        return nn.Sequential(
            nn.Flatten(), nn.Linear(IMAGE_SIZE * IMAGE_SIZE * self.channels, self.latent_dim)
        )

    def random_projection(self, width: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(IMAGE_SIZE * IMAGE_SIZE * self.channels, width))

    def features_head(self, width: int, outputs_per_latent: int) -> nn.Module:
        return nn.Linear(width, self.latent_dim * outputs_per_latent)  # (B, width) -> (B, D * P)

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

    def __init__(self, channels: int, latent_dim: int, *, dropout: float = 0.0,
                 batchnorm: bool = False) -> None:
        super().__init__(channels, latent_dim, dropout=dropout, batchnorm=batchnorm)
        self.latent_channels = latent_dim // 4

    def encoder_stack(self, outputs_per_latent: int) -> list[nn.Module]:
        c, act, pool = self.channels, nn.LeakyReLU, nn.MaxPool2d
        return [
            self.hidden([nn.Conv2d(c, 4, 3, padding=1)], [act(), pool(2)], 4),  # (B, 4, 16, 16)
            self.hidden([nn.Conv2d(4, 8, 3, padding=1)], [act(), pool(2)], 8),  # (B, 8, 8, 8)
            self.hidden([nn.Conv2d(8, 16, 3, padding=1)], [act(), pool(2)], 16),  # (B, 16, 4, 4)
            nn.Conv2d(16, self.latent_channels * outputs_per_latent, 3, padding=0),  # (B, M*N, 2, 2)
        ]

    def norm(self, width: int) -> nn.Module:
        return nn.BatchNorm2d(width)

    def rks(self) -> nn.Module:
        # kernel 16, stride 16: each output position sees one 16 x 16 quarter of the image
        return nn.Conv2d(self.channels, self.latent_channels, 16, stride=16)  # (B, M, 2, 2)

    def random_projection(self, width: int) -> nn.Module:
        # as RKS, one 16 x 16 quarter of the image per grid position, but `width` channels
        return nn.Conv2d(self.channels, width, 16, stride=16)  # (B, width, 2, 2)

    def features_head(self, width: int, outputs_per_latent: int) -> nn.Module:
        # a 1 x 1 convolution: the latent stays on the 2 x 2 grid of the other encoders
        return nn.Conv2d(width, self.latent_channels * outputs_per_latent, 1)  # (B, M*P, 2, 2)

    def decoder(self) -> nn.Module:
        act = nn.LeakyReLU

        def up() -> nn.Module:
            return nn.Upsample(scale_factor=2, mode="nearest")

        return nn.Sequential(
            nn.Unflatten(1, (self.latent_channels, 2, 2)),  # (B, D) -> (B, M, 2, 2)
            nn.Conv2d(self.latent_channels, 64, 3, padding=1), act(), up(),  # (B, 64, 4, 4)
            nn.Conv2d(64, 32, 3, padding=1), act(), up(),  # (B, 32, 8, 8)
            nn.Conv2d(32, 16, 3, padding=1), act(), up(),  # (B, 16, 16, 16)
            nn.Conv2d(16, 8, 3, padding=1), act(),  # (B, 8, 16, 16)
            # the last upsampling and the 8 -> C convolution as one step: see UpsampleConv
            UpsampleConv(8, self.channels),  # (B, C, 32, 32)
        )

    def split(self, h: torch.Tensor, parts: int) -> list[torch.Tensor]:
        # (B, M * parts, 2, 2) -> parts x (B, M * 4), channel-major like the decoder's Unflatten
        return [p.flatten(1) for p in h.chunk(parts, dim=1)]


class CosineFeatures(nn.Module):
    """cos(projection(x) + b): random Fourier features (Rahimi and Recht, 2007).

    b is one phase per feature (per channel for conv, shared by the 2 x 2 positions), drawn
    uniformly in [0, 2 pi) when built; it is a parameter, frozen with the projection, and no init
    touches it. The projection's weights W follow model.init like every other layer: they set the
    kernel's bandwidth (Xavier: a wide Gaussian kernel on the [0, 1] pixels).
    """

    def __init__(self, projection: nn.Module, width: int) -> None:
        super().__init__()
        self.projection = projection
        self.phase = nn.Parameter(torch.rand(width) * (2 * math.pi))  # (width,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.projection(x)  # (B, width) or (B, width, 2, 2)
        phase = self.phase.view(1, -1, *([1] * (h.dim() - 2)))
        return torch.cos(h + phase)


# Which output phase (r: row parity of the upsampled pixel) each tap of a 3x3 kernel lands on
# when the kernel runs on the low-resolution input: _PHASE_TAPS[r][offset + 1, tap] = 1.
_PHASE_TAPS = torch.tensor([[[1, 0, 0], [0, 1, 1], [0, 0, 0]],    # r = 0: offsets -1, 0
                            [[0, 0, 0], [1, 1, 0], [0, 0, 1]]],   # r = 1: offsets 0, +1
                           dtype=torch.float32)  # fmt: skip


class UpsampleConv(nn.Module):
    """Nearest 2x upsampling, then a 3x3 convolution (padding 1): the thesis's decoder step.

    Computed without materialising the upsampled map: each of the four output phases (row and
    column parity) of conv3x3(upsample(x)) is a 3x3 convolution of x whose taps are sums of the
    original taps, so one convolution of x with 4 * C_out channels and a pixel shuffle give the
    same numbers (to float rounding) from the same parameters. It pays where C_out is tiny: for
    the decoder's last step (8 -> 1 channel, 16 -> 32 pixels) forward and backward take 4 ms
    instead of 12 ms per batch of 256 on a 2-core CPU; for wider layers it is slower, so the
    decoder uses it for the last step only. (B, C_in, H, W) -> (B, C_out, 2H, 2W).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)  # the model's parameters
        # a buffer, so that it moves with the model: a per-batch host-to-device copy would
        # make the CPU wait for the GPU at every step
        self.register_buffer("taps", _PHASE_TAPS.clone(), persistent=False)

    def phase_kernels(self) -> torch.Tensor:
        """(4 C_out, C_in, 3, 3): kernel of phase (r, s) of output channel c at row 4c + 2r + s."""
        w = self.conv.weight  # (C_out, C_in, 3, 3)
        taps = self.taps.to(w.dtype)  # (2, 3, 3)
        k = torch.einsum("ria,cdab,sjb->crsdij", taps, w, taps)  # (C_out, 2, 2, C_in, 3, 3)
        return k.reshape(w.shape[0] * 4, w.shape[1], 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = cast(torch.Tensor, self.conv.bias)  # the conv is built with bias=True
        y = nn.functional.conv2d(x, self.phase_kernels(), bias.repeat_interleave(4), padding=1)
        return nn.functional.pixel_shuffle(y, 2)  # (B, 4 C_out, H, W) -> (B, C_out, 2H, 2W)
