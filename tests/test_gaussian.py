"""GaussianPrior.fit, its exact posterior under every linear operator, and the GaussianPosterior
sampler, checked against dense closed-form solves and direct multivariate-normal densities."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor
from torch.distributions import MultivariateNormal

from manifold_ps.baselines import GaussianPosterior
from manifold_ps.geometry import ImageGrid
from manifold_ps.operators import Denoising, Downsample2x, HeatBlur, ImageBlur, Inpainting, LinearOperator, random_mask
from manifold_ps.priors import GaussianPrior, operator_matrix
from manifold_ps.sampling import PosteriorSampler

H = W = 4
V = H * W
F64 = torch.float64


def _signals(n: int, seed: int = 0, channels: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, channels, V, generator=g, dtype=F64).cumsum(-1) * 0.3
    return base + 0.5 + 0.05 * torch.randn(n, channels, V, generator=g, dtype=F64)


def _prior(kind: str, channels: int = 1) -> GaussianPrior:
    x = _signals(300, channels=channels)
    if kind == "full":
        return GaussianPrior.fit(x)
    if kind == "lowrank":
        return GaussianPrior.fit(x, rank=5, ridge=1e-3)
    if kind == "singular":  # rank 6 data, no ridge: a degenerate covariance
        return GaussianPrior.fit(x[:7])
    raise AssertionError(kind)


OPERATORS: dict[str, Callable[[int], LinearOperator]] = {
    "inpainting-shared": lambda b: Inpainting(random_mask(V, 0.4, 1, generator=torch.Generator().manual_seed(1))[0], 0.1),
    "inpainting-batched": lambda b: Inpainting(random_mask(V, 0.4, b, generator=torch.Generator().manual_seed(2)), 0.1),
    "denoising": lambda b: Denoising(V, sigma=0.2),
    "heat-blur": lambda b: HeatBlur.from_geometry(ImageGrid(H, W), time=0.05, k=10, sigma=0.05),
    "image-blur": lambda b: ImageBlur(H, W, kernel_sigma=1.0, kernel_size=3, sigma=0.05),
    "downsample": lambda b: Downsample2x(H, W, sigma=0.05),
}


def _dense_truth(prior: GaussianPrior, op: LinearOperator, y: Tensor, i: int) -> tuple[Tensor, Tensor, Tensor]:
    """Posterior mean, covariance and evidence of measurement ``i`` by dense linear algebra."""
    op_i = op.select(torch.tensor([i])) if isinstance(op, Inpainting) else op
    a = operator_matrix(op_i, prior.channels, V, like=prior.mean)
    ay = op_i.A(prior.mean[None])
    rows = op_i.measured(ay).expand_as(ay).reshape(-1)
    a = a[rows]
    s = prior.covariance()
    mu = prior.mean.flatten()
    yi = y[i].flatten()[rows]
    g = a @ s @ a.T + op.sigma**2 * torch.eye(a.shape[0], dtype=F64)
    if float(torch.linalg.eigvalsh(s).min()) > 1e-9:  # precision form, independent of the gain form
        cov = torch.linalg.inv(torch.linalg.inv(s) + a.T @ a / op.sigma**2)
        mean = cov @ (torch.linalg.solve(s, mu) + a.T @ yi / op.sigma**2)
    else:
        gain = s @ a.T @ torch.linalg.inv(g)
        mean, cov = mu + gain @ (yi - a @ mu), s - gain @ a @ s
    evidence = MultivariateNormal(a @ mu, covariance_matrix=g).log_prob(yi)
    return mean, 0.5 * (cov + cov.T), evidence


# -- fitting ---------------------------------------------------------------------------------------------
def test_fit_matches_empirical_moments() -> None:
    x = _signals(400, channels=2)
    prior = GaussianPrior.fit(x)
    flat = x.flatten(1)
    torch.testing.assert_close(prior.mean, x.mean(0))
    torch.testing.assert_close(prior.covariance(), torch.cov(flat.T), atol=1e-10, rtol=1e-8)
    assert prior.fit_info["signals"] == 400 and prior.fit_info["rank"] == 2 * V


def test_fit_low_rank_is_probabilistic_pca() -> None:
    x = _signals(400)
    prior = GaussianPrior.fit(x, rank=4)
    evals, evecs = torch.linalg.eigh(torch.cov(x.flatten(1).T))
    evals, evecs = evals.flip(0), evecs.flip(1)
    torch.testing.assert_close(prior.eigvals, evals[:4])
    torch.testing.assert_close(float(prior.floor), float(evals[4:].mean()))
    top = evecs[:, :4]
    torch.testing.assert_close((prior.eigvecs @ prior.eigvecs.T), top @ top.T, atol=1e-8, rtol=0)
    expected = float(evals[4:].mean()) * torch.eye(V, dtype=F64) + (top * (evals[:4] - evals[4:].mean())) @ top.T
    torch.testing.assert_close(prior.covariance(), expected, atol=1e-10, rtol=1e-8)


def test_fit_ledoit_wolf_weight_matches_direct_formula() -> None:
    x = _signals(30)  # few signals: shrinkage matters
    prior = GaussianPrior.fit(x, shrinkage="ledoit-wolf")
    xc = (x.flatten(1) - x.flatten(1).mean(0)).numpy()
    n, d = xc.shape
    s = xc.T @ xc / n
    mu = float(s.trace()) / d
    d2 = float(((s - mu * torch.eye(d, dtype=F64).numpy()) ** 2).sum())
    b2 = min(sum(float(((xi[:, None] * xi[None, :] - s) ** 2).sum()) for xi in xc) / n**2, d2)
    rho = b2 / d2
    assert 0 < rho < 1
    assert prior.fit_info["ledoit_wolf_weight"] == pytest.approx(rho, rel=1e-9)
    unbiased = torch.as_tensor(s * n / (n - 1))
    expected = (1 - rho) * unbiased + rho * float(unbiased.trace()) / d * torch.eye(d, dtype=F64)
    torch.testing.assert_close(prior.covariance(), expected, atol=1e-10, rtol=1e-8)


def test_fit_chooses_ridge_by_validation_likelihood() -> None:
    x, val = _signals(40, seed=0), _signals(200, seed=1)
    ridges = [1e-6, 1e-3, 1e-2, 1.0]
    prior = GaussianPrior.fit(x, ridge=ridges, validation=val)
    scores = []
    for r in ridges:
        cov = torch.cov(x.flatten(1).T) + r * torch.eye(V, dtype=F64)
        scores.append(float(MultivariateNormal(x.flatten(1).mean(0), covariance_matrix=cov).log_prob(val.flatten(1)).mean()))
    assert prior.fit_info["ridge"] == ridges[max(range(4), key=scores.__getitem__)]
    torch.testing.assert_close(torch.tensor(prior.fit_info["validation_log_likelihood"], dtype=F64),
                               torch.tensor(scores, dtype=F64))


def test_fit_large_dimension_uses_randomized_svd(monkeypatch: pytest.MonkeyPatch) -> None:
    import manifold_ps.priors.gaussian as gaussian

    x = _signals(300)
    dense = GaussianPrior.fit(x, rank=3)
    monkeypatch.setattr(gaussian, "_DENSE_LIMIT", 4)
    with pytest.raises(ValueError, match="explicit rank"):
        GaussianPrior.fit(x)
    sketched = GaussianPrior.fit(x, rank=3)
    torch.testing.assert_close(sketched.eigvals, dense.eigvals, rtol=1e-6, atol=0)
    torch.testing.assert_close(float(sketched.floor), float(dense.floor), rtol=1e-6, atol=0)


@pytest.mark.parametrize("bad, match", [
    (lambda x: x[:1], "at least 2"),
    (lambda x: x[:, 0], "batch, channels, vertices"),
    (lambda x: torch.where(torch.arange(V) == 3, torch.nan, x), "NaN"),
])
def test_fit_rejects_bad_signals(bad: Callable[[Tensor], Tensor], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GaussianPrior.fit(bad(_signals(10)))


def test_fit_rejects_bad_settings() -> None:
    x = _signals(10)
    with pytest.raises(ValueError, match="validation"):
        GaussianPrior.fit(x, ridge=[0.1, 1.0])
    with pytest.raises(ValueError, match="rank"):
        GaussianPrior.fit(x, rank=V + 1)
    with pytest.raises(ValueError, match="ridge"):
        GaussianPrior.fit(x, ridge=-1.0)
    with pytest.raises(ValueError, match="vertices"):
        GaussianPrior.fit(x, ridge=[0.1, 1.0], validation=_signals(5)[..., :-1])


# -- the prior as a diffusion prior ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["full", "lowrank"])
def test_denoiser_and_marginal_are_exact(kind: str) -> None:
    prior = _prior(kind)
    s, mu = prior.covariance(), prior.mean.flatten()
    x = _signals(5, seed=3)
    t = torch.tensor([0.01, 0.05, 0.2, 0.5, 0.9], dtype=F64)
    a, sig = prior.sde.alpha(t), prior.sde.std(t)
    for i in range(5):
        cov_t = a[i] ** 2 * s + sig[i] ** 2 * torch.eye(V, dtype=F64)
        wiener = mu + a[i] * s @ torch.linalg.solve(cov_t, x[i].flatten() - a[i] * mu)
        torch.testing.assert_close(prior.denoise(x, t)[i].flatten(), wiener)
        direct = MultivariateNormal(a[i] * mu, covariance_matrix=cov_t).log_prob(x[i].flatten())
        torch.testing.assert_close(prior.marginal_log_prob(x, t)[i], direct)


def test_singular_prior_has_no_density_but_exact_samples() -> None:
    prior = _prior("singular")
    with pytest.raises(ValueError, match="singular"):
        prior.log_prob(_signals(2))
    assert prior.logdet() == -math.inf
    draws = prior.sample_data(20000, generator=torch.Generator().manual_seed(0)).flatten(1)
    torch.testing.assert_close(torch.cov(draws.T), prior.covariance(), atol=0.05 * float(prior.eigvals[0]), rtol=0)


def test_save_load_round_trip(tmp_path: Path) -> None:
    prior = GaussianPrior.fit(_signals(60), rank=4, ridge=[1e-3, 1e-2], validation=_signals(30, seed=5))
    path = prior.save(tmp_path / "gaussian.pt")
    loaded = GaussianPrior.load(path, num_vertices=V)
    for name in ("mean", "eigvecs", "eigvals", "floor"):
        torch.testing.assert_close(getattr(loaded, name), getattr(prior, name))
    assert loaded.fit_info == prior.fit_info
    assert loaded.sde.config() == prior.sde.config()
    with pytest.raises(ValueError, match="vertices"):
        GaussianPrior.load(path, num_vertices=V + 1)
    from manifold_ps.training import CHECKPOINT_FORMAT, save_checkpoint

    other = save_checkpoint({"format": CHECKPOINT_FORMAT, "mean": 0, "eigvecs": 0, "eigvals": 0, "floor": 0, "sde": {}},
                            tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a saved Gaussian prior"):
        GaussianPrior.load(other)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.pt"):
        GaussianPrior.load(tmp_path / "broken.pt")


# -- the exact posterior -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["full", "lowrank", "singular"])
@pytest.mark.parametrize("op_name", list(OPERATORS))
def test_posterior_matches_dense_solve(kind: str, op_name: str) -> None:
    prior = _prior(kind)
    b = 3
    op = OPERATORS[op_name](b)
    y = op(_signals(b, seed=7), generator=torch.Generator().manual_seed(8))
    post = prior.posterior(op)
    assert post.structured == (op_name.startswith("inpainting") or op_name == "denoising")
    mean, cov, evidence, logdet = post.mean(y), post.covariance(), post.log_evidence(y), post.logdet()
    std_diag, low = post.factor()
    for i in range(b):
        j = i if post.batch > 1 else 0
        m_ref, c_ref, ev_ref = _dense_truth(prior, op, y, i)
        scale = float(c_ref.abs().max())
        torch.testing.assert_close(mean[i].flatten(), m_ref, atol=1e-9, rtol=1e-7)
        torch.testing.assert_close(cov[j], c_ref, atol=1e-9 * scale, rtol=0)
        torch.testing.assert_close(torch.diag_embed(std_diag[j].square()) + low[j] @ low[j].T, c_ref,
                                   atol=1e-9 * scale, rtol=0)
        torch.testing.assert_close(post.std()[j].flatten(), c_ref.diagonal().clamp_min(0).sqrt(), atol=1e-7, rtol=1e-6)
        torch.testing.assert_close(evidence[i], ev_ref, atol=1e-8, rtol=1e-9)
        if kind == "singular":
            assert float(logdet[j]) == -math.inf
        else:
            torch.testing.assert_close(logdet[j], torch.linalg.slogdet(c_ref)[1], atol=1e-7, rtol=1e-9)


@pytest.mark.parametrize("op_name", ["inpainting-batched", "denoising", "heat-blur", "downsample"])
def test_posterior_draws_have_the_posterior_moments(op_name: str) -> None:
    prior = _prior("lowrank")
    op = OPERATORS[op_name](2)
    y = op(_signals(2, seed=9), generator=torch.Generator().manual_seed(10))
    post = prior.posterior(op)
    draws = post.sample(y, 40000, generator=torch.Generator().manual_seed(11))
    assert draws.shape == (2, 40000, 1, V)
    for i in range(2):
        _, c_ref, _ = _dense_truth(prior, op, y, i)
        flat = draws[i, :, 0]
        se = (c_ref.diagonal() / 40000).sqrt()
        assert bool(((flat.mean(0) - post.mean(y)[i, 0]).abs() < 5 * se + 1e-12).all())
        torch.testing.assert_close(torch.cov(flat.T), c_ref, atol=0.04 * float(c_ref.diagonal().max()), rtol=0)


def test_posterior_channels_and_errors() -> None:
    prior = _prior("full", channels=2)
    op = Inpainting(random_mask(V, 0.5, 2, generator=torch.Generator().manual_seed(0)), 0.1)
    y = op(_signals(2, seed=1, channels=2), generator=torch.Generator().manual_seed(2))
    post = prior.posterior(op)
    for i in range(2):
        m_ref, _, _ = _dense_truth(prior, op, y, i)
        torch.testing.assert_close(post.mean(y)[i].flatten(), m_ref)
    with pytest.raises(ValueError, match="masks"):
        post.mean(y.repeat(2, 1, 1))
    with pytest.raises(ValueError, match="NaN"):
        post.mean(torch.full_like(y, torch.nan))
    with pytest.raises(ValueError, match="sigma > 0"):
        prior.posterior(Denoising(V, sigma=0.0))
    with pytest.raises(ValueError, match="vertices"):
        prior.posterior(Denoising(V + 1, sigma=0.1))


# -- the sampler ----------------------------------------------------------------------------------------------
def test_gaussian_posterior_sampler_protocol() -> None:
    prior = _prior("lowrank")
    sampler = GaussianPosterior(prior)
    assert isinstance(sampler, PosteriorSampler)
    op = OPERATORS["inpainting-batched"](3)
    y = op(_signals(3, seed=4), generator=torch.Generator().manual_seed(5)).float()
    draws = sampler.sample(y, op, 5, generator=torch.Generator().manual_seed(6))
    again = sampler.sample(y, op, 5, generator=torch.Generator().manual_seed(6))
    assert draws.shape == (3, 5, 1, V) and draws.dtype == torch.float32 and sampler.nfe == 0
    assert torch.equal(draws, again)
    mean, std = sampler.posterior_mean_std(y, op)
    post = prior.posterior(op)
    torch.testing.assert_close(mean, post.mean(y.double()).float())
    torch.testing.assert_close(std, post.std().float())
    assert sampler.seconds_per_sample > 0
    with pytest.raises(ValueError, match="GaussianPrior"):
        GaussianPosterior(object())  # type: ignore[arg-type]
