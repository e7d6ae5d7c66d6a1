"""The priors: the flow's log-density, its inverse, the mixtures' densities, and for every
registered prior log_prob against sample and a Monte-Carlo KL that is never negative."""

from __future__ import annotations

import math

import pytest
import torch

from rlv.config import ModelConfig
from rlv.levels import ENCODERS, LAYERS, OBJECTIVES, PRIORS
from rlv.trial.models import VAE, build_vae
from rlv.trial.models.mixture_priors import MixtureOfGaussians, VampPrior
from rlv.trial.models.priors import Prior, RealNVP, StandardNormal, standard_normal_log_density
from rlv.trial.objective import elbo_terms


def build_prior(name: str, dim: int, hidden: int = 8, components: int = 5,
                encoder_name: str = "L") -> Prior:
    """Prior `name` in float64, with a small fc encoder of 1-channel images (learnable unless
    named) where it needs one (the VampPrior)."""
    encoder = ENCODERS.build(encoder_name, LAYERS.build("fc", 1, dim), 1e-6).double()
    return PRIORS.build(name, dim, hidden=hidden, components=components, encoder=encoder,
                        channels=1).double()


def _zero_flow(flow: RealNVP) -> None:
    """Make every coupling the identity: s = tanh(0) = 0 and t = 0."""
    for net in list(flow.scale) + list(flow.shift):
        last = [m for m in net if isinstance(m, torch.nn.Linear)][-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.zeros_(last.bias)


def _spread(flow: RealNVP, gain: float, seed: int = 0) -> None:
    """Larger random weights, so that the couplings are far from the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * gain)


@pytest.mark.parametrize("flows", [2, 6])
def test_identity_flow_gives_exactly_the_normal_prior(flows: int) -> None:
    flow, normal = RealNVP(16, flows), StandardNormal(16)
    _zero_flow(flow)
    z = torch.randn(64, 16)
    assert torch.equal(flow.log_prob(z), normal.log_prob(z))
    base, logdet = flow.log_prob_parts(z)
    assert torch.equal(logdet, torch.zeros(64))


def test_flow_log_density_matches_numerical_change_of_variables() -> None:
    torch.manual_seed(0)
    flow = RealNVP(4, flows=3, hidden=16).double()
    _spread(flow, 0.5)
    z = torch.randn(5, 4, dtype=torch.float64)
    got = flow.log_prob(z)
    for i in range(z.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda v: flow.to_base(v[None])[0][0], z[i])
        u = flow.to_base(z[i][None])[0][0]
        expected = standard_normal_log_density(u).sum() + torch.linalg.slogdet(jac).logabsdet
        assert got[i].item() == pytest.approx(expected.item(), abs=1e-9)


def test_sampling_inverts_the_forward_pass() -> None:
    torch.manual_seed(1)
    flow = RealNVP(16, flows=6).double()
    _spread(flow, 0.3)
    u = torch.randn(128, 16, dtype=torch.float64)
    back, _ = flow.to_base(flow.from_base(u))
    assert torch.allclose(back, u, atol=1e-10)


def test_log_determinant_is_bounded_by_flows_times_half_the_latent() -> None:
    flow = RealNVP(16, flows=6)
    _spread(flow, 2.0)  # saturates the tanh scales
    _, logdet = flow.log_prob_parts(torch.randn(256, 16))
    assert logdet.abs().max().item() <= 6 * 8 + 1e-4


@pytest.mark.parametrize("name", PRIORS.names())
def test_every_prior_log_prob_agrees_with_its_samples(name: str) -> None:
    """On a 2-d latent: the density integrates to one, and the samples' frequencies in boxes
    match the density's mass there (a broken sample or log_prob fails one of the two)."""
    torch.manual_seed(2)
    prior = build_prior(name, 2)
    if isinstance(prior, RealNVP):
        _spread(prior, 0.3, seed=3)  # far from the identity, samples within |z| < 13
    step, reach = 0.04, 16.0
    axis = torch.arange(-reach, reach, step, dtype=torch.float64) + step / 2
    grid = torch.cartesian_prod(axis, axis)  # (G*G, 2) cell centres
    with torch.no_grad():
        density = prior.log_prob(grid).exp()
        assert (density.sum() * step * step).item() == pytest.approx(1.0, abs=5e-3)
        samples = prior.sample(200_000, torch.Generator().manual_seed(4))
    assert samples.shape == (200_000, 2)
    assert samples.abs().max().item() < reach
    # boxes: the quartiles of the samples on each axis, crossed (16 boxes)
    quartiles = samples.quantile(torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64), dim=0)

    def box(points: torch.Tensor) -> torch.Tensor:  # (N, 2) -> (N, 2) box index per axis
        return torch.stack([torch.bucketize(points[:, k].contiguous(),
                                            quartiles[:, k].contiguous()) for k in (0, 1)], dim=1)

    gi, si = box(grid), box(samples)
    mass = torch.zeros(4, 4, dtype=torch.float64)
    freq = torch.zeros(4, 4, dtype=torch.float64)
    for a in range(4):
        for b in range(4):
            mass[a, b] = density[(gi[:, 0] == a) & (gi[:, 1] == b)].sum() * step * step
            freq[a, b] = ((si[:, 0] == a) & (si[:, 1] == b)).double().mean()
    # binomial standard error at n = 200,000 is at most 0.0011; allow 5 of them plus grid error
    assert (mass - freq).abs().max().item() < 0.006, (mass, freq)


def test_normal_prior_log_density_is_the_textbook_one() -> None:
    z = torch.tensor([[0.0, 1.0, -2.0]])
    expected = sum(-0.5 * (v * v + math.log(2 * math.pi)) for v in (0.0, 1.0, -2.0))
    assert StandardNormal(3).log_prob(z).item() == pytest.approx(expected)


def _mixture_reference(prior: Prior) -> torch.distributions.Distribution:
    """The same mixture built from torch.distributions (an independent density)."""
    if isinstance(prior, MixtureOfGaussians):
        mu, logvar = prior.means, prior.logvars
        weights = torch.distributions.Categorical(logits=prior.logits)
    else:
        assert isinstance(prior, VampPrior)
        mu, logvar = prior.components()
        weights = torch.distributions.Categorical(logits=torch.zeros(mu.shape[0], dtype=mu.dtype))
    normals = torch.distributions.Independent(torch.distributions.Normal(mu, (0.5 * logvar).exp()), 1)
    return torch.distributions.MixtureSameFamily(weights, normals)


# the VampPrior of a mean-only encoder (NL, RKS) has components of its own variance
MIXTURES = [("mog", "L"), ("vamp", "L"), ("vamp", "NL"), ("vamp", "RKS")]


@pytest.mark.parametrize("name,encoder", MIXTURES)
def test_mixture_priors_match_torch_distributions_mixtures(name: str, encoder: str) -> None:
    torch.manual_seed(6)
    prior = build_prior(name, 6, components=7, encoder_name=encoder)
    with torch.no_grad():  # away from the equal-weight, unit-variance start
        if isinstance(prior, MixtureOfGaussians):
            prior.logvars.normal_(0, 0.5)
            prior.logits.normal_(0, 1)
        if isinstance(prior, VampPrior) and prior.logvar is not None:
            prior.logvar.normal_(0, 0.5)
    z = torch.randn(50, 6, dtype=torch.float64) * 2
    with torch.no_grad():
        expected = _mixture_reference(prior).log_prob(z)
        assert torch.allclose(prior.log_prob(z), expected, atol=1e-10)


def test_vamp_pseudo_inputs_learn_through_a_frozen_encoder() -> None:
    """With an NL encoder (all frozen) the pseudo-inputs still get gradients; the encoder does not."""
    torch.manual_seed(7)
    encoder = ENCODERS.build("NL", LAYERS.build("fc", 1, 4), 0.5)
    prior = PRIORS.build("vamp", 4, components=3, encoder=encoder, channels=1)
    prior.log_prob(torch.randn(10, 4)).sum().backward()
    assert prior.pseudo_inputs.grad is not None and prior.pseudo_inputs.grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.parameters())
    assert all(not p.requires_grad for p in encoder.parameters())


def _spread_scales(prior: Prior) -> None:
    if isinstance(prior, RealNVP):
        with torch.no_grad():
            for p in prior.scale.parameters():
                p.mul_(4)


@pytest.mark.parametrize("name,encoder", [(n, "L") for n in PRIORS.names()] + MIXTURES[2:])
def test_every_prior_has_a_monte_carlo_kl_that_is_never_negative_on_average(name: str,
                                                                           encoder: str) -> None:
    """KL(q || p) >= 0 for any q and any density p: the Monte-Carlo mean of -rt_elbo * D must not
    fall below zero beyond its noise, for three diagonal Gaussian q(z|x); a prior whose log_prob
    is not normalised (or is wrongly signed) fails it. For priors that are no flow, both
    objectives give the same RT, (log p(z) - log q(z|x)) / D."""
    torch.manual_seed(8)
    d, samples = 16, 40_000
    prior = build_prior(name, d, hidden=16, encoder_name=encoder)
    _spread_scales(prior)
    gen = torch.Generator().manual_seed(9)
    for _ in range(3):
        mu = torch.randn(1, d, generator=gen, dtype=torch.float64).expand(samples, d)
        logvar = (torch.rand(1, d, generator=gen, dtype=torch.float64) * 2 - 1).expand(samples, d)
        eps = torch.randn(samples, d, generator=gen, dtype=torch.float64)
        z = mu + torch.exp(0.5 * logvar) * eps
        x = torch.zeros(samples, 1, 1, 1, dtype=torch.float64)
        with torch.no_grad():
            parts = prior.log_prob_parts(z)
            t = elbo_terms(x, x, eps, logvar, parts, OBJECTIVES.build("elbo"))
            thesis = elbo_terms(x, x, eps, logvar, parts, OBJECTIVES.build("thesis"))
            log_q = torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
            log_p = prior.log_prob(z)
        kl = -t.rt_elbo * d  # per-sample KL estimate, summed over dimensions
        assert kl.mean().item() >= -5 * kl.std().item() / math.sqrt(samples)
        assert torch.allclose(t.rt, (log_p - log_q) / d, atol=1e-9)
        if not isinstance(prior, RealNVP):
            assert torch.allclose(thesis.rt, t.rt, atol=1e-12)
            assert torch.equal(t.logdet, torch.zeros(samples, dtype=torch.float64))


def test_every_registered_prior_is_an_interface_implementation() -> None:
    assert {"normal", "flow2", "flow6", "mog", "vamp"} <= set(PRIORS.names())
    assert all(issubclass(PRIORS.get(n).cls, Prior) for n in PRIORS.names())


def _model(encoder: str, layer: str, prior: str) -> VAE:
    return build_vae(ModelConfig(encoder=encoder, layer=layer, prior=prior), channels=1,
                     dataset_latent=16, seed=0, objective=OBJECTIVES.build("elbo"))


def _kl_to_unit_gaussians(mu: torch.Tensor, logvar: torch.Tensor,
                          centres: torch.Tensor) -> torch.Tensor:
    """Closed-form KL(q || N(c, I)) summed over the D dimensions, for q = N(mu, diag(exp(logvar)))
    (B, D) and each centre c of `centres` (K, D): (K, B)."""
    diff = mu[None] - centres[:, None]  # (K, B, D)
    return 0.5 * (logvar.exp()[None] + diff * diff - 1 - logvar[None]).sum(-1)


@pytest.mark.parametrize("layer", ["fc", "conv"])
@pytest.mark.parametrize("encoder", ["NL", "RKS"])
def test_vamp_with_a_mean_only_encoder_starts_at_the_normal_priors_order(encoder: str,
                                                                         layer: str) -> None:
    """NL and RKS fix q's variance at sigma2 = 1e-6; components of that variance would be spikes
    and RT at init -9,000 (NL) to -84,000 (RKS) per dimension. With unit-variance components
    N(m_k, I) at the encoder's means m_k of the pseudo-inputs, KL is convex in p, so
    KL(q || 1/K sum_k N(m_k, I)) <= 1/K sum_k KL(q || N(m_k, I)), each closed-form: a bound of
    the normal prior's kind, KL(q || N(0, I)), with m_k in place of 0."""
    torch.manual_seed(10)
    x = torch.rand(512, 1, 32, 32)  # (B, 1, 32, 32), like the pseudo-inputs' start
    vamp, normal = _model(encoder, layer, "vamp"), _model(encoder, layer, "normal")
    with torch.no_grad():
        rt = vamp(x).rt  # (B,) one-sample -KL per dimension
        mu, logvar = vamp.encoder(x)  # (B, D)
        m, _ = vamp.encoder(vamp.prior.pseudo_inputs)  # (K, D)
        mu_n, logvar_n = normal.encoder(x)
    d, n = mu.shape[1], mu.shape[0]
    bound = _kl_to_unit_gaussians(mu, logvar, m).mean(0)  # (B,) upper bound of the KL
    kl_normal = _kl_to_unit_gaussians(mu_n, logvar_n, torch.zeros(1, d))[0]  # (B,)
    kl = -rt * d  # (B,) one-sample KL estimates
    se = kl.std().item() / math.sqrt(n)
    assert kl.mean().item() <= bound.mean().item() + 5 * se, (kl.mean(), bound.mean())
    assert kl.mean().item() >= -5 * se
    # the same order as the normal prior's: the bound moves the centre from 0 to m_k only
    assert bound.mean().item() <= 2 * kl_normal.mean().item(), (bound.mean(), kl_normal.mean())


@pytest.mark.parametrize("encoder", ["NL", "RKS"])
def test_vamp_with_a_mean_only_encoder_stays_finite_and_learns_its_variance(encoder: str) -> None:
    """A few Adam steps on the negative ELBO: the components' log-variance and the pseudo-inputs
    move, and RT stays finite and below the bound of the test above."""
    torch.manual_seed(11)
    x = torch.rand(128, 1, 32, 32)
    model = _model(encoder, "fc", "vamp")
    prior = model.prior
    assert isinstance(prior, VampPrior) and prior.logvar is not None
    start_logvar, start_inputs = prior.logvar.detach().clone(), prior.pseudo_inputs.detach().clone()
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(5):
        terms = model(x)
        loss = terms.neg_elbo.mean()
        assert math.isfinite(loss.item())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert not torch.equal(prior.logvar.detach(), start_logvar)
    assert not torch.equal(prior.pseudo_inputs.detach(), start_inputs)
    with torch.no_grad():
        rt = model(x).rt
        mu, logvar = model.encoder(x)
        mean, _ = model.encoder(prior.pseudo_inputs)
        var = prior.logvar.exp()  # the learnt component variance: the bound with it in place of I
        diff = mu[None] - mean[:, None]  # (K, B, D)
        bound = 0.5 * ((logvar.exp()[None] + diff * diff) / var - 1 - logvar[None]
                       + prior.logvar).sum(-1).mean(0)  # (B,)
    assert torch.isfinite(rt).all()
    kl = -rt * mu.shape[1]
    assert kl.mean().item() <= bound.mean().item() + 5 * kl.std().item() / math.sqrt(len(kl))
