"""The priors: the flow's log-density, its inverse, and log_prob against sample for every prior."""

from __future__ import annotations

import math

import pytest
import torch

from rlv.models.priors import PRIORS, RealNVP, StandardNormal, standard_normal_log_density


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
    prior = PRIORS.build(name, 2, hidden=8).double()
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
