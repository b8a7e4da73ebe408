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
    _check_bijection(base, base.prepare(y, op), 3, 6)


@pytest.mark.parametrize("marginal", [False, True])
def test_float32_base_agrees_with_float64(marginal: bool) -> None:
    """``flow.base_precision = "float32"``: the same factorisation in single precision, on a
    covariance with the spread of eigenvalues of a fitted one (1e-4 .. 1e1) and 40 % missing."""
    from manifold_ps.flows import GaussianBase
    from manifold_ps.operators import Inpainting

    d, r, b = 96, 24, 5
    g = torch.Generator().manual_seed(4)
    q, _ = torch.linalg.qr(torch.randn(d, r, generator=g, dtype=DT))
    lam = torch.logspace(1, -3, r, dtype=DT)
    prior = GaussianPrior.from_factors(torch.rand(1, d, generator=g, dtype=DT), q, lam, torch.tensor(1e-4, dtype=DT))
    exact = GaussianBase(prior, 0.02, marginal=marginal)
    single = GaussianBase(prior, 0.02, marginal=marginal).to(torch.float32)
    assert single.mean.dtype == torch.float32
    op = Inpainting(_masks(b, d), sigma=0.1)
    y = torch.rand(b, 1, d, generator=g, dtype=DT)
    s64, s32 = exact.prepare(y, op), single.prepare(y.float(), op)
    torch.testing.assert_close(s32.mean_x.double(), s64.mean_x, rtol=0, atol=1e-4)  # 80 dB on [0, 1]
    torch.testing.assert_close(s32.logdet.double(), s64.logdet, rtol=1e-5, atol=1e-3)
    v = torch.randn(b, 3, 1, d, generator=g, dtype=DT)
    u64, _ = exact.call_and_ladj(v, s64)
    u32, _ = single.call_and_ladj(v.float(), s32)
    assert u32.dtype == torch.float32
    torch.testing.assert_close(u32.double(), u64, rtol=0, atol=1e-4 * float(u64.abs().max()))
    back, _ = single.inverse_and_ladj(u32, s32)
    torch.testing.assert_close(back.double(), v, rtol=0, atol=1e-3)


def _check_bijection(base, state, b: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The base's Jacobian of v -> u, column by column, against slogdet, and its inverse; returns
    ``u(0)`` ``(b, 1, 1, d)`` and the Jacobians ``(b, d, d)``."""
    u0, _ = base.call_and_ladj(torch.zeros(b, 1, 1, d, dtype=DT), state)
    cols, ladj = base.call_and_ladj(torch.eye(d, dtype=DT).reshape(1, d, 1, d).expand(b, d, 1, d).contiguous(), state)
    jac = (cols - u0).reshape(b, d, d).mT
    torch.testing.assert_close(ladj[:, 0], torch.linalg.slogdet(jac).logabsdet)
    v = torch.randn(b, 5, 1, d, dtype=DT)
    u, ladj = base.call_and_ladj(v, state)
    back, iladj = base.inverse_and_ladj(u, state)
    torch.testing.assert_close(back, v)
    torch.testing.assert_close(iladj, -ladj)
    return u0, jac


def _check_law(prior: GaussianPrior, t: float, base, state, u0: torch.Tensor, jac: torch.Tensor, y: torch.Tensor,
               operator_of) -> None:
    """Each measurement's base law against the dense posterior of ``operator_of(i)``: marginal,
    ``u ~ N(a m, a^2 C + s^2 I)`` under ``S``; else ``D(u)`` the posterior under the contracted prior."""
    from manifold_ps.priors.gaussian import linear_gaussian_posterior

    d = u0.shape[-1]
    a = prior.sde.alpha(torch.tensor(t, dtype=DT))
    s2 = prior.sde.std(torch.tensor(t, dtype=DT)) ** 2
    tt = torch.full((d,), t, dtype=DT)
    for i in range(u0.shape[0]):
        if base.marginal:
            mean, cov = linear_gaussian_posterior(prior, operator_of(i), y[i:i + 1])
            torch.testing.assert_close(u0[i, 0, 0], a * mean.flatten())
            torch.testing.assert_close(jac[i] @ jac[i].T, a * a * cov + s2 * torch.eye(d, dtype=DT))
        else:
            mean, cov = linear_gaussian_posterior(_contracted(prior, t), operator_of(i), y[i:i + 1])
            cols = u0[i] + jac[i].T.reshape(d, 1, d)  # u(e_k)
            jac_x = (prior.denoise(cols, tt) - prior.denoise(u0[i].expand(d, 1, d), tt)).reshape(d, d).T
            torch.testing.assert_close(prior.denoise(u0[i], tt[:1]), mean)
            torch.testing.assert_close(jac_x @ jac_x.T, cov)
        torch.testing.assert_close(state.mean_x[i], mean.flatten())


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


@pytest.mark.parametrize("marginal", [False, True])
@pytest.mark.parametrize("gram_chunk", [1, 1 << 22])
def test_gaussian_base_batches_masks_of_either_side(marginal: bool, gram_chunk: int, monkeypatch) -> None:
    """Masks missing few entries and most entries (the Gram is summed over the smaller side), a mask
    shared by two measurements and the Gram formed one mask at a time: every measurement's base is
    the bijection onto its own closed-form posterior."""
    import manifold_ps.flows.gaussian_base as gb
    from manifold_ps.operators import Inpainting

    monkeypatch.setattr(gb, "GRAM_CHUNK", gram_chunk)
    t, d = 0.05, 7
    prior = _gaussian(d, rank=3)
    base = gb.GaussianBase(prior, t, marginal=marginal)
    masks = torch.tensor([[1, 1, 1, 1, 1, 1, 0], [1, 0, 0, 0, 0, 0, 1], [1, 0, 1, 0, 1, 0, 1],
                          [1, 0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    y = torch.randn(5, 1, d, dtype=DT)
    op = Inpainting(masks, sigma=0.2)
    state = base.prepare(y, op)
    u0, jac = _check_bijection(base, state, 5, d)
    _check_law(prior, t, base, state, u0, jac, y, lambda i: Inpainting(masks[i], sigma=0.2))
    torch.testing.assert_close(state.chol_j[1], state.chol_j[3])


# -- the decoded sampler ------------------------------------------------------------------------------
def _sampler(prior: GaussianPrior, t: float, *, noise: bool = False, likelihood: str = "denoised"):
    from manifold_ps.flows import AmortizedPosterior, ConditionalRealNVP, GaussianBase, condition_channels, fit_single
    from manifold_ps.geometry import VertexLayout
    from manifold_ps.operators import Inpainting

    op = Inpainting(torch.ones(6, dtype=torch.bool), 0.3)
    flow = ConditionalRealNVP(1, VertexLayout(6), condition_channels(1, op, reconstruct=True), steps=2, hidden=8,
                              init_scale=1.0)
    post = AmortizedPosterior(flow, base=GaussianBase(prior, t, marginal=likelihood == "marginal"), decode=t,
                              decoder_noise=noise, likelihood=likelihood)
    return post.attach_prior(prior)


@pytest.mark.parametrize("noise", [False, True])
def test_untrained_decoded_sampler_is_the_contracted_posterior(noise: bool) -> None:
    from manifold_ps.operators import Inpainting
    from manifold_ps.priors.gaussian import linear_gaussian_posterior

    t = 0.05
    prior = _gaussian(rank=3)
    post = _sampler(prior, t, noise=noise)
    mask = _masks(1, 6)[0]
    op = Inpainting(mask, sigma=0.3)
    y = torch.randn(1, 1, 6)
    n = 40000
    x = post.sample(y, op, n, generator=torch.Generator().manual_seed(0))[0, :, 0].double()  # (n, 6)
    # the posterior under the contracted prior; decoder noise adds the error of x_0 given u, S - S_c
    contracted = _contracted(prior, t)
    mean, cov = linear_gaussian_posterior(contracted, op, y.double())
    if noise:
        cov = cov + prior.covariance() - contracted.covariance()
    emp_cov = torch.cov(x.T)
    se = (cov.diagonal() / n).sqrt()
    assert bool(((x.mean(0) - mean[0, 0]).abs() < 5 * se).all())
    torch.testing.assert_close(emp_cov, cov, atol=0.03 * float(cov.diagonal().max()), rtol=0.0)
    assert post.nfe == 2


def test_decoded_loss_terms_match_a_direct_computation() -> None:
    from manifold_ps.flows import reverse_kl_loss
    from manifold_ps.operators import Inpainting

    t = 0.05
    prior = _gaussian(rank=3)
    post = _sampler(prior, t)
    torch.manual_seed(0)
    for p in post.flow.parameters():  # a flow that is not the identity
        p.data.add_(0.05 * torch.randn_like(p))
    op = Inpainting(_masks(2, 6), sigma=0.3)
    y = torch.randn(2, 1, 6)
    z = torch.randn(2, 3, 1, 6)
    loss, terms = reverse_kl_loss(post, prior, op, y, z=z, n_z=3, t_min=t, prior_term="exact")
    with torch.no_grad():
        cond, loc = post.prepare(y, op)
        state = post.prepare_base(y, op)
        v, ladj_flow = post.flow(cond, 3, z=z)
        u, ladj_base = post.base.call_and_ladj(v, state)
        tt = torch.full((6,), t)
        x = prior.denoise(u.reshape(6, 1, 6).double(), tt.double()).float()
        rep = torch.arange(2).repeat_interleave(3)
        fidelity = -op.select(rep).log_likelihood(y[rep], x)
        log_prior = prior.marginal_log_prob(u.reshape(6, 1, 6).double(), tt.double()).float()
        entropy = -(ladj_flow + ladj_base).reshape(-1)
    torch.testing.assert_close(terms["fidelity"], float(fidelity.mean() / 6), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(terms["prior"], float(-log_prior.mean() / 6), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(terms["entropy"], float(entropy.mean() / 6), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(float(loss.detach()), float((fidelity - log_prior + entropy).mean() / 6), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="decodes at t_min"):
        reverse_kl_loss(post, prior, op, y, n_z=1, t_min=0.02)
    # the ELBO variant runs and is differentiable into the flow
    loss, _ = reverse_kl_loss(post, prior, op, y, n_z=2, t_min=t, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is not None for p in post.flow.parameters() if p.requires_grad)


def test_score_prior_term_is_the_exact_gradient_of_the_marginal_density() -> None:
    """On a Gaussian prior, whose denoiser gives its exact marginal score, the ``"score"`` prior
    term's gradient equals the autograd gradient of ``-log p_{t_min}(u)`` (``"exact"``)."""
    from manifold_ps.flows import reverse_kl_loss
    from manifold_ps.operators import Inpainting

    t = 0.05
    prior = _gaussian(rank=3)
    post = _sampler(prior, t).double()
    torch.manual_seed(0)
    for p in post.flow.parameters():  # a flow that is not the identity
        p.data.add_(0.05 * torch.randn_like(p))
    op = Inpainting(_masks(2, 6), sigma=0.3)
    y = torch.randn(2, 1, 6, dtype=DT)
    z = torch.randn(2, 3, 1, 6, dtype=DT)
    grads, values = {}, {}
    for term in ("exact", "score"):
        post.zero_grad()
        loss, terms = reverse_kl_loss(post, prior, op, y, z=z, n_z=3, t_min=t, prior_term=term)
        loss.backward()
        grads[term] = torch.cat([p.grad.flatten() for p in post.flow.parameters()])
        values[term] = terms
    assert float(grads["exact"].abs().max()) > 1e-3  # the check has something to compare
    torch.testing.assert_close(grads["score"], grads["exact"], rtol=1e-7, atol=1e-9)
    assert values["score"]["prior"] == 0.0  # not computed: the surrogate's value is zero
    for key in ("fidelity", "entropy"):
        assert values["score"][key] == pytest.approx(values["exact"][key], rel=1e-12)
    bare = _sampler(prior, t)
    bare.decode = None  # the paper's sampler: samples are clean signals, the score at t_min is not theirs
    with pytest.raises(ValueError, match="needs a decoded sampler"):
        reverse_kl_loss(bare, prior, op, y.float(), n_z=1, t_min=t, prior_term="score")

def _perturbed(post, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for p in post.flow.parameters():  # a flow that is not the identity
        p.data.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return post


def _flat_grad(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype)
                      for p in module.parameters()])


@pytest.mark.parametrize("sampler", ["gaussian-base", "fill"])
def test_path_entropy_gradient_drops_exactly_the_score_term(sampler: str) -> None:
    """``entropy_gradient="path"`` differs from the total gradient by ``d/dtheta log q_theta(x)``
    at fixed ``x``, computed here directly through the flow's inverse; the loss value is the same."""
    from manifold_ps.flows import ConditionalRealNVP, reverse_kl_loss
    from manifold_ps.geometry import VertexLayout
    from manifold_ps.operators import Inpainting

    t = 0.05
    prior = _gaussian(rank=3)
    op = Inpainting(_masks(2, 6), sigma=0.3)
    y = torch.randn(2, 1, 6, dtype=DT, generator=torch.Generator().manual_seed(4))
    z = torch.randn(2, 3, 1, 6, dtype=DT, generator=torch.Generator().manual_seed(5))
    if sampler == "gaussian-base":
        model = _perturbed(_sampler(prior, t).double().eval())
        net, state = model.flow, model.prepare_base(y, op)
        cond, loc, kw = model.prepare(y, op)[0], None, dict(t_min=t, prior_term="exact")
    else:  # the paper's sampler: an unconditional-base flow around a location, samples are clean signals
        model = ConditionalRealNVP(1, VertexLayout(6), cond_channels=2, steps=2, hidden=8).double().eval()
        _perturbed(type("P", (), {"flow": model})())
        net, state = model, None
        cond, loc, kw = torch.randn(2, 2, 6, dtype=DT), torch.randn(2, 1, 6, dtype=DT), dict(prior_term="exact")
    grads, values = {}, {}
    for estimator in ("total", "path"):
        model.zero_grad()
        loss, terms = reverse_kl_loss(model, prior, op, y, cond=cond, loc=loc, z=z, n_z=3,
                                      entropy_gradient=estimator, **kw)
        loss.backward()
        grads[estimator], values[estimator] = _flat_grad(net), (float(loss.detach()), terms)
    # the score term, directly: log q_theta(x) at the draws held fixed, through the flow's inverse
    model.zero_grad()
    with torch.no_grad():
        x, _ = model(cond, loc=loc, z=z, **({"state": state} if state is not None else {}))
        if state is not None:  # the base's map does not depend on the flow's parameters
            x, _ = model.base.inverse_and_ladj(x, state)
    (net.log_prob(x, cond, loc=loc).sum() / (2 * 3 * 6)).backward()
    score = _flat_grad(net)
    assert float(score.abs().max()) > 1e-3  # the check has something to compare
    torch.testing.assert_close(grads["total"] - grads["path"], score, rtol=1e-6, atol=1e-9)
    assert values["path"] == values["total"]
    with pytest.raises(ValueError, match="entropy_gradient"):
        reverse_kl_loss(model, prior, op, y, cond=cond, loc=loc, z=z, n_z=3, entropy_gradient="stl", **kw)


def test_path_entropy_gradient_vanishes_draw_by_draw_at_the_target() -> None:
    """The untrained Gaussian-base sampler of a Gaussian prior is the exact posterior over ``u``:
    each single draw's path gradient of the loss is zero, while the total gradient is not (its
    score term only vanishes in expectation)."""
    from manifold_ps.flows import reverse_kl_loss
    from manifold_ps.operators import Inpainting

    t = 0.05
    prior = _gaussian()
    post = _sampler(prior, t).double().eval()  # ActNorm not initialised: the flow is the identity
    op = Inpainting(_masks(1, 6), sigma=0.3)
    y = torch.randn(1, 1, 6, dtype=DT, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        z = torch.randn(1, 1, 1, 6, dtype=DT, generator=gen)
        norms = {}
        for estimator in ("total", "path"):
            post.zero_grad()
            loss, _ = reverse_kl_loss(post, prior, op, y, z=z, n_z=1, t_min=t, prior_term="exact",
                                      entropy_gradient=estimator)
            loss.backward()
            norms[estimator] = float(_flat_grad(post.flow).abs().max())
        assert norms["total"] > 1e-2
        assert norms["path"] < 1e-9


def test_decoded_sampler_save_load_keeps_decoder_and_base(tmp_path) -> None:
    from manifold_ps.flows import AmortizedPosterior
    from manifold_ps.operators import Inpainting

    prior = _gaussian(rank=3)
    post = _sampler(prior, 0.05, noise=True)
    path = post.save(tmp_path / "post.pt")
    loaded = AmortizedPosterior.load(path)
    assert loaded.decode == 0.05 and loaded.decoder_noise and loaded.base is not None
    assert loaded.base.t_min == 0.05
    for name in ("mean", "eigvecs", "eigvals", "floor"):
        torch.testing.assert_close(getattr(loaded.base, name), getattr(post.base, name), rtol=0, atol=0)
    op = Inpainting(_masks(2, 6), sigma=0.3)
    y = torch.randn(2, 1, 6)
    # the decoder is saved with the sampler: the loaded one decodes on its own, identically
    a = post.sample(y, op, 4, generator=torch.Generator().manual_seed(1))
    b = loaded.sample(y, op, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="no tractable density"):
        loaded.log_prob(a[:, 0], y, op)
    bare = _sampler(prior, 0.05, noise=True)
    bare.attach_prior(None)  # type: ignore[arg-type]  # a sampler saved without its decoder
    unattached = AmortizedPosterior.load(bare.save(tmp_path / "bare.pt"))
    with pytest.raises(ValueError, match="attach_prior"):
        unattached.sample(y, op, 2)
    unattached.attach_prior(prior)
    torch.testing.assert_close(unattached.sample(y, op, 4, generator=torch.Generator().manual_seed(1)), a, rtol=0, atol=0)


def test_decoded_sampler_carries_a_diffusion_prior_decoder(tmp_path) -> None:
    from manifold_ps.flows import AmortizedPosterior
    from manifold_ps.operators import Inpainting
    from manifold_ps.priors import DiffusionPrior
    from manifold_ps.geometry import VertexLayout
    from manifold_ps.priors.mlp import MLPDenoiser

    gaussian = _gaussian(rank=3)
    torch.manual_seed(0)
    prior = DiffusionPrior(MLPDenoiser(2, 1, 6, hidden=8, depth=1), VertexLayout(6), channels=1,
                           parameterization="wiener", gaussian=gaussian)
    with torch.no_grad():
        for p in prior.network.parameters():
            p.normal_(0.0, 0.1)  # a trained correction, so the decoder differs from the Gaussian's
    post = _sampler(gaussian, 0.05, noise=False)
    post.attach_prior(prior)
    loaded = AmortizedPosterior.load(post.save(tmp_path / "post.pt"))
    assert isinstance(loaded._prior.value, DiffusionPrior)
    op = Inpainting(_masks(2, 6), sigma=0.3)
    y = torch.randn(2, 1, 6)
    a = post.sample(y, op, 3, generator=torch.Generator().manual_seed(2))
    b = loaded.sample(y, op, 3, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    u, t = torch.zeros(1, 1, 6), torch.tensor([0.05])
    assert not torch.allclose(prior.denoise(u, t).double(), gaussian.denoise(u.double(), t.double()))


def test_decoded_sampler_validation() -> None:
    from manifold_ps.flows import AmortizedPosterior, ConditionalRealNVP, GaussianBase, HarmonicFill
    from manifold_ps.geometry import VertexLayout

    prior = _gaussian(rank=3)
    flow = ConditionalRealNVP(1, VertexLayout(6), 3, steps=1, hidden=4)
    base = GaussianBase(prior, 0.05)
    with pytest.raises(ValueError, match="decode=0.05"):
        AmortizedPosterior(flow, base=base)
    with pytest.raises(ValueError, match="needs a Gaussian base"):
        AmortizedPosterior(flow, decode=0.05, decoder_noise=True)
    import scipy.sparse as sp

    with pytest.raises(ValueError, match="reconstruct=None"):
        AmortizedPosterior(flow, base=base, decode=0.05, reconstruct=HarmonicFill(sp.eye(6)))

    with pytest.raises(ValueError, match="condition='measurement'"):
        AmortizedPosterior(flow, base=base, decode=0.05, condition="measurement")


def test_per_measurement_sampler_starts_from_the_same_gaussian_posterior(tmp_path) -> None:
    """``fit_single``'s unconditional flow on the Gaussian base draws, untrained, exactly what the
    amortized one draws (both flows start as the identity), trains, and saves with its base."""
    from manifold_ps.flows import AmortizedPosterior, ConditionalRealNVP, GaussianBase, fit_single
    from manifold_ps.geometry import VertexLayout
    from manifold_ps.operators import Inpainting

    prior, t = _gaussian(rank=3), 0.05
    amortized = _sampler(prior, t)
    single = AmortizedPosterior(ConditionalRealNVP(1, VertexLayout(6), 0, steps=2, hidden=8, init_scale=1.0),
                                condition="none", base=GaussianBase(prior, t), decode=t).attach_prior(prior)
    op = Inpainting(_masks(1, 6)[0], sigma=0.3)
    y = torch.randn(1, 1, 6)
    draws = [p.sample(y, op, 64, generator=torch.Generator().manual_seed(4)) for p in (amortized, single)]
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)
    before = [p.detach().clone() for p in single.flow.parameters()]
    fit_single(single, prior, y, op, n_z=4, max_steps=3, t_min=t, progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, single.flow.parameters()))
    loaded = AmortizedPosterior.load(single.save(tmp_path / "single.pt"))
    assert loaded.condition == "none" and loaded.base is not None and loaded.decode == t
    torch.testing.assert_close(loaded.sample(y, op, 8, generator=torch.Generator().manual_seed(5)),
                               single.sample(y, op, 8, generator=torch.Generator().manual_seed(5)), rtol=0, atol=0)

def test_per_measurement_sampler_takes_measurements_that_are_not_vertex_shaped() -> None:
    """Downsampling: the unconditional sampler on the Gaussian base takes the 4-value measurement
    with its operator, draws what the amortized one draws, and still refuses a malformed one."""
    from manifold_ps.flows import AmortizedPosterior, ConditionalRealNVP, GaussianBase, condition_channels, fit_single
    from manifold_ps.geometry import VertexLayout

    t, d = 0.05, 8
    prior = _gaussian(d, rank=3)
    op = _dense_op("downsample")
    y = _dense_y(op, 1).float()
    assert y.shape == (1, 1, 2)
    single = AmortizedPosterior(ConditionalRealNVP(1, VertexLayout(d), 0, steps=2, hidden=8, init_scale=1.0),
                                condition="none", base=GaussianBase(prior, t), decode=t).attach_prior(prior)
    flow = ConditionalRealNVP(1, VertexLayout(d), condition_channels(1, op, reconstruct=True), steps=2, hidden=8,
                              init_scale=1.0)
    amortized = AmortizedPosterior(flow, base=GaussianBase(prior, t), decode=t).attach_prior(prior)
    draws = [p.sample(y, op, 16, generator=torch.Generator().manual_seed(3)) for p in (amortized, single)]
    assert draws[1].shape == (1, 16, 1, d)
    torch.testing.assert_close(draws[0], draws[1], rtol=0, atol=0)
    before = [p.detach().clone() for p in single.flow.parameters()]
    fit_single(single, prior, y, op, n_z=4, max_steps=3, t_min=t, progress=False)  # and it trains on them
    assert any(not torch.equal(a, b) for a, b in zip(before, single.flow.parameters()))
    with pytest.raises(ValueError, match=r"y must have shape \(B, 1, M\)"):
        single.sample(y[:, 0], op, 2)


# -- the pipeline ---------------------------------------------------------------------------------------
def _toy_workload():
    from manifold_ps.benchmarking.workloads import Task, Workload
    from manifold_ps.geometry import ImageGrid
    from manifold_ps.operators import Inpainting, random_mask

    g = torch.Generator().manual_seed(0)
    x = (0.5 + 0.2 * torch.randn(48, 1, 16, generator=g).cumsum(-1) / 4).clamp(0, 1)
    task = Task("inpainting", lambda n, gen: Inpainting(random_mask(16, 0.4, n, generator=gen), 0.1), {},
                baselines=("harmonic",))
    return Workload("toy", ImageGrid(4, 4), "image", x, x, "toy signals", [], [task], data_range=(0.0, 1.0))


@pytest.mark.parametrize("overrides", [{"flow.decode": False, "flow.base": "fill", "flow.prior_term": "elbo"},
                                       {"flow.decode": True, "flow.base": "gaussian", "flow.decoder_noise": True,
                                        "flow.base_rank": 8},
                                       {"flow.decode": True, "flow.base": "gaussian", "flow.base_rank": 8,
                                        "flow.base_precision": "float32", "flow.likelihood": "marginal"}])
def test_pipeline_builds_trains_and_reloads_the_configured_flow(tmp_path, overrides) -> None:
    from manifold_ps.benchmarking.pipeline import flow_record, stage_flow, stage_measurements
    from manifold_ps.config import apply_overrides, get_profile
    from manifold_ps.priors import build_prior

    workload = _toy_workload()
    config = apply_overrides(get_profile("smoke"), {"flow.train_steps": 2, **overrides})
    prior = build_prior(workload.geometry, channels=1, preset="tiny", network="mlp", parameterization="x0").eval()
    train, evals = stage_measurements(workload, workload.tasks[0], config, tmp_path)
    post = stage_flow(workload, workload.tasks[0], config, prior, train, tmp_path, device=torch.device("cpu"),
                      progress=False)
    record = flow_record(workload, workload.tasks[0], config)
    if not config.flow.decode:  # the paper's method: nothing new in the record, no base, no decoder
        assert not {"decode", "decoder_noise", "base", "base_rank", "base_precision", "likelihood"} & set(record["flow"])
        assert post.base is None and post.decode is None
    else:
        assert record["flow"]["base"] == "gaussian" and post.base.eigvals.shape[0] == 8
        assert post.decode == config.flow.t_min and post.decoder_noise == config.flow.decoder_noise
        assert post.base.marginal == (config.flow.likelihood == "marginal")
        dtype = getattr(torch, config.flow.base_precision)
        assert record["flow"]["base_precision"] == config.flow.base_precision
        assert all(getattr(post.base, k).dtype == dtype for k in ("mean", "eigvecs", "eigvals", "floor"))
    m = evals["paper"]
    draws = post.sample(m.y[:2], m.operator.select(torch.arange(2)), 3, generator=torch.Generator().manual_seed(0))
    again = stage_flow(workload, workload.tasks[0], config, prior, train, tmp_path, device=torch.device("cpu"),
                       progress=False)  # loads the finished run (with the prior attached)
    torch.testing.assert_close(again.sample(m.y[:2], m.operator.select(torch.arange(2)), 3,
                                            generator=torch.Generator().manual_seed(0)), draws)
    if config.flow.decode:
        assert again.base.mean.dtype == post.base.mean.dtype  # the precision is saved with the sampler


@pytest.mark.parametrize("fields, message", [
    ({"base": "gaussian", "decode": False}, "needs flow.decode"),
    ({"decode": True, "base": "fill", "decoder_noise": True}, "needs flow.base='gaussian'"),
    ({"base": "harmonic"}, "'fill', 'gaussian' or 'mixture'"),
    ({"decode": True, "base": "gaussian", "base_rank": 0}, "base_rank"),
    ({"decode": True, "base": "gaussian", "base_precision": "float16"}, "base_precision"),
    ({"decode": False, "base": "fill", "prior_term": "score"}, "prior_term='score'.*needs flow.decode"),
    ({"prior_term": "exact"}, "'elbo' or 'score'"),
])
def test_flow_config_validates_the_decoder_settings(fields, message) -> None:
    from manifold_ps.config import FlowConfig, get_profile

    assert (FlowConfig().decode, FlowConfig().base, FlowConfig().decoder_noise) == (True, "gaussian", False)
    assert (get_profile("paper").flow.decode, get_profile("paper").flow.base) == (False, "fill")  # the paper's method
    with pytest.raises(ValueError, match=message):
        FlowConfig(**fields)


# -- the decoder's error integrated out (likelihood="marginal") ------------------------------------------
def _joint(prior: GaussianPrior, t: float, observed: torch.Tensor, sigma: float) -> tuple[torch.Tensor, ...]:
    """Dense covariances of (x, u, y) with u = a x + s e, y = x[observed] + sigma n (independent truth)."""
    a = prior.sde.alpha(torch.tensor(t, dtype=DT))
    s2 = prior.sde.std(torch.tensor(t, dtype=DT)) ** 2
    cov = prior.covariance()
    d = cov.shape[0]
    a_mat = torch.eye(d, dtype=DT)[observed]
    c_xu, c_uu = a * cov, a * a * cov + s2 * torch.eye(d, dtype=DT)
    c_xy, c_uy = cov @ a_mat.T, a * cov @ a_mat.T
    c_yy = a_mat @ cov @ a_mat.T + sigma**2 * torch.eye(int(observed.sum()), dtype=DT)
    return a, a_mat, cov, c_xu, c_uu, c_xy, c_uy, c_yy


def test_marginal_likelihood_is_the_exact_density_of_y_given_u() -> None:
    from manifold_ps.operators import Inpainting

    t, sigma = 0.05, 0.3
    prior = _gaussian(rank=3)
    post = _sampler(prior, t, likelihood="marginal")
    masks = _masks(2, 6)
    op = Inpainting(masks, sigma=sigma)
    g = torch.Generator().manual_seed(5)
    y = torch.randn(2, 1, 6, generator=g, dtype=DT) * masks[:, None]
    u = torch.randn(2, 1, 6, generator=g, dtype=DT)
    error = post.error_posterior(op)
    tt = torch.full((2,), t, dtype=DT)
    got = error.log_evidence(y - prior.denoise(u, tt))
    mu = prior.mean.flatten()
    for i in range(2):
        a, a_mat, _, _, c_uu, _, c_uy, c_yy = _joint(prior, t, masks[i], sigma)
        gain = c_uy.T @ torch.linalg.inv(c_uu)
        mean = a_mat @ mu + gain @ (u[i].flatten() - a * mu)
        cov = c_yy - gain @ c_uy
        want = torch.distributions.MultivariateNormal(mean, cov).log_prob(y[i].flatten()[masks[i]])
        torch.testing.assert_close(got[i], want)


def test_marginal_draws_are_x_given_u_and_y() -> None:
    """x = D(u) + the error's posterior given y - A D(u): mean and covariance of x | u, y exactly."""
    from manifold_ps.operators import Inpainting

    t, sigma = 0.05, 0.3
    prior = _gaussian(rank=3)
    mask = _masks(1, 6)[0]
    op = Inpainting(mask, sigma=sigma)
    y = (torch.randn(1, 1, 6, dtype=DT) * mask)
    u = torch.randn(1, 1, 1, 6, dtype=DT)
    mu = prior.mean.flatten()
    a, a_mat, cov, c_xu, c_uu, c_xy, c_uy, c_yy = _joint(prior, t, mask, sigma)
    c_cond = torch.cat([torch.cat([c_uu, c_uy], 1), torch.cat([c_uy.T, c_yy], 1)])
    c_x = torch.cat([c_xu, c_xy], 1)
    gain = c_x @ torch.linalg.inv(c_cond)
    want_mean = mu + gain @ torch.cat([u.flatten() - a * mu, y.flatten()[mask] - a_mat @ mu])
    want_cov = cov - gain @ c_x.T
    for noise in (False, True):
        post = _sampler(prior, t, noise=noise, likelihood="marginal")
        n = 40000 if noise else 1
        x = post._decode(u.expand(1, n, 1, 6).float(), torch.Generator().manual_seed(0), y.float(),
                         post.error_posterior(op))[0, :, 0].double()
        if not noise:
            torch.testing.assert_close(x[0], want_mean, atol=1e-5, rtol=1e-4)
            continue
        se = (want_cov.diagonal() / n).sqrt()
        assert bool(((x.mean(0) - want_mean).abs() < 5 * se).all())
        torch.testing.assert_close(torch.cov(x.T), want_cov, atol=0.03 * float(want_cov.diagonal().max()), rtol=0.0)


def test_marginal_loss_matches_a_direct_computation_and_round_trips(tmp_path) -> None:
    from manifold_ps.flows import AmortizedPosterior, reverse_kl_loss
    from manifold_ps.operators import Inpainting

    t, sigma = 0.05, 0.3
    prior = _gaussian(rank=3)
    post = _sampler(prior, t, likelihood="marginal")
    torch.manual_seed(0)
    for p in post.flow.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    masks = _masks(2, 6)
    op = Inpainting(masks, sigma=sigma)
    y = torch.randn(2, 1, 6) * masks[:, None]
    z = torch.randn(2, 3, 1, 6)
    loss, terms = reverse_kl_loss(post, prior, op, y, z=z, n_z=3, t_min=t, prior_term="exact")
    with torch.no_grad():
        cond, loc = post.prepare(y, op)
        v, _ = post.flow(cond, 3, z=z)
        u, _ = post.base.call_and_ladj(v, post.prepare_base(y, op))
        x = prior.denoise(u.reshape(6, 1, 6).double(), torch.full((6,), t, dtype=DT))
        mu = prior.mean.flatten()
        quad = []
        for row in range(6):
            i = row // 3
            _, a_mat, _, _, c_uu, _, c_uy, c_yy = _joint(prior, t, masks[i], sigma)
            r = y[i].double().flatten()[masks[i]] - a_mat @ x[row].flatten()
            quad.append(r @ torch.linalg.solve(c_yy - c_uy.T @ torch.linalg.solve(c_uu, c_uy), r))
        fidelity = 0.5 * torch.stack(quad)
    torch.testing.assert_close(terms["fidelity"], float(fidelity.mean() / 6), rtol=1e-4, atol=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in post.flow.parameters() if p.requires_grad)
    post.save(tmp_path / "post.pt")
    assert AmortizedPosterior.load(tmp_path / "post.pt").likelihood == "marginal"


def test_marginal_likelihood_needs_a_gaussian_base() -> None:
    from manifold_ps.config import FlowConfig
    from manifold_ps.flows import AmortizedPosterior, ConditionalRealNVP, GaussianBase
    from manifold_ps.geometry import VertexLayout

    flow = ConditionalRealNVP(1, VertexLayout(6), 2, steps=2, hidden=8)
    with pytest.raises(ValueError, match="needs a Gaussian base"):
        AmortizedPosterior(flow, decode=0.05, likelihood="marginal")
    with pytest.raises(ValueError, match="marginal=True"):
        AmortizedPosterior(flow, base=GaussianBase(_gaussian(), 0.05), decode=0.05, likelihood="marginal")
    with pytest.raises(ValueError, match="marginal=False"):
        AmortizedPosterior(flow, base=GaussianBase(_gaussian(), 0.05, marginal=True), decode=0.05)
    with pytest.raises(ValueError, match="'denoised' or 'marginal'"):
        AmortizedPosterior(flow, likelihood="exact")
    with pytest.raises(ValueError, match="needs flow.base='gaussian'"):
        FlowConfig(base="fill", likelihood="marginal")
    assert FlowConfig().likelihood == "denoised"


@pytest.mark.parametrize("rank", [None, 3])
def test_marginal_base_logdet_inverse_and_law(rank: int | None) -> None:
    """The marginal base: Jacobian against slogdet, inverse, and u ~ N(a m, a^2 C + s^2 I) exactly."""
    from manifold_ps.flows import GaussianBase
    from manifold_ps.operators import Inpainting
    from manifold_ps.priors.gaussian import linear_gaussian_posterior

    t, d = 0.05, 6
    prior = _gaussian(rank=rank)
    base = GaussianBase(prior, t, marginal=True)
    masks = _masks(3, d)
    op = Inpainting(masks, sigma=0.2)
    y = torch.randn(3, 1, d, dtype=DT)
    u0, jac = _check_bijection(base, base.prepare(y, op), 3, d)
    a = prior.sde.alpha(torch.tensor(t, dtype=DT))
    s2 = prior.sde.std(torch.tensor(t, dtype=DT)) ** 2
    for i in range(3):
        mean, cov = linear_gaussian_posterior(prior, Inpainting(masks[i], sigma=0.2), y[i:i + 1])
        torch.testing.assert_close(u0[i, 0, 0], a * mean.flatten())
        torch.testing.assert_close(jac[i] @ jac[i].T, a * a * cov + s2 * torch.eye(d, dtype=DT))


def test_untrained_marginal_sampler_draws_the_exact_posterior() -> None:
    """Marginal base + the error's posterior given y: on a Gaussian teacher the draws are N(m, C),
    the posterior under S itself (no contraction)."""
    from manifold_ps.operators import Inpainting
    from manifold_ps.priors.gaussian import linear_gaussian_posterior

    prior = _gaussian(rank=3)
    post = _sampler(prior, 0.05, noise=True, likelihood="marginal")
    op = Inpainting(_masks(1, 6)[0], sigma=0.3)
    y = torch.randn(1, 1, 6)
    n = 40000
    x = post.sample(y, op, n, generator=torch.Generator().manual_seed(0))[0, :, 0].double()
    mean, cov = linear_gaussian_posterior(prior, op, y.double())
    se = (cov.diagonal() / n).sqrt()
    assert bool(((x.mean(0) - mean[0, 0]).abs() < 5 * se).all())
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.03 * float(cov.diagonal().max()), rtol=0.0)


def test_decoding_runs_in_bounded_pieces() -> None:
    """Many draws are decoded DECODE_CHUNK signals at a time, with the same result as one call."""
    from manifold_ps.flows.posterior import DECODE_CHUNK
    from manifold_ps.operators import Inpainting

    prior = _gaussian(rank=3)
    post = _sampler(prior, 0.05)
    sizes: list[int] = []
    denoise = prior.denoise

    def spy(x, t):
        sizes.append(x.shape[0])
        return denoise(x, t)

    prior.denoise = spy  # type: ignore[method-assign]
    u = torch.randn(3, 200, 1, 6)
    x = post._decode(u, None)
    assert max(sizes) <= DECODE_CHUNK and sum(sizes) == 600
    torch.testing.assert_close(x, denoise(u.reshape(600, 1, 6), torch.full((600,), 0.05)).reshape(u.shape))
    op = Inpainting(torch.ones(6, dtype=torch.bool), 0.3)
    assert post.sample(torch.zeros(1, 1, 6), op, 300).shape == (1, 300, 1, 6)


# -- the dense path: linear operators other than masking and denoising ---------------------------------
def _dense_op(name: str, sigma: float = 0.2):
    """An image operator on 2 x 4 images (d = 8) that the base factorises densely."""
    from manifold_ps.operators import Downsample2x, ImageBlur

    if name == "blur":
        return ImageBlur(2, 4, kernel_sigma=1.0, kernel_size=3, sigma=sigma)
    return Downsample2x(2, 4, sigma=sigma)


def _dense_y(op, b: int = 2) -> torch.Tensor:
    x = torch.randn(b, 1, 8, generator=torch.Generator().manual_seed(5), dtype=DT)
    return op(x, generator=torch.Generator().manual_seed(6))


@pytest.mark.parametrize("name", ["blur", "downsample"])
@pytest.mark.parametrize("rank", [None, 3])
@pytest.mark.parametrize("marginal", [False, True])
def test_dense_gaussian_base_is_exact(name: str, rank: int | None, marginal: bool) -> None:
    """Blur and downsampling: the base's Jacobian against slogdet, its inverse, and its law against
    the dense posterior (decoded by the Gaussian's own denoiser: the contracted posterior; marginal:
    u ~ N(a m, a^2 C + s^2 I) with the posterior under S)."""
    from manifold_ps.flows import GaussianBase

    t, d = 0.05, 8
    prior = _gaussian(d, rank=rank)
    base = GaussianBase(prior, t, marginal=marginal)
    op = _dense_op(name)
    y = _dense_y(op)
    state = base.prepare(y, op)
    assert state.chol is not None and state.std is None
    u0, jac = _check_bijection(base, state, 2, d)
    _check_law(prior, t, base, state, u0, jac, y, lambda i: op)


def test_dense_gaussian_base_keeps_its_factor_per_operator_and_refuses_large_signals(monkeypatch) -> None:
    from manifold_ps.flows import GaussianBase, gaussian_base

    base = GaussianBase(_gaussian(8, rank=3), 0.05)
    op = _dense_op("blur")
    first = base.prepare(_dense_y(op), op).chol
    assert base.prepare(_dense_y(op, 3), op).chol is first  # the same operator: factorised once
    other = base.prepare(_dense_y(op), _dense_op("blur", sigma=0.3)).chol
    assert other is not first and not torch.allclose(other, first)
    base.eigvals.mul_(2.0)  # changed buffers (e.g. load_state_dict) give a new factor
    assert base.prepare(_dense_y(op), op).chol is not first
    monkeypatch.setattr(gaussian_base, "DENSE_LIMIT", 4)
    with pytest.raises(ValueError, match=r"dense path \(ImageBlur\) factorises a \(8, 8\) covariance.*DENSE_LIMIT = 4"):
        base.prepare(_dense_y(op), _dense_op("blur", sigma=0.4))


@pytest.mark.parametrize("name", ["blur", "downsample"])
def test_untrained_decoded_sampler_is_the_contracted_posterior_under_blur_and_downsampling(name: str) -> None:
    """The whole sampler (measurements that are not vertex-shaped included) draws the closed-form
    posterior under the push-forward Gaussian before training."""
    from manifold_ps.flows import AmortizedPosterior, ConditionalRealNVP, GaussianBase, condition_channels
    from manifold_ps.geometry import VertexLayout
    from manifold_ps.priors.gaussian import linear_gaussian_posterior

    t, d = 0.05, 8
    prior = _gaussian(d, rank=3)
    op = _dense_op(name)
    flow = ConditionalRealNVP(1, VertexLayout(d), condition_channels(1, op, reconstruct=True), steps=2, hidden=8,
                              init_scale=1.0)
    post = AmortizedPosterior(flow, base=GaussianBase(prior, t), decode=t).attach_prior(prior)
    y = _dense_y(op, 1).float()
    n = 40000
    x = post.sample(y, op, n, generator=torch.Generator().manual_seed(0))[0, :, 0].double()
    mean, cov = linear_gaussian_posterior(_contracted(prior, t), op, y.double())
    se = (cov.diagonal() / n).sqrt()
    assert bool(((x.mean(0) - mean[0, 0]).abs() < 5 * se).all())
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.03 * float(cov.diagonal().max()), rtol=0.0)
