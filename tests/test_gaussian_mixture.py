"""The shared-covariance Gaussian mixture: its closed forms against independent computations."""

from __future__ import annotations

import math

import pytest
import torch

from manifold_ps.priors import GaussianMixture, GaussianPrior, VPSDE, kmeans

DT = torch.float64


def _mixture(d: int = 5, k: int = 3, seed: int = 0) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=DT)
    within = GaussianPrior(torch.zeros(1, d, dtype=DT), a @ a.T / d + 0.1 * torch.eye(d, dtype=DT))
    means = 2.0 * torch.randn(k, 1, d, generator=g, dtype=DT)
    return GaussianMixture(means, torch.rand(k, generator=g, dtype=DT) + 0.2, within)


@pytest.mark.parametrize("t", [0.0, 0.01, 0.3, 0.9])
def test_marginal_density_is_the_dense_mixture_of_normals(t: float) -> None:
    mix = _mixture()
    x = torch.randn(7, 1, 5, generator=torch.Generator().manual_seed(1), dtype=DT)
    tt = torch.full((7,), t, dtype=DT)
    a, s2 = mix.sde.alpha(tt[0]), mix.sde.std(tt[0]) ** 2
    cov = a * a * mix.within.covariance() + s2 * torch.eye(5, dtype=DT)
    dense = torch.stack([torch.distributions.MultivariateNormal(a * m.flatten(), cov).log_prob(x.flatten(1))
                         for m in mix.means], 1) + mix.log_weights
    torch.testing.assert_close(mix.marginal_log_prob(x, tt), torch.logsumexp(dense, 1))
    torch.testing.assert_close(mix.responsibilities(x, tt), torch.softmax(dense, 1))


@pytest.mark.parametrize("t", [0.01, 0.2, 0.8])
def test_denoiser_is_tweedie_of_the_marginal_density(t: float) -> None:
    """``E[x_0 | x_t] = (x_t + sigma^2 grad log p_t(x_t)) / alpha``, the gradient by autograd."""
    mix = _mixture()
    x = 2 * torch.randn(6, 1, 5, generator=torch.Generator().manual_seed(2), dtype=DT)
    tt = torch.full((6,), t, dtype=DT)
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mix.marginal_log_prob(xr, tt).sum(), xr)
    a, s2 = mix.sde.alpha(tt)[:, None, None], mix.sde.std(tt)[:, None, None] ** 2
    torch.testing.assert_close(mix.denoise(x, tt), (x + s2 * grad) / a)
    torch.testing.assert_close(mix.score(x, tt), grad)


def test_one_component_is_the_fitted_gaussian() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 1, 6, generator=g, dtype=DT) @ torch.randn(6, 6, generator=g, dtype=DT) + 1.0
    gauss = GaussianPrior.fit(x, ridge=1e-3)
    mix = GaussianMixture.fit(x, 1, ridge=1e-3)
    assert mix.components == 1 and mix.fit_info["cluster_sizes"] == [200]
    xt = torch.randn(5, 1, 6, generator=g, dtype=DT)
    tt = torch.tensor([0.0, 0.01, 0.1, 0.5, 1.0], dtype=DT)
    torch.testing.assert_close(mix.denoise(xt, tt), gauss.denoise(xt, tt))
    torch.testing.assert_close(mix.marginal_log_prob(xt, tt), gauss.marginal_log_prob(xt, tt))


def test_fit_recovers_separated_clusters_and_beats_one_gaussian() -> None:
    g = torch.Generator().manual_seed(4)
    centres = 6.0 * torch.randn(3, 1, 8, generator=g, dtype=DT)
    truth = torch.tensor([0] * 120 + [1] * 60 + [2] * 20)
    x = centres[truth] + 0.5 * torch.randn(200, 1, 8, generator=g, dtype=DT)
    mix = GaussianMixture.fit(x, 3, generator=torch.Generator().manual_seed(0), ridge=1e-4)
    assert sorted(mix.fit_info["cluster_sizes"]) == [20, 60, 120]
    order = [int(torch.cdist(c.flatten()[None], mix.means.flatten(1)).argmin()) for c in centres]
    torch.testing.assert_close(mix.log_weights[order].exp(), torch.tensor([0.6, 0.3, 0.1], dtype=DT))
    assert float((mix.means[order] - centres).abs().max()) < 0.5
    # the pooled within-cluster variance is the noise's (0.25), not the spread of the centres
    assert abs(float(mix.within.covariance().diagonal().mean()) - 0.25) < 0.05
    again = GaussianMixture.fit(x, 3, generator=torch.Generator().manual_seed(0), ridge=1e-4)
    torch.testing.assert_close(again.means, mix.means, rtol=0, atol=0)
    # on fresh draws of the same law its denoiser beats the single Gaussian's at a middle noise level
    fresh = centres[truth] + 0.5 * torch.randn(200, 1, 8, generator=g, dtype=DT)
    tt = torch.full((200,), 0.5, dtype=DT)
    xt = mix.sde.alpha(tt)[:, None, None] * fresh + mix.sde.std(tt)[:, None, None] * torch.randn(
        fresh.shape, generator=g, dtype=DT)
    gauss = GaussianPrior.fit(x, ridge=1e-4)
    assert float((mix.denoise(xt, tt) - fresh).square().mean()) < 0.5 * float((gauss.denoise(xt, tt) - fresh).square().mean())


def test_samples_have_the_mixture_mean_and_covariance() -> None:
    mix = _mixture(d=3, k=2)
    draws = mix.sample_data(40000, generator=torch.Generator().manual_seed(5)).flatten(1)
    w = mix.log_weights.exp()
    mean = (w[:, None] * mix.means.flatten(1)).sum(0)
    centred = mix.means.flatten(1) - mean
    cov = mix.within.covariance() + (w[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0)
    scale = float(cov.diagonal().max().sqrt())
    torch.testing.assert_close(draws.mean(0), mean, rtol=0, atol=0.05 * scale)
    torch.testing.assert_close(torch.cov(draws.T), cov, rtol=0, atol=0.05 * scale**2)


def test_kmeans_labels_and_validation() -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.cat([torch.randn(30, 2, generator=g, dtype=DT) - 10, torch.randn(30, 2, generator=g, dtype=DT) + 10])
    labels = kmeans(x, 2, generator=torch.Generator().manual_seed(0))
    assert labels[:30].unique().numel() == 1 and labels[30:].unique().numel() == 1 and labels[0] != labels[30]
    assert kmeans(x, 60, generator=torch.Generator().manual_seed(0)).unique().numel() == 60  # every cluster kept
    with pytest.raises(ValueError, match="k must lie"):
        kmeans(x, 61)
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        kmeans(x[None], 2)
    bad = x.clone()
    bad[3, 1] = math.nan
    with pytest.raises(ValueError, match="NaN|finite"):
        kmeans(bad, 2)
    with pytest.raises(ValueError, match="components must lie"):
        GaussianMixture.fit(x[:, None], 60)
    within = GaussianPrior(torch.zeros(1, 2, dtype=DT), torch.eye(2, dtype=DT), sde=VPSDE())
    with pytest.raises(ValueError, match="means must have shape"):
        GaussianMixture(torch.zeros(2, 1, 3, dtype=DT), torch.ones(2, dtype=DT), within)
    with pytest.raises(ValueError, match="positive"):
        GaussianMixture(torch.zeros(2, 1, 2, dtype=DT), torch.tensor([1.0, 0.0], dtype=DT), within)
    mix = GaussianMixture(torch.zeros(2, 1, 2, dtype=DT), torch.ones(2, dtype=DT), within)
    with pytest.raises(ValueError, match="vertices|shape"):
        mix.denoise(torch.zeros(1, 1, 3, dtype=DT), torch.zeros(1, dtype=DT))
