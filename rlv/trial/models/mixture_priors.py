"""Mixture priors, the thesis's future work (chapter 7) in place of the flow.

  mog   p(z) = sum_k w_k N(z; m_k, diag(exp(v_k)))           K learnable Gaussians and weights
  vamp  p(z) = 1/K sum_k q(z | u_k)                           VampPrior (Tomczak and Welling,
                                                              2018): the encoder's posterior at
                                                              K learnable pseudo-inputs u_k;
                                                              with NL and RKS, whose variance is
                                                              fixed, N(mu(u_k), diag(exp(v)))
                                                              with a learnable v (see VampPrior)

K is model.prior_components (default 16). Neither density splits per dimension, so each returns
log p(z) whole and a zero log-determinant: RT is then the Monte-Carlo -KL per dimension under
both objectives (rlv/trial/objective.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rlv.trial.models.encoders import Encoder
from rlv.trial.models.layers import IMAGE_SIZE
from rlv.trial.models.priors import Prior

_LOG_2PI = math.log(2 * math.pi)


def mixture_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                        log_weights: torch.Tensor) -> torch.Tensor:
    """log sum_k w_k N(z; mu_k, diag(exp(logvar_k))): z (B, D), mu and logvar (K, D),
    log_weights (K,) -> (B,)."""
    diff = z[:, None, :] - mu[None]  # (B, K, D)
    per_dim = -0.5 * (diff * diff * torch.exp(-logvar)[None] + logvar[None] + _LOG_2PI)
    return torch.logsumexp(per_dim.sum(-1) + log_weights[None], dim=-1)  # (B, K) -> (B,)


def draw_from_mixture(mu: torch.Tensor, logvar: torch.Tensor, log_weights: torch.Tensor,
                      noise: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """n = noise.shape[0] draws: a component k ~ w, then mu_k + exp(logvar_k / 2) * noise."""
    k = torch.multinomial(log_weights.exp(), noise.shape[0], replacement=True,
                          generator=generator)  # (n,)
    return mu[k] + torch.exp(0.5 * logvar[k]) * noise  # (n, D)


class MixtureOfGaussians(Prior):
    """K diagonal Gaussians with learnable means (initially N(0, I) draws), log-variances
    (initially 0) and weights (softmax of learnable logits, initially uniform)."""

    def __init__(self, dim: int, hidden: int = 64, *, components: int = 16,
                 encoder: Encoder | None = None, channels: int = 1) -> None:
        super().__init__(dim, hidden)
        self.means = nn.Parameter(torch.randn(components, dim))  # (K, D)
        self.logvars = nn.Parameter(torch.zeros(components, dim))  # (K, D)
        self.logits = nn.Parameter(torch.zeros(components))  # (K,)

    def log_prob_parts(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_w = torch.log_softmax(self.logits, dim=0)
        return mixture_log_density(z, self.means, self.logvars, log_w), z.new_zeros(z.shape[0])

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        log_w = torch.log_softmax(self.logits, dim=0)
        return draw_from_mixture(self.means, self.logvars, log_w, self._noise(n, generator),
                                 generator)


class VampPrior(Prior):
    """p(z) = 1/K sum_k q(z | u_k), u_k learnable pseudo-images (K, C, 32, 32), initially uniform
    in [0, 1) like the data. The encoder is the model's own (held, not registered as a part of the
    prior, so its parameters count once); gradients reach the pseudo-inputs through its frozen
    layers too, whose weights stay frozen. The pseudo-inputs pass through the encoder in the
    model's mode: with model.batchnorm in train mode they are normalised by their own batch
    statistics, which also enter the running statistics (K images against the data's batch).

    Mean-only encoders (NL, RKS): component k is N(mu(u_k), diag(exp(v))), the encoder's mean at
    u_k with one learnable log-variance per dimension v (D,), shared by the K components and
    initially 0 (the normal prior's unit variance). Why not q(z | u_k) itself: the VampPrior
    stands in for the aggregate posterior 1/N sum_n q(z | x_n) (the prior that maximises the
    ELBO) with K pseudo-inputs in place of the N images. That works when q's variance is learnt
    and so says how far a code may lie from the mean; a mean-only encoder's variance is the
    constant sigma2 (1e-6), there only to keep log q finite. K components of that variance are
    spikes 1e-3 wide, so a data image's code z, which lies at no pseudo-input's mean, gets
    log p(z) ~ -min_k |z - mu(u_k)|^2 / (2 sigma2): at init RT is about -9,000 (NL, fc) and
    -84,000 (RKS, fc) per dimension against -6.5 under the normal prior, and it stays
    dominated by the distance to the nearest spike. Components with a variance of their own,
    learnt like the mixture of Gaussians' (mog), make the prior a kernel density estimate of
    the codes at K learnt points with a learnt bandwidth, and keep RT at the normal prior's
    order from the start. Encoders that learn q's variance (L, PNL, PRKS) keep the components
    q(z | u_k) of Tomczak and Welling (2018).
    """

    def __init__(self, dim: int, hidden: int = 64, *, components: int = 16,
                 encoder: Encoder | None = None, channels: int = 1) -> None:
        super().__init__(dim, hidden)
        if encoder is None:
            raise ValueError("the VampPrior needs the model's encoder")
        self._encoder = (encoder,)  # a tuple: not a submodule
        self.pseudo_inputs = nn.Parameter(torch.rand(components, channels, IMAGE_SIZE, IMAGE_SIZE))
        # (D,): the components' own log-variance where the encoder's is the constant sigma2
        self.logvar: nn.Parameter | None = (
            None if encoder.learns_variance else nn.Parameter(torch.zeros(dim)))

    def components(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The components' means and log-variances at the pseudo-inputs: (K, D) each."""
        mu, logvar = self._encoder[0](self.pseudo_inputs, input_grad=True)
        if self.logvar is not None:
            logvar = self.logvar.expand_as(mu)
        return mu, logvar

    def log_prob_parts(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.components()
        log_w = torch.full((mu.shape[0],), -math.log(mu.shape[0]), device=z.device, dtype=mu.dtype)
        return mixture_log_density(z, mu, logvar, log_w), z.new_zeros(z.shape[0])

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        mu, logvar = self.components()
        log_w = torch.full((mu.shape[0],), -math.log(mu.shape[0]), device=mu.device, dtype=mu.dtype)
        return draw_from_mixture(mu, logvar, log_w, self._noise(n, generator), generator)
