"""Priors p(z) (the `prior` factor) on flat latents z of shape (B, D).

Interface: `log_prob(z)` (B,) and `sample(n)`. A prior also splits its log-density into a base
part and a log-determinant (`log_prob_parts`, both (B,)), because the thesis's objective weighs
the two differently (rlv/trial/objective.py); a prior that is no flow returns log p(z) and zeros,
so densities that do not split per dimension (the mixtures in mixture_priors.py) fit as well.
Register a new prior with `PRIORS.register`; the test suite checks every registered prior's
`log_prob` against its `sample`, and its Monte-Carlo KL for being >= 0.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch
from torch import nn

from rlv.trial.objective import standard_normal_log_density

if TYPE_CHECKING:
    from rlv.trial.models.encoders import Encoder


class Prior(nn.Module, ABC):
    """Every prior is built as PRIORS.build(name, dim, hidden=..., components=..., encoder=...,
    channels=...): `hidden` is the width of its networks and `components` the size of its mixture,
    where it has any; `encoder` (q(z|x)) and `channels` (of the images) for priors defined through
    the encoder (the VampPrior). Each ignores what it does not use."""

    def __init__(self, dim: int, hidden: int = 64, *, components: int = 16,
                 encoder: Encoder | None = None, channels: int = 1) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("_anchor", torch.zeros(()))  # carries the device and dtype

    @abstractmethod
    def log_prob_parts(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(base (B,), logdet (B,)) with log p(z) = base + logdet.

        For a flow, base is log N(f(z); 0, I) of the base-space image f(z) and logdet is
        log|det df/dz|. A prior that is no flow returns its log-density and zeros.
        """

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws from p(z): (n, D) on the prior's device."""

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z), (B,)."""
        base, logdet = self.log_prob_parts(z)
        return base + logdet

    def _noise(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """(n, D) standard normal draws on the prior's device and in its dtype."""
        anchor = self.get_buffer("_anchor")  # every prior registers one: it follows .to()
        return torch.randn(n, self.dim, device=anchor.device, dtype=anchor.dtype,
                           generator=generator)


class StandardNormal(Prior):
    def log_prob_parts(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return standard_normal_log_density(z).sum(-1), z.new_zeros(z.shape[0])

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self._noise(n, generator)


def _mlp(width_in: int, hidden: int, tanh: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Linear(width_in, hidden), nn.LeakyReLU(),
        nn.Linear(hidden, hidden), nn.LeakyReLU(),
        nn.Linear(hidden, width_in),
    ]  # fmt: skip
    if tanh:
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class RealNVP(Prior):
    """RealNVP flow prior: `flows` affine couplings, each followed by a swap of the halves.

    f maps z to the base space. One coupling with z = (a, b), halves of D/2:
        b' = (b - t(a)) * exp(-s(a)),   log|det| = -sum_j s(a)_j,   s = tanh(...) in (-1, 1)
    then (a, b') -> (b', a). log p(z) = sum_d log N(f(z)_d) + sum over couplings of log|det|,
    the log-determinant counted once per sample (not once per dimension, a known bug elsewhere).
    """

    def __init__(self, dim: int, flows: int, hidden: int = 64, *, components: int = 16,
                 encoder: Encoder | None = None, channels: int = 1) -> None:
        super().__init__(dim, hidden)
        if dim % 2:
            raise ValueError(f"RealNVP needs an even latent size, got {dim}")
        self.cut = dim // 2  # z = (z[:, :cut], z[:, cut:])
        self.scale = nn.ModuleList(_mlp(self.cut, hidden, tanh=True) for _ in range(flows))
        self.shift = nn.ModuleList(_mlp(self.cut, hidden, tanh=False) for _ in range(flows))

    def to_base(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(z) (B, D), log|det df/dz| (B,))."""
        u, logdet = z, z.new_zeros(z.shape[0])
        for s_net, t_net in zip(self.scale, self.shift, strict=True):
            a, b = u[:, : self.cut], u[:, self.cut :]
            s = s_net(a)  # (B, D/2), in (-1, 1)
            b = (b - t_net(a)) * torch.exp(-s)
            logdet = logdet - s.sum(-1)
            u = torch.cat([b, a], dim=1)  # swap the halves
        return u, logdet

    def from_base(self, u: torch.Tensor) -> torch.Tensor:
        """f^-1: base-space points (B, D) to latents (B, D)."""
        for s_net, t_net in zip(reversed(self.scale), reversed(self.shift), strict=True):
            b, a = u[:, : self.cut], u[:, self.cut :]  # undo the swap
            b = b * torch.exp(s_net(a)) + t_net(a)
            u = torch.cat([a, b], dim=1)
        return u

    def log_prob_parts(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        u, logdet = self.to_base(z)
        return standard_normal_log_density(u).sum(-1), logdet

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.from_base(self._noise(n, generator))
