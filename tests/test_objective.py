"""The ELBO terms: the thesis's conventions and the two objectives."""

from __future__ import annotations

import math

import pytest
import torch

from rlv.levels import OBJECTIVES
from rlv.trial.models.priors import RealNVP, StandardNormal
from rlv.trial.objective import Elbo, ThesisRT, elbo_terms, gaussian_log_q


def _terms(prior, objective, mu, logvar, eps):  # type: ignore[no-untyped-def]
    z = mu + torch.exp(0.5 * logvar) * eps
    x = torch.zeros(mu.shape[0], 1, 2, 2)
    return elbo_terms(x, x, eps, logvar, prior.log_prob_parts(z), objective)


def test_monte_carlo_kl_of_the_normal_prior_matches_the_closed_form() -> None:
    gen = torch.Generator().manual_seed(0)
    d, samples = 16, 200_000
    mu = torch.randn(1, d, generator=gen, dtype=torch.float64).expand(samples, d)
    logvar = (torch.rand(1, d, generator=gen, dtype=torch.float64) * 2 - 1).expand(samples, d)
    eps = torch.randn(samples, d, generator=gen, dtype=torch.float64)
    rt = _terms(StandardNormal(d).double(), Elbo(), mu, logvar, eps).rt
    closed_kl = 0.5 * (mu[0] ** 2 + logvar[0].exp() - 1 - logvar[0]).sum().item()
    # RT is -KL averaged over the D dimensions
    stderr = rt.std().item() / math.sqrt(samples)
    assert -rt.mean().item() * d == pytest.approx(closed_kl, abs=5 * stderr * d)


def test_constant_variance_encoder_rt_is_the_thesis_value() -> None:
    """sigma^2 = 1e-6, mu = 0: RT = -0.5 * (-1 - ln 1e-6) = -6.41 per dimension (the thesis's
    -6.46 in table 5.2 adds 0.5 * mu^2)."""
    d, n = 16, 50_000
    gen = torch.Generator().manual_seed(1)
    mu = torch.zeros(n, d)
    logvar = torch.full((n, d), math.log(1e-6))
    eps = torch.randn(n, d, generator=gen)
    rt = _terms(StandardNormal(d), Elbo(), mu, logvar, eps).rt.mean().item()
    assert rt == pytest.approx(-0.5 * (-1 - math.log(1e-6)), abs=0.01)


def test_objectives_agree_for_the_normal_prior() -> None:
    gen = torch.Generator().manual_seed(2)
    mu, logvar, eps = (torch.randn(64, 16, generator=gen) for _ in range(3))
    a = _terms(StandardNormal(16), Elbo(), mu, logvar, eps)
    b = _terms(StandardNormal(16), ThesisRT(), mu, logvar, eps)
    assert torch.allclose(a.rt, b.rt, atol=1e-5)
    assert torch.allclose(b.rt_elbo, a.rt, atol=1e-5)


@pytest.mark.parametrize("flows", [2, 6])
def test_thesis_rt_exceeds_elbo_rt_by_logdet_times_one_minus_one_over_d(flows: int) -> None:
    torch.manual_seed(3)
    d = 16
    prior = RealNVP(d, flows).double()
    with torch.no_grad():
        for p in prior.scale.parameters():
            p.mul_(4)  # non-trivial scales (the translations stay small)
    mu, logvar, eps = (torch.randn(32, d, dtype=torch.float64) for _ in range(3))
    t = _terms(prior, ThesisRT(), mu, logvar, eps)
    assert t.logdet.abs().max().item() > 1.0  # the identity would not test the weighting
    assert torch.allclose(t.rt - t.rt_elbo, t.logdet * (1 - 1 / d), atol=1e-9)


@pytest.mark.parametrize("flows", [2, 6])
def test_the_elbo_kl_of_a_flow_prior_is_never_negative_but_the_thesis_rt_goes_positive(
    flows: int,
) -> None:
    """KL(q || p) >= 0 for any q and any flow: the Monte-Carlo mean of -rt_elbo * D must not fall
    below zero beyond its noise, while the thesis's RT (the log-determinant at full weight) can."""
    torch.manual_seed(4)
    d, samples = 16, 100_000
    prior = RealNVP(d, flows).double()
    with torch.no_grad():
        for p in prior.scale.parameters():
            p.mul_(4)
    gen = torch.Generator().manual_seed(5)
    for _ in range(3):  # three different q(z|x), each a diagonal Gaussian
        mu = torch.randn(1, d, generator=gen, dtype=torch.float64).expand(samples, d)
        logvar = (torch.rand(1, d, generator=gen, dtype=torch.float64) * 2 - 1).expand(samples, d)
        eps = torch.randn(samples, d, generator=gen, dtype=torch.float64)
        t = _terms(prior, ThesisRT(), mu, logvar, eps)
        kl = -t.rt_elbo * d  # per-sample KL estimate, summed over dimensions
        assert kl.mean().item() >= -5 * kl.std().item() / math.sqrt(samples)
    # The thesis's optimum: every scale at its tanh bound (log|det| = flows * D / 2), shifts zero and
    # a narrow q at 0. Its RT is then positive, which no -KL can be; the true bound stays negative.
    with torch.no_grad():
        for nets, bias in ((prior.scale, -20.0), (prior.shift, 0.0)):
            for net in nets:
                last = [m for m in net if isinstance(m, torch.nn.Linear)][-1]
                last.weight.zero_()
                last.bias.fill_(bias)
    n = 4096
    mu = torch.zeros(n, d, dtype=torch.float64)
    logvar = torch.full((n, d), 2 * math.log(1e-3), dtype=torch.float64)
    eps = torch.randn(n, d, generator=gen, dtype=torch.float64)
    t = _terms(prior, ThesisRT(), mu, logvar, eps)
    assert t.logdet.mean().item() == pytest.approx(flows * d / 2)
    assert t.rt.mean().item() > 0 > t.rt_elbo.mean().item()


def test_reconstruction_error_is_summed_over_pixels_and_neg_elbo_matches_the_closed_form() -> None:
    x = torch.zeros(2, 1, 32, 32)
    x_hat = torch.full((2, 1, 32, 32), 0.5)
    d, mu, sigma, e = 16, 0.1, 0.7, 0.6
    eps = torch.full((2, d), e)
    logvar = torch.full((2, d), 2 * math.log(sigma))
    z = mu + sigma * eps  # (2, 16): the sample the prior is evaluated at
    t = elbo_terms(x, x_hat, eps, logvar, StandardNormal(d).log_prob_parts(z), Elbo())
    # by hand, per dimension: log N(z; 0, 1) - log N(z; mu, sigma^2) at z = mu + sigma * eps
    z_value = mu + sigma * e
    rt = -0.5 * z_value**2 + 0.5 * e**2 + math.log(sigma)
    assert t.re.tolist() == [0.25 * 1024] * 2
    assert t.rt.tolist() == pytest.approx([rt] * 2, abs=1e-6)
    assert t.neg_elbo.tolist() == pytest.approx([0.25 * 1024 - rt] * 2, abs=1e-4)


def test_gaussian_log_q_is_the_density_at_the_reparameterised_sample() -> None:
    mu, logvar, eps = torch.tensor([0.3]), torch.tensor([-0.7]), torch.tensor([1.2])
    z = mu + torch.exp(0.5 * logvar) * eps
    expected = torch.distributions.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z)
    assert torch.allclose(gaussian_log_q(eps, logvar), expected, atol=1e-6)


def test_objective_registry_names_the_levels() -> None:
    assert set(OBJECTIVES.names()) == {"elbo", "thesis"}
