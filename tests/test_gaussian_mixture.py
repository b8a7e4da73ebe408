"""The Gaussian mixture (shared or per-component covariances): its closed forms against independent computations."""

from __future__ import annotations

import math

import pytest
import torch

from manifold_ps.priors import GaussianMixture, GaussianPrior, VPSDE, kmeans

DT = torch.float64


def _covariance(d: int, g: torch.Generator, rank: int | None = None, channels: int = 1) -> GaussianPrior:
    a = torch.randn(d, d, generator=g, dtype=DT)
    full = GaussianPrior(torch.zeros(channels, d // channels, dtype=DT), a @ a.T / d + 0.1 * torch.eye(d, dtype=DT))
    if rank is None:
        return full
    return GaussianPrior.from_factors(full.mean, full.eigvecs[:, -rank:], full.eigvals[-rank:], 0.05)  # low rank + floor


def _mixture(d: int = 5, k: int = 3, seed: int = 0, *, per_component: bool = False, channels: int = 1) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    covs = ([_covariance(d, g, rank=2 if j % 2 else None, channels=channels) for j in range(k)] if per_component
            else _covariance(d, g, channels=channels))
    means = 2.0 * torch.randn(k, channels, d // channels, generator=g, dtype=DT)
    return GaussianMixture(means, torch.rand(k, generator=g, dtype=DT) + 0.2, covs)


KINDS = pytest.mark.parametrize("per_component", [False, True], ids=["shared", "per-component"])


@KINDS
@pytest.mark.parametrize("t", [0.0, 0.01, 0.3, 0.9])
def test_marginal_density_is_the_dense_mixture_of_normals(t: float, per_component: bool) -> None:
    mix = _mixture(per_component=per_component)
    x = torch.randn(7, 1, 5, generator=torch.Generator().manual_seed(1), dtype=DT)
    tt = torch.full((7,), t, dtype=DT)
    a, s2 = mix.sde.alpha(tt[0]), mix.sde.std(tt[0]) ** 2
    covs = [a * a * mix.covariances[j if per_component else 0].covariance() + s2 * torch.eye(5, dtype=DT)
            for j in range(mix.components)]
    dense = torch.stack([torch.distributions.MultivariateNormal(a * m.flatten(), c).log_prob(x.flatten(1))
                         for m, c in zip(mix.means, covs)], 1) + mix.log_weights
    torch.testing.assert_close(mix.marginal_log_prob(x, tt), torch.logsumexp(dense, 1))
    torch.testing.assert_close(mix.responsibilities(x, tt), torch.softmax(dense, 1))


@KINDS
@pytest.mark.parametrize("t", [0.01, 0.2, 0.8])
def test_denoiser_is_tweedie_of_the_marginal_density(t: float, per_component: bool) -> None:
    """``E[x_0 | x_t] = (x_t + sigma^2 grad log p_t(x_t)) / alpha``, the gradient by autograd."""
    mix = _mixture(per_component=per_component)
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


@KINDS
def test_samples_have_the_mixture_mean_and_covariance(per_component: bool) -> None:
    mix = _mixture(d=3, k=2, per_component=per_component)
    draws = mix.sample_data(40000, generator=torch.Generator().manual_seed(5)).flatten(1)
    w = mix.log_weights.exp()
    mean = (w[:, None] * mix.means.flatten(1)).sum(0)
    centred = mix.means.flatten(1) - mean
    within = sum(w[j] * mix.covariances[j if per_component else 0].covariance() for j in range(2))
    cov = within + (w[:, None, None] * centred[:, :, None] * centred[:, None, :]).sum(0)
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


def _clustered(n_per: tuple[int, ...] = (60, 40), d: int = 5, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Clusters with different covariances ``(N, 1, d)`` and their labels ``(N,)``."""
    g = torch.Generator().manual_seed(seed)
    xs, labels = [], []
    for j, n in enumerate(n_per):
        a = torch.randn(d, d, generator=g, dtype=DT) * (j + 1)
        xs.append(4.0 * j + torch.randn(n, d, generator=g, dtype=DT) @ a)
        labels.append(torch.full((n,), j))
    return torch.cat(xs)[:, None], torch.cat(labels)


def test_per_component_covariance_is_the_cluster_covariance_shrunk_toward_the_pooled_one() -> None:
    x, labels = _clustered()
    n, k, s, ridge = x.shape[0], 2, 0.3, 1e-3
    mix = GaussianMixture.fit(x, k, labels=labels, covariance="per-component", shrinkage=s, ridge=ridge)
    flat = x.flatten(1)
    resid = torch.cat([flat[labels == j] - flat[labels == j].mean(0) for j in range(k)])
    pooled = resid.T @ resid / (n - k)
    for j in range(k):
        rj = flat[labels == j] - flat[labels == j].mean(0)
        expected = (1 - s) * rj.T @ rj / (rj.shape[0] - 1) + s * pooled + ridge * torch.eye(5, dtype=DT)
        torch.testing.assert_close(mix.covariances[j].covariance(), expected)
        torch.testing.assert_close(mix.means[j, 0], flat[labels == j].mean(0))
    assert mix.fit_info["covariance"] == "per-component" and mix.fit_info["shrinkage"] == s
    # s = 1 is the shared mixture
    one = GaussianMixture.fit(x, k, labels=labels, covariance="per-component", shrinkage=1.0, ridge=ridge)
    shared = GaussianMixture.fit(x, k, labels=labels, ridge=ridge)
    xt, tt = x[:6] + 1.0, torch.tensor([0.0, 0.01, 0.1, 0.3, 0.6, 1.0], dtype=DT)
    torch.testing.assert_close(one.denoise(xt, tt), shared.denoise(xt, tt))
    torch.testing.assert_close(one.marginal_log_prob(xt, tt), shared.marginal_log_prob(xt, tt))


def test_per_component_rank_keeps_the_top_directions_and_the_total_variance() -> None:
    """With ``rank``, each shrunk covariance is truncated like probabilistic PCA (checked densely)."""
    x, labels = _clustered()
    n, k, s, ridge, rank = x.shape[0], 2, 0.5, 1e-3, 2
    low = GaussianMixture.fit(x, k, labels=labels, covariance="per-component", shrinkage=s, ridge=ridge, rank=rank)
    flat = x.flatten(1)
    resid = torch.cat([flat[labels == j] - flat[labels == j].mean(0) for j in range(k)])
    pooled = GaussianPrior.fit((resid * math.sqrt((n - 1) / (n - k)))[:, None], rank=rank, ridge=ridge)
    eye = torch.eye(5, dtype=DT)
    for j in range(k):
        rj = flat[labels == j] - flat[labels == j].mean(0)
        dense = (1 - s) * rj.T @ rj / (rj.shape[0] - 1) + s * (pooled.covariance() - ridge * eye)
        evals, evecs = torch.linalg.eigh(dense)
        evals, evecs = evals.flip(0), evecs.flip(1)
        floor = evals[rank:].mean()
        expected = floor * eye + (evecs[:, :rank] * (evals[:rank] - floor)) @ evecs[:, :rank].T + ridge * eye
        got = low.covariances[j]
        assert got.rank == rank
        torch.testing.assert_close(got.covariance(), expected)
        torch.testing.assert_close(torch.trace(got.covariance()), torch.trace(dense + ridge * eye))


def test_shrinkage_is_chosen_by_the_validation_likelihood() -> None:
    x, labels = _clustered((150, 150), seed=8)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    x, labels = x[perm], labels[perm]
    candidates = (0.05, 0.5, 1.0)
    mix = GaussianMixture.fit(x[:240], 2, labels=labels[:240], covariance="per-component", shrinkage=candidates,
                              ridge=1e-3, validation=x[240:])
    scores = mix.fit_info["validation_log_likelihood"]
    assert len(scores) == 3 and mix.fit_info["shrinkage"] == candidates[max(range(3), key=lambda i: scores[i])]
    # the clusters' covariances differ (scales 1 and 2): pooling them all is the worst fit
    assert scores[2] < max(scores[:2])
    for s, score in zip(candidates, scores):
        again = GaussianMixture.fit(x[:240], 2, labels=labels[:240], covariance="per-component", shrinkage=s,
                                    ridge=1e-3)
        assert abs(float(again.log_prob(x[240:]).mean()) - score) < 1e-8


@KINDS
@pytest.mark.parametrize("channels", [1, 2])
def test_denoising_variance_is_the_dense_formula_and_bounds_the_error(per_component: bool, channels: int) -> None:
    mix = _mixture(d=4, k=3, seed=9, per_component=per_component, channels=channels)
    t = torch.tensor([0.005, 0.05, 0.3, 1.0], dtype=DT)
    w = mix.log_weights.exp()
    mbar = (w[:, None] * mix.means.flatten(1)).sum(0)
    eye = torch.eye(4, dtype=DT)
    expected = []
    for ti in t:
        a, var = mix.sde.alpha(ti), mix.sde.std(ti) ** 2
        total = torch.zeros(channels, dtype=DT)
        for j in range(3):
            s = mix.covariances[j if per_component else 0].covariance()
            post = s - a**2 * s @ torch.linalg.solve(a**2 * s + var * eye, s)
            off = var * torch.linalg.solve(a**2 * s + var * eye, mix.means[j].flatten() - mbar)
            total = total + w[j] * (post.diagonal() + off.square()).reshape(channels, -1).mean(-1)
        expected.append(total)
    torch.testing.assert_close(mix.denoising_variance(t), torch.stack(expected))
    # it bounds the mixture denoiser's error on its own samples, tightly at full noise
    g = torch.Generator().manual_seed(10)
    x0 = mix.sample_data(20000, generator=g)
    for ti in t:
        tt = torch.full((x0.shape[0],), float(ti), dtype=DT)
        xt = mix.sde.alpha(tt)[:, None, None] * x0 + mix.sde.std(tt)[:, None, None] * torch.randn(
            x0.shape, generator=g, dtype=DT)
        err = float((mix.denoise(xt, tt) - x0).square().mean())
        bound = float(mix.denoising_variance(ti[None]).mean())
        assert err <= 1.03 * bound, (float(ti), err, bound)
        if float(ti) == 1.0:
            assert err >= 0.97 * bound, (err, bound)


def test_fit_with_labels_and_bad_settings() -> None:
    x, labels = _clustered()
    with pytest.raises(ValueError, match="labels must be"):
        GaussianMixture.fit(x, 2, labels=labels[:-1])
    with pytest.raises(ValueError, match="labels must be"):
        GaussianMixture.fit(x, 2, labels=labels + 1)
    with pytest.raises(ValueError, match="every cluster needs a signal"):
        GaussianMixture.fit(x, 3, labels=labels, covariance="per-component")  # cluster 2 is empty
    lonely = labels.clone()
    lonely[0] = 2  # a cluster of one signal: the pooled covariance, scaled by the shrinkage
    single = GaussianMixture.fit(x, 3, labels=lonely, covariance="per-component", shrinkage=0.5, ridge=1e-3)
    pooled = GaussianMixture.fit(x, 3, labels=lonely, ridge=1e-3).within.covariance()
    eye = torch.eye(5, dtype=DT)
    torch.testing.assert_close(single.covariances[2].covariance(), 0.5 * (pooled - 1e-3 * eye) + 1e-3 * eye)
    with pytest.raises(ValueError, match="covariance must be"):
        GaussianMixture.fit(x, 2, covariance="diagonal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shrinkage"):
        GaussianMixture.fit(x, 2, covariance="per-component", shrinkage=0.0)
    with pytest.raises(ValueError, match="validation"):
        GaussianMixture.fit(x, 2, covariance="per-component", shrinkage=(0.5, 1.0))
    shared = GaussianMixture.fit(x, 2, labels=labels, ridge=1e-3)
    assert shared.shared and shared.within.rank == 5
    per = GaussianMixture.fit(x, 2, labels=labels, covariance="per-component", ridge=1e-3)
    with pytest.raises(ValueError, match="one covariance per component"):
        per.within
    with pytest.raises(ValueError, match="one shared covariance or one per component"):
        GaussianMixture(per.means, torch.ones(2, dtype=DT), [per.covariances[0]] * 3)


def test_state_round_trip() -> None:
    mix = _mixture(per_component=True)
    again = GaussianMixture.from_state(mix.state_dict(), mix.sde, fit_info={"a": 1})
    x, t = torch.randn(3, 1, 5, dtype=DT), torch.tensor([0.01, 0.2, 0.7], dtype=DT)
    torch.testing.assert_close(again.denoise(x, t), mix.denoise(x, t), rtol=0, atol=0)
    assert again.fit_info == {"a": 1} and not again.shared
    with pytest.raises(ValueError, match="lacks"):
        GaussianMixture.from_state({"means": mix.means}, mix.sde)
