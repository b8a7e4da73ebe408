"""The mixture's posterior over u = x_{t_min} as a flow's source, against dense Bayes by hand."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor
from torch.distributions import MultivariateNormal

from manifold_ps.flows import (AmortizedPosterior, ConditionalRealNVP, GaussianBase, MixtureBase, condition_channels,
                               path_log_prob, reverse_kl_loss)
from manifold_ps.geometry import VertexLayout
from manifold_ps.operators import Denoising, ImageBlur, Inpainting, LinearOperator, random_mask
from manifold_ps.priors import GaussianMixture, GaussianPrior, operator_matrix

DT = torch.float64
H = W = 3
V = H * W
T = 0.05

OPERATORS: dict[str, Callable[[int], LinearOperator]] = {
    "inpainting-batched": lambda b: Inpainting(random_mask(V, 0.5, b, generator=torch.Generator().manual_seed(2)), 0.1),
    "denoising": lambda b: Denoising(V, sigma=0.3),
    "image-blur": lambda b: ImageBlur(H, W, kernel_sigma=1.0, kernel_size=3, sigma=0.1),
}


def _covariance(g: torch.Generator, rank: int | None) -> GaussianPrior:
    a = torch.randn(V, V, generator=g, dtype=DT)
    full = GaussianPrior(torch.zeros(1, V, dtype=DT), a @ a.T / V + 0.1 * torch.eye(V, dtype=DT))
    keep = V if rank is None else rank  # eigenvalues in descending order, as GaussianPrior.fit returns them
    return GaussianPrior.from_factors(full.mean, full.eigvecs[:, -keep:].flip(-1), full.eigvals[-keep:].flip(-1),
                                      0.0 if rank is None else 0.05)


def _mixture(per_component: bool = True, k: int = 3, seed: int = 0, spread: float = 1.0) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    covs = [_covariance(g, 3 if j % 2 else None) for j in range(k)] if per_component else _covariance(g, 4)
    means = spread * torch.randn(k, 1, V, generator=g, dtype=DT)
    return GaussianMixture(means, torch.rand(k, generator=g, dtype=DT) + 0.2, covs)


def _dense_truth(mix: GaussianMixture, op: LinearOperator, y: Tensor, i: int, marginal: bool
                 ) -> tuple[Tensor, list[Tensor], list[Tensor], Tensor]:
    """Responsibilities, the components' means and covariances over u, and the mixture's posterior
    mean of x, for measurement ``i``, by dense linear algebra (u = a x + s e marginally; else
    u = D_k^{-1}(x) with x from the posterior under the contracted covariance)."""
    sde = mix.sde
    tt = torch.tensor(T, dtype=DT)
    a, s2 = float(sde.alpha(tt)), float(sde.std(tt)) ** 2
    eye = torch.eye(V, dtype=DT)
    op_i = op.select(torch.tensor([i])) if isinstance(op, Inpainting) and op.mask.ndim > 1 else op
    like = mix.means[0]
    mat = operator_matrix(op_i, 1, V, like=like)
    ay = op_i.A(like[None])
    rows = op_i.measured(ay).expand_as(ay).reshape(-1)
    mat = mat[rows]
    yi = y[i].flatten()[rows]
    logs, means_u, covs_u, means_x = [], [], [], []
    for k in range(mix.components):
        s = mix.covariances[0 if mix.shared else k].covariance()
        gain_d = a * s @ torch.linalg.inv(a * a * s + s2 * eye)  # the component's denoiser's gain K
        prior_cov = s if marginal else gain_d @ (a * a * s + s2 * eye) @ gain_d.T
        mu = mix.means[k].flatten()
        g = mat @ prior_cov @ mat.T + op.sigma**2 * torch.eye(mat.shape[0], dtype=DT)
        gain = prior_cov @ mat.T @ torch.linalg.inv(g)
        m = mu + gain @ (yi - mat @ mu)
        c = prior_cov - gain @ mat @ prior_cov
        logs.append(mix.log_weights[k] + MultivariateNormal(mat @ mu, covariance_matrix=g).log_prob(yi))
        means_x.append(m)
        if marginal:
            means_u.append(a * m)
            covs_u.append(a * a * c + s2 * eye)
        else:
            inv = torch.linalg.inv(gain_d)
            means_u.append(a * mu + inv @ (m - mu))
            covs_u.append(inv @ c @ inv.T)
    r = torch.softmax(torch.stack(logs), 0)
    return r, means_u, [0.5 * (c + c.T) for c in covs_u], sum(r[k] * means_x[k] for k in range(mix.components))


def _measure(mix: GaussianMixture, op: LinearOperator, b: int, seed: int) -> Tensor:
    x = mix.sample_data(b, generator=torch.Generator().manual_seed(seed))
    return op(x, generator=torch.Generator().manual_seed(seed + 1))


@pytest.mark.parametrize("marginal", [True, False], ids=["marginal", "denoised"])
@pytest.mark.parametrize("per_component", [True, False], ids=["per-component", "shared"])
@pytest.mark.parametrize("op_name", list(OPERATORS))
def test_mixture_base_density_and_mean_match_dense_bayes(marginal: bool, per_component: bool, op_name: str) -> None:
    mix = _mixture(per_component)
    b = 3
    op = OPERATORS[op_name](b)
    y = _measure(mix, op, b, seed=5)
    source = MixtureBase(mix, T, marginal=marginal)
    state = source.prepare(y, op)
    assert state.log_resp.shape == (b, mix.components) and state.mean_x.shape == (b, V)
    u = torch.randn(b, 4, 1, V, generator=torch.Generator().manual_seed(9), dtype=DT)
    lp = source.log_prob(u, state)
    assert lp.shape == (b, 4)
    for i in range(b):
        r, means_u, covs_u, mean_x = _dense_truth(mix, op, y, i, marginal)
        torch.testing.assert_close(state.log_resp[i].exp(), r, atol=1e-9, rtol=1e-7)
        torch.testing.assert_close(state.mean_x[i], mean_x, atol=1e-8, rtol=1e-7)
        dens = torch.stack([MultivariateNormal(means_u[k], covariance_matrix=covs_u[k]).log_prob(u[i, :, 0])
                            for k in range(mix.components)], -1)
        torch.testing.assert_close(lp[i], torch.logsumexp(dens + r.log(), -1), atol=1e-7, rtol=1e-8)
    means_only = source.prepare(y, op, factor=False)
    torch.testing.assert_close(means_only.log_resp, state.log_resp)
    torch.testing.assert_close(means_only.mean_x, state.mean_x)


@pytest.mark.parametrize("marginal", [True, False], ids=["marginal", "denoised"])
def test_mixture_base_draws_have_the_mixture_posterior_moments(marginal: bool) -> None:
    """A measurement between two components, so that the draws really mix."""
    mix = _mixture(spread=0.4)
    op = OPERATORS["inpainting-batched"](2)
    x = 0.5 * (mix.means[0] + mix.means[1])[None].expand(2, -1, -1)
    y = op(x, generator=torch.Generator().manual_seed(3))
    source = MixtureBase(mix, T, marginal=marginal)
    state = source.prepare(y, op)
    n = 40000
    u = source.sample(state, n, generator=torch.Generator().manual_seed(4))
    assert u.shape == (2, n, 1, V) and u.dtype == DT
    mixed = 0
    for i in range(2):
        r, means_u, covs_u, _ = _dense_truth(mix, op, y, i, marginal)
        mixed += int((r > 0.05).sum() > 1)
        mean = sum(r[k] * means_u[k] for k in range(3))
        cov = sum(r[k] * (covs_u[k] + torch.outer(means_u[k], means_u[k])) for k in range(3)) - torch.outer(mean, mean)
        flat = u[i, :, 0]
        se = (cov.diagonal() / n).sqrt()
        assert bool(((flat.mean(0) - mean).abs() < 5 * se).all())
        torch.testing.assert_close(torch.cov(flat.T), cov, atol=0.04 * float(cov.diagonal().max()), rtol=0)
    assert mixed > 0


def test_one_component_source_is_the_gaussian_base() -> None:
    g = torch.Generator().manual_seed(1)
    cov = _covariance(g, 4)
    mean = torch.randn(1, 1, V, generator=g, dtype=DT)
    mix = GaussianMixture(mean, torch.ones(1, dtype=DT), cov)
    gauss = GaussianPrior.from_factors(mean[0], cov.eigvecs, cov.eigvals, cov.floor)
    op = OPERATORS["inpainting-batched"](2)
    y = _measure(mix, op, 2, seed=1)
    for marginal in (True, False):
        source, base = MixtureBase(mix, T, marginal=marginal), GaussianBase(gauss, T, marginal=marginal)
        state, ref = source.prepare(y, op), base.prepare(y, op)
        u = torch.randn(2, 3, 1, V, generator=torch.Generator().manual_seed(2), dtype=DT)
        v, ladj = base.inverse_and_ladj(u, ref)
        expected = -0.5 * v.square().flatten(-2).sum(-1) - 0.5 * V * torch.log(torch.tensor(2 * torch.pi, dtype=DT)) + ladj
        torch.testing.assert_close(source.log_prob(u, state), expected)
        torch.testing.assert_close(state.mean_x, ref.mean_x)


def test_base_state_evidence_is_the_gaussian_posterior_evidence() -> None:
    """The evidence GaussianBase now records: under S for a marginal base, on every path."""
    cov = _covariance(torch.Generator().manual_seed(3), 4)
    for name, make in OPERATORS.items():
        op = make(3)
        y = _measure(GaussianMixture(cov.mean[None], torch.ones(1, dtype=DT), cov), op, 3, seed=2)
        state = GaussianBase(cov, T, marginal=True).prepare(y, op)
        torch.testing.assert_close(state.log_evidence, cov.posterior(op).log_evidence(y), msg=name)


def _sampler(mix: GaussianMixture, op: LinearOperator, marginal: bool = True) -> AmortizedPosterior:
    gauss = GaussianPrior.fit(mix.sample_data(400, generator=torch.Generator().manual_seed(0)), ridge=1e-3)
    flow = ConditionalRealNVP(1, VertexLayout(V), condition_channels(1, op, reconstruct=True), steps=2, hidden=8,
                              init_scale=1.0)
    return AmortizedPosterior(flow, base=GaussianBase(gauss, T, marginal=marginal), decode=T,
                              likelihood="marginal" if marginal else "denoised",
                              source=MixtureBase(mix, T, marginal=marginal))


def test_untrained_sampler_draws_from_the_source_and_its_density_is_the_source_density(tmp_path) -> None:
    mix = _mixture()
    op = OPERATORS["inpainting-batched"](2)
    y = _measure(mix, op, 2, seed=7).float()
    post = _sampler(mix, op)
    state = post.prepare_base(y, op)
    cond, loc = post.prepare(y, op)
    torch.testing.assert_close(cond[:, -1], state.source.mean_x.float())  # the mixture's mean is the condition's
    u, ladj = post(cond, 5, loc=loc, generator=torch.Generator().manual_seed(3), state=state)
    u0 = post.source.sample(state.source, 5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(u.double(), u0, atol=2e-5, rtol=1e-5)  # T is the identity: u = B(B^{-1}(u0))
    lq = path_log_prob(post, u, cond, loc=loc, state=state)
    torch.testing.assert_close(lq.double(), post.source.log_prob(u0, state.source), atol=1e-3, rtol=1e-5)
    # save / load keeps the source: the same latent draws from the same generator
    post.save(tmp_path / "s.pt")
    again = AmortizedPosterior.load(tmp_path / "s.pt")
    assert isinstance(again.source, MixtureBase) and again.source.components == mix.components
    u_again, _ = again(cond, 5, loc=loc, generator=torch.Generator().manual_seed(3), state=again.prepare_base(y, op))
    torch.testing.assert_close(u_again, u)


def test_source_loss_has_the_same_value_with_either_entropy_gradient() -> None:
    """Both entropy gradients report -log|det| (the source's density is constant in the flow), and
    the path gradient differs from the total one (it goes through the source's density)."""
    mix = _mixture()
    op = OPERATORS["inpainting-batched"](2)
    y = _measure(mix, op, 2, seed=7).float()
    post = _sampler(mix, op)
    prior = mix.float()
    grads = {}
    for how in ("total", "path"):
        post.zero_grad()
        loss, terms = reverse_kl_loss(post, prior, op, y, n_z=3, t_min=T, prior_term="exact",
                                      entropy_gradient=how, generator=torch.Generator().manual_seed(0))
        loss.backward()
        grads[how] = torch.cat([p.grad.flatten() for p in post.parameters() if p.grad is not None])
        assert torch.isfinite(grads[how]).all()
        if how == "total":
            ref = terms
    assert terms["entropy"] == pytest.approx(ref["entropy"], rel=1e-6)
    assert terms["loss"] == pytest.approx(ref["loss"], rel=1e-6)
    assert not torch.allclose(grads["total"], grads["path"])


def test_mixture_source_validation() -> None:
    mix = _mixture()
    op = OPERATORS["inpainting-batched"](2)
    post = _sampler(mix, op)
    flow = post.flow
    with pytest.raises(ValueError, match="pass base"):
        AmortizedPosterior(flow, decode=T, source=MixtureBase(mix, T))
    with pytest.raises(ValueError, match="must be over the base's u"):
        AmortizedPosterior(flow, base=post.base, decode=T, likelihood="marginal", source=MixtureBase(mix, 0.1,
                                                                                                     marginal=True))
    with pytest.raises(ValueError, match="must be over the base's u"):
        AmortizedPosterior(flow, base=post.base, decode=T, likelihood="marginal", source=MixtureBase(mix, T))
    with pytest.raises(ValueError, match="GaussianMixture"):
        MixtureBase(mix.covariances[0], T)  # type: ignore[arg-type]
    source = MixtureBase(mix, T)
    y = _measure(mix, op, 2, seed=1)
    with pytest.raises(ValueError, match="means only"):
        source.sample(source.prepare(y, op, factor=False), 2)
    with pytest.raises(ValueError, match="linear operator"):
        source.prepare(y, torch.nn.Identity())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pass state"):
        post(post.prepare(y.float(), op)[0], 2)


def test_truncated_source_keeps_rank_per_component_and_round_trips_its_config() -> None:
    mix = _mixture()
    source = MixtureBase(mix, T, marginal=True, rank=2)
    assert all(p.eigvals.shape[0] == 2 for p in source.parts)
    again = MixtureBase.from_config(source.config())
    assert again is not None and again.rank == 2 and again.marginal
    op = OPERATORS["denoising"](2)
    y = _measure(mix, op, 2, seed=1)
    torch.testing.assert_close(again.prepare(y, op).log_resp, source.prepare(y, op).log_resp)


def test_pipeline_builds_trains_and_reloads_a_mixture_source_flow(tmp_path) -> None:
    """flow.base='mixture' on a mixture prior: the source is the prior's mixture at the configured
    rank, marginal with the marginal likelihood; the untrained sampler's condition holds the
    mixture's posterior mean; training moves it; a rerun loads it with its source; a prior without
    a mixture is refused before anything is written."""
    from manifold_ps.benchmarking.pipeline import new_flow, stage_flow, stage_measurements
    from manifold_ps.config import apply_overrides, get_profile
    from manifold_ps.priors import build_prior
    from test_decoded_flow import _toy_workload

    workload = _toy_workload()
    config = apply_overrides(get_profile("smoke"), {"flow.train_steps": 3, "flow.decode": True, "flow.base": "mixture",
                                                    "flow.base_rank": 4, "flow.likelihood": "marginal",
                                                    "flow.decoder_noise": True})
    data = workload.prior_train.double()
    g = torch.Generator().manual_seed(0)
    gaussian = GaussianPrior.fit(data, rank=8, ridge=1e-4)
    mixture = GaussianMixture.fit(data, 2, generator=g, rank=6, ridge=1e-4, covariance="per-component")
    prior = build_prior(workload.geometry, channels=1, preset="tiny", network="mlp", parameterization="mixture",
                        gaussian=gaussian, mixture=mixture).eval()
    task = workload.tasks[0]
    train, evals = stage_measurements(workload, task, config, tmp_path)
    start = new_flow(workload, task, config, prior, train, tmp_path, device=torch.device("cpu"))
    assert isinstance(start.source, MixtureBase) and start.source.marginal and start.source.components == 2
    assert all(p.eigvals.shape[0] == 4 for p in start.source.parts)
    m = evals["paper"]
    y, op = m.y[:2], m.operator.select(torch.arange(2))
    state = start.prepare_base(y, op)
    torch.testing.assert_close(start.prepare(y, op)[0][:, -1], state.source.mean_x.to(y.dtype))
    post = stage_flow(workload, task, config, prior, train, tmp_path, device=torch.device("cpu"), progress=False)
    with torch.no_grad():
        moved = max(float((a - b).abs().max()) for a, b in zip(post.flow.parameters(), start.flow.parameters()))
    assert moved > 0  # the couplings learned something
    draws = post.sample(y, op, 3, generator=torch.Generator().manual_seed(0))
    again = stage_flow(workload, task, config, prior, train, tmp_path, device=torch.device("cpu"), progress=False)
    assert isinstance(again.source, MixtureBase)
    torch.testing.assert_close(again.sample(y, op, 3, generator=torch.Generator().manual_seed(0)), draws)
    wiener = build_prior(workload.geometry, channels=1, preset="tiny", network="mlp", parameterization="wiener",
                         gaussian=gaussian).eval()
    with pytest.raises(ValueError, match="prior.parameterization='mixture'"):
        new_flow(workload, task, config, wiener, train, tmp_path / "other", device=torch.device("cpu"))
