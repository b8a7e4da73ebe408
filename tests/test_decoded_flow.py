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
