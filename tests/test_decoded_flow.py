"""The decoded flow: the ELBO of the noised marginal, the Gaussian base and decoding."""

from __future__ import annotations

import math

import pytest
import torch

from manifold_ps.priors import GaussianPrior

DT = torch.float64


def _gaussian(d: int = 6, *, rank: int | None = None, seed: int = 0) -> GaussianPrior:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=DT)
    cov = a @ a.T / d + 0.05 * torch.eye(d, dtype=DT)
    mean = torch.randn(1, d, generator=g, dtype=DT)
    if rank is None:
        return GaussianPrior(mean, cov)
    lam, q = torch.linalg.eigh(cov)
    lam, q = lam.flip(0), q.flip(1)
    floor = lam[rank:].mean()
    return GaussianPrior.from_factors(mean, q[:, :rank], lam[:rank], floor)


@pytest.mark.parametrize("t", [0.005, 0.02, 0.2])
@pytest.mark.parametrize("rank", [None, 2])
def test_marginal_elbo_bounds_the_exact_marginal(t: float, rank: int | None) -> None:
    prior = _gaussian(rank=rank)
    g = torch.Generator().manual_seed(1)
    u = prior.sde.alpha(torch.tensor(t, dtype=DT)) * prior.mean[None] + 0.4 * torch.randn(3, 1, 6, generator=g, dtype=DT)
    n = 20000
    bound = prior.marginal_elbo(u.repeat_interleave(n, 0), t, n_time=2, generator=g).reshape(3, n)
    exact = prior.marginal_log_prob(u, torch.full((3,), t, dtype=DT))
    se = bound.std(-1) / math.sqrt(n)
    # a lower bound within Monte-Carlo error, and tight: the Gaussian's scores are its true scores
    assert bool((bound.mean(-1) <= exact + 4 * se).all())
    assert bool((bound.mean(-1) >= exact - 4 * se).all())


def test_marginal_elbo_constants_and_validation() -> None:
    prior = _gaussian()
    u = torch.randn(5, 1, 6, dtype=DT)
    full = prior.marginal_elbo(u, 0.05, generator=torch.Generator().manual_seed(0))
    bare = prior.marginal_elbo(u, 0.05, include_constants=False, generator=torch.Generator().manual_seed(0))
    diff = full - bare
    torch.testing.assert_close(diff, diff[:1].expand(5))
    with pytest.raises(ValueError, match="t must lie"):
        prior.marginal_elbo(u, 0.0)
    with pytest.raises(ValueError, match="n_time"):
        prior.marginal_elbo(u, 0.1, n_time=0)


# -- the Gaussian base ------------------------------------------------------------------------------
def _contracted(prior: GaussianPrior, t: float) -> GaussianPrior:
    """The prior of D(u) for u ~ p_t, built densely (independent of the base's spectral code)."""
    a = prior.sde.alpha(torch.tensor(t, dtype=DT))
    s2 = prior.sde.std(torch.tensor(t, dtype=DT)) ** 2
    cov = prior.covariance()
    eye = torch.eye(cov.shape[0], dtype=DT)
    gain = a * cov @ torch.linalg.inv(a * a * cov + s2 * eye)
    cu = a * a * cov + s2 * eye
    return GaussianPrior(prior.mean, gain @ cu @ gain.T)


def _masks(b: int, d: int, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(b, d, generator=g) > 0.4
    m[:, 0] = True
    return m


@pytest.mark.parametrize("rank", [None, 3])
def test_gaussian_base_logdet_and_inverse(rank: int | None) -> None:
    from manifold_ps.flows import GaussianBase
    from manifold_ps.operators import Inpainting

    prior = _gaussian(rank=rank)
    base = GaussianBase(prior, 0.03)
    op = Inpainting(_masks(3, 6), sigma=0.2)
    y = torch.randn(3, 1, 6, dtype=DT)
    state = base.prepare(y, op)
    d = 6
    # the Jacobian of v -> u, column by column, against slogdet
    basis = torch.eye(d, dtype=DT).reshape(1, d, 1, d).expand(3, d, 1, d)
    u0, _ = base.call_and_ladj(torch.zeros(3, 1, 1, d, dtype=DT), state)
    cols, ladj = base.call_and_ladj(basis.contiguous(), state)
    jac = (cols - u0).reshape(3, d, d).mT
    torch.testing.assert_close(ladj[:, 0], torch.linalg.slogdet(jac).logabsdet)
    v = torch.randn(3, 5, 1, d, dtype=DT)
    u, ladj = base.call_and_ladj(v, state)
    back, iladj = base.inverse_and_ladj(u, state)
    torch.testing.assert_close(back, v)
    torch.testing.assert_close(iladj, -ladj)


@pytest.mark.parametrize("rank", [None, 3])
def test_gaussian_base_decodes_to_the_contracted_posterior(rank: int | None) -> None:
    from manifold_ps.flows import GaussianBase
    from manifold_ps.operators import Inpainting
    from manifold_ps.priors.gaussian import linear_gaussian_posterior

    t = 0.05
    prior = _gaussian(rank=rank)
    base = GaussianBase(prior, t)
    masks = _masks(2, 6)
    y = torch.randn(2, 1, 6, dtype=DT)
    state = base.prepare(y, Inpainting(masks, sigma=0.3))
    # u = mean_u + M v is affine: its decoded mean and covariance, exactly
    d = 6
    u0, _ = base.call_and_ladj(torch.zeros(2, 1, 1, d, dtype=DT), state)
    cols, _ = base.call_and_ladj(torch.eye(d, dtype=DT).reshape(1, d, 1, d).expand(2, d, 1, d).contiguous(), state)
    tt = torch.full((d,), t, dtype=DT)
    contracted = _contracted(prior, t)
    for i in range(2):
        jac_x = (prior.denoise(cols[i], tt) - prior.denoise(u0[i].expand(d, 1, d), tt)).reshape(d, d).T
        mean_x = prior.denoise(u0[i], tt[:1])
        ref_mean, ref_cov = linear_gaussian_posterior(contracted, Inpainting(masks[i], sigma=0.3), y[i:i + 1])
        torch.testing.assert_close(mean_x, ref_mean)
        torch.testing.assert_close(jac_x @ jac_x.T, ref_cov)
        torch.testing.assert_close(state.mean_x[i], ref_mean.flatten())
