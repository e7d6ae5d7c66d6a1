"""The ELBO's terms with the thesis's conventions (as read off its tables 5.1-5.3).

Per image (all (B,) tensors):
  RE  = sum over pixels of (x - x_hat)^2                         (thesis: 8-30 on MNIST)
  RT  = a Monte-Carlo estimate of -KL(q(z|x) || p(z)), averaged over the D latent dimensions
  negative ELBO = RE - RT                                         (table 5.1 = 5.3 - 5.2)

Objectives (the `objective` factor) differ only in how a flow's log-determinant enters RT:
  elbo    RT = (log N(f(z)) - log q(z|x) + log|det|) / D     the true -KL per dimension
  thesis  RT = (log N(f(z)) - log q(z|x)) / D + log|det|     the thesis's code
(log N(f(z)) and log q(z|x) summed over the D dimensions), so RT_thesis - RT_elbo =
log|det| (1 - 1/D); for every prior that is no flow (log|det| = 0) they agree: RT is then the
Monte-Carlo -KL per dimension, (log p(z) - log q(z|x)) / D.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

_LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_density(u: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(u; 0, 1), same shape as u (the priors' base density, and q's at eps)."""
    return -0.5 * (u * u + _LOG_2PI)


class Objective(ABC):
    @abstractmethod
    def rt(self, base: torch.Tensor, logdet: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        """RT (B,) from the prior's base log-density (B,), its log|det| (B,) and log q (B, D)."""


class Elbo(Objective):
    def rt(self, base: torch.Tensor, logdet: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        return (base - log_q.sum(-1) + logdet) / log_q.shape[-1]


class ThesisRT(Objective):
    def rt(self, base: torch.Tensor, logdet: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
        return (base - log_q.sum(-1)) / log_q.shape[-1] + logdet

_ELBO = Elbo()


@dataclass(frozen=True)
class Terms:
    """Per-image terms, each (B,), and what they were made of."""

    re: torch.Tensor
    rt: torch.Tensor  # as the trial's objective defines it (unweighted by any KL warm-up)
    logdet: torch.Tensor  # log|det df/dz| of the prior at z (0 for every prior but the flows)
    base: torch.Tensor  # (B,) the prior's base log-density (log p(z) - logdet)
    log_q: torch.Tensor  # (B, D) log q(z_d | x)

    @property
    def neg_elbo(self) -> torch.Tensor:
        return self.re - self.rt

    @property
    def rt_elbo(self) -> torch.Tensor:
        """The true -KL per dimension, whatever the objective (computed only when asked)."""
        return _ELBO.rt(self.base, self.logdet, self.log_q)


def gaussian_log_q(eps: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, exp(logvar)) per dimension at z = mu + exp(logvar / 2) * eps; (B, D).

    Written with eps rather than (z - mu)^2 / var: exact, and stable when var = 1e-6.
    """
    return standard_normal_log_density(eps) - 0.5 * logvar


def reconstruction_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Squared error summed over the pixels of each image: (B, C, H, W) -> (B,)."""
    diff = x_hat.float() - x
    return (diff * diff).sum(dim=(1, 2, 3))


def elbo_terms(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    eps: torch.Tensor,
    logvar: torch.Tensor,
    prior_parts: tuple[torch.Tensor, torch.Tensor],
    objective: Objective,
) -> Terms:
    base, logdet = prior_parts
    log_q = gaussian_log_q(eps, logvar)
    return Terms(re=reconstruction_error(x, x_hat), rt=objective.rt(base, logdet, log_q),
                 logdet=logdet, base=base, log_q=log_q)
