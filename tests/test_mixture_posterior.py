"""The exact posterior of a Gaussian mixture under linear operators, against dense Bayes by hand."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.distributions import MultivariateNormal

from manifold_ps.baselines import MixturePosterior
from manifold_ps.geometry import ImageGrid
from manifold_ps.operators import Denoising, Downsample2x, ImageBlur, Inpainting, LinearOperator, random_mask
from manifold_ps.priors import GaussianMixture, GaussianPrior, LinearMixturePosterior, operator_matrix
from manifold_ps.sampling import PosteriorSampler

DT = torch.float64
H = W = 4
V = H * W

OPERATORS: dict[str, Callable[[int], LinearOperator]] = {
    "inpainting-shared": lambda b: Inpainting(random_mask(V, 0.5, 1, generator=torch.Generator().manual_seed(1))[0], 0.1),
    "inpainting-batched": lambda b: Inpainting(random_mask(V, 0.5, b, generator=torch.Generator().manual_seed(2)), 0.1),
    "denoising": lambda b: Denoising(V, sigma=0.3),
    "image-blur": lambda b: ImageBlur(H, W, kernel_sigma=1.0, kernel_size=3, sigma=0.1),
    "downsample": lambda b: Downsample2x(H, W, sigma=0.1),
}


def _covariance(g: torch.Generator, rank: int | None) -> GaussianPrior:
    a = torch.randn(V, V, generator=g, dtype=DT)
    full = GaussianPrior(torch.zeros(1, V, dtype=DT), a @ a.T / V + 0.1 * torch.eye(V, dtype=DT))
    if rank is None:
        return full
    return GaussianPrior.from_factors(full.mean, full.eigvecs[:, -rank:], full.eigvals[-rank:], 0.05)


def _mixture(per_component: bool, k: int = 3, seed: int = 0, spread: float = 1.5) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    covs = [_covariance(g, 3 if j % 2 else None) for j in range(k)] if per_component else _covariance(g, 4)
    means = spread * torch.randn(k, 1, V, generator=g, dtype=DT)
    return GaussianMixture(means, torch.rand(k, generator=g, dtype=DT) + 0.2, covs)


def _dense_truth(mix: GaussianMixture, op: LinearOperator, y: Tensor, i: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Mean, covariance, evidence and responsibilities of measurement ``i``, by dense linear algebra."""
    op_i = op.select(torch.tensor([i])) if isinstance(op, Inpainting) else op
    like = mix.means[0]
    a = operator_matrix(op_i, 1, V, like=like)
    ay = op_i.A(like[None])
    rows = op_i.measured(ay).expand_as(ay).reshape(-1)
    a = a[rows]
    yi = y[i].flatten()[rows]
    logs, means, covs = [], [], []
    for k in range(mix.components):
        s = mix.covariances[0 if mix.shared else k].covariance()
        mu = mix.means[k].flatten()
        g = a @ s @ a.T + op.sigma**2 * torch.eye(a.shape[0], dtype=DT)
        gain = s @ a.T @ torch.linalg.inv(g)
        means.append(mu + gain @ (yi - a @ mu))
        covs.append(s - gain @ a @ s)
        logs.append(mix.log_weights[k] + MultivariateNormal(a @ mu, covariance_matrix=g).log_prob(yi))
    log_joint = torch.stack(logs)
    r = torch.softmax(log_joint, 0)
    mean = sum(r[k] * means[k] for k in range(mix.components))
    second = sum(r[k] * (covs[k] + torch.outer(means[k], means[k])) for k in range(mix.components))
    cov = second - torch.outer(mean, mean)
    return mean, 0.5 * (cov + cov.T), torch.logsumexp(log_joint, 0), r


def _measure(mix: GaussianMixture, op: LinearOperator, b: int, seed: int) -> Tensor:
    x = mix.sample_data(b, generator=torch.Generator().manual_seed(seed))
    return op(x, generator=torch.Generator().manual_seed(seed + 1))


KINDS = pytest.mark.parametrize("per_component", [False, True], ids=["shared", "per-component"])


@KINDS
@pytest.mark.parametrize("op_name", list(OPERATORS))
def test_mixture_posterior_matches_dense_bayes(per_component: bool, op_name: str) -> None:
    mix = _mixture(per_component)
    b = 3
    op = OPERATORS[op_name](b)
    y = _measure(mix, op, b, seed=5)
    post = mix.posterior(op)
    assert isinstance(post, LinearMixturePosterior)
    mean, std = post.mean_std(y)
    evidence, resp = post.log_evidence(y), post.responsibilities(y)
    assert mean.shape == std.shape == (b, 1, V) and resp.shape == (b, mix.components)
    torch.testing.assert_close(post.mean(y), mean)
    for i in range(b):
        m_ref, c_ref, ev_ref, r_ref = _dense_truth(mix, op, y, i)
        torch.testing.assert_close(resp[i], r_ref, atol=1e-9, rtol=1e-7)
        torch.testing.assert_close(evidence[i], ev_ref, atol=1e-8, rtol=1e-9)
        torch.testing.assert_close(mean[i].flatten(), m_ref, atol=1e-9, rtol=1e-7)
        torch.testing.assert_close(std[i].flatten(), c_ref.diagonal().clamp_min(0).sqrt(), atol=1e-7, rtol=1e-6)


@KINDS
@pytest.mark.parametrize("op_name", ["inpainting-batched", "downsample"])
def test_mixture_posterior_draws_have_the_posterior_moments(per_component: bool, op_name: str) -> None:
    """Measurements between the components, so that the draws really mix: their mean and
    covariance are the mixture posterior's, not one component's."""
    mix = _mixture(per_component, spread=0.3)
    op = OPERATORS[op_name](2)
    x = 0.5 * (mix.means[0] + mix.means[1])[None].expand(2, -1, -1)
    y = op(x, generator=torch.Generator().manual_seed(3))
    post = mix.posterior(op)
    n = 40000
    draws = post.sample(y, n, generator=torch.Generator().manual_seed(4))
    assert draws.shape == (2, n, 1, V)
    mixed = 0
    for i in range(2):
        m_ref, c_ref, _, r_ref = _dense_truth(mix, op, y, i)
        mixed += int((r_ref > 0.05).sum() > 1)
        flat = draws[i, :, 0]
        se = (c_ref.diagonal() / n).sqrt()
        assert bool(((flat.mean(0) - m_ref).abs() < 5 * se + 1e-12).all())
        torch.testing.assert_close(torch.cov(flat.T), c_ref, atol=0.04 * float(c_ref.diagonal().max()), rtol=0)
    assert mixed > 0  # at least one measurement whose posterior is a real mixture


def test_mixture_posterior_of_one_component_is_the_gaussian_posterior() -> None:
    g = torch.Generator().manual_seed(0)
    cov = _covariance(g, 4)
    mean = torch.randn(1, 1, V, generator=g, dtype=DT)
    mix = GaussianMixture(mean, torch.ones(1, dtype=DT), cov)
    gauss = GaussianPrior.from_factors(mean[0], cov.eigvecs, cov.eigvals, cov.floor)
    op = OPERATORS["inpainting-batched"](2)
    y = _measure(mix, op, 2, seed=1)
    post, ref = mix.posterior(op), gauss.posterior(op)
    torch.testing.assert_close(post.mean(y), ref.mean(y))
    torch.testing.assert_close(post.mean_std(y)[1], ref.std())
    torch.testing.assert_close(post.log_evidence(y), ref.log_evidence(y))
    torch.testing.assert_close(post.responsibilities(y), torch.ones(2, 1, dtype=DT))


def test_mixture_posterior_sampler_protocol_and_errors() -> None:
    mix = _mixture(per_component=True)
    sampler = MixturePosterior(mix)
    assert isinstance(sampler, PosteriorSampler)
    op = OPERATORS["inpainting-batched"](3)
    y = _measure(mix, op, 3, seed=6).float()
    draws = sampler.sample(y, op, 5, generator=torch.Generator().manual_seed(7))
    again = sampler.sample(y, op, 5, generator=torch.Generator().manual_seed(7))
    assert draws.shape == (3, 5, 1, V) and draws.dtype == torch.float32 and sampler.nfe == 0
    assert torch.equal(draws, again)
    mean, std = sampler.posterior_mean_std(y, op)
    ref_mean, ref_std = mix.posterior(op).mean_std(y.double())
    torch.testing.assert_close(mean, ref_mean.float())
    torch.testing.assert_close(std, ref_std.float())
    assert sampler.seconds_per_sample > 0
    with pytest.raises(ValueError, match="GaussianMixture"):
        MixturePosterior(object())  # type: ignore[arg-type]
    post = mix.posterior(op)
    with pytest.raises(ValueError, match="masks"):
        post.mean(y.double().repeat(2, 1, 1))
    with pytest.raises(ValueError, match="NaN"):
        post.mean(torch.full_like(y.double(), torch.nan))
    with pytest.raises(ValueError, match="positive integer"):
        post.sample(y.double(), 0)
    with pytest.raises(ValueError, match="sigma > 0"):
        mix.posterior(Denoising(V, sigma=0.0))


def test_benchmark_scores_a_mixture_priors_own_posterior_beside_the_gaussians() -> None:
    """A ``"mixture"`` prior brings its mixture's exact posterior as a baseline (a ``"wiener"``
    prior does not), scored like the Gaussian's; on two-cluster signals its mean beats the
    Gaussian posterior mean, which blurs the two clusters together where the mask hides the bump."""
    from manifold_ps.benchmarking.baselines import build_baselines
    from manifold_ps.benchmarking.pipeline import score_gaussian
    from manifold_ps.benchmarking.workloads import Task, Workload
    from manifold_ps.config import get_profile
    from manifold_ps.geometry import VertexLayout
    from manifold_ps.priors import DiffusionPrior, MLPDenoiser

    g = torch.Generator().manual_seed(0)
    grid = torch.linspace(-1, 1, V, dtype=DT)

    def signals(n: int) -> Tensor:
        centre = torch.where(torch.rand(n, 1, 1, generator=g, dtype=DT) < 0.5, -0.5, 0.5)
        return torch.exp(-((grid - centre) ** 2) / 0.1) + 0.05 * torch.randn(n, 1, V, generator=g, dtype=DT)

    train, test = signals(400), signals(32)
    gaussian = GaussianPrior.fit(train, rank=8)
    mixture = GaussianMixture.fit(train, 2, generator=torch.Generator().manual_seed(0), rank=8, ridge=1e-4)
    task = Task("inpainting", lambda n, gen: Inpainting(random_mask(V, 0.6, n, generator=gen), 0.05), {},
                baselines=("gaussian",))
    workload = Workload("toy", ImageGrid(H, W), "image", train.float(), train.float(), "toy", [], [task])
    config = get_profile("smoke")
    samplers = {}
    for kind in ("wiener", "mixture"):
        prior = DiffusionPrior(MLPDenoiser(2, 1, V, hidden=8, depth=1), VertexLayout(V), channels=1,
                               parameterization=kind, gaussian=gaussian,
                               mixture=mixture if kind == "mixture" else None, data_mean=0.3, data_std=0.3)
        samplers[kind] = build_baselines(workload, task, config, prior, gaussian=gaussian)
    assert set(samplers["wiener"]) == {"gaussian"} and set(samplers["mixture"]) == {"gaussian", "mixture"}
    op = task.make_operator(32, torch.Generator().manual_seed(1))
    y = op(test.float(), generator=torch.Generator().manual_seed(2))
    scores = {}
    for name, sampler in samplers["mixture"].items():
        found, out = score_gaussian(sampler, test.float(), y, op, n_posterior=16, batch_size=8,
                                    generator=torch.Generator().manual_seed(3), name=name,
                                    observed=op.mask.expand(32, -1))
        assert set(found) == {f"{name}_draw", f"{name}_mean"} and out.mean.shape == (32, 1, V)
        assert ("coverage90_exact" in found[f"{name}_mean"].extra) == (name == "gaussian")
        scores.update(found)
    assert scores["mixture_mean"].psnr > scores["gaussian_mean"].psnr + 0.5
