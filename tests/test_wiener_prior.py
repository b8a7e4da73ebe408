"""The "wiener" parameterisation: a fitted Gaussian's exact denoiser plus a learned correction.

At initialisation the prior must *be* the Gaussian (denoiser, score, ELBO and samples given the
same generator); its Gaussian part must travel in the prior's one file; and the correction must be
able to learn (every parameter receives a gradient once the zero-initialised last layer moved).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from manifold_ps.geometry import Icosphere, VertexLayout
from manifold_ps.priors import DiffusionPrior, GaussianPrior, MLPDenoiser, UNet1d, VPSDE, build_prior

V = 12
C = 2


def _signals(n: int, *, seed: int = 0) -> Tensor:
    """Correlated non-Gaussian signals ``(n, C, V)`` (smooth bumps plus a little noise), float64."""
    g = torch.Generator().manual_seed(seed)
    grid = torch.linspace(-1, 1, V, dtype=torch.float64)
    centre = torch.rand(n, C, 1, generator=g, dtype=torch.float64) * 1.6 - 0.8
    bumps = torch.exp(-((grid - centre) ** 2) / 0.1)
    return bumps + 0.05 * torch.randn(n, C, V, generator=g, dtype=torch.float64)


def _gaussian(kind: str) -> GaussianPrior:
    data = _signals(400)
    if kind == "full":
        return GaussianPrior.fit(data, ridge=1e-4)
    return GaussianPrior.fit(data, rank=5)  # low rank plus an isotropic floor


def _network(kind: str, length: int) -> nn.Module:
    if kind == "mlp":
        return MLPDenoiser(2 * C, C, length, hidden=32, depth=2, time_embedding_dim=16)  # x_t and W(x_t)
    return UNet1d(2 * C, C, base_channels=8, channel_mults=(1, 2), num_res_blocks=1)


def _prior(network: str = "mlp", kind: str = "low_rank") -> DiffusionPrior:
    torch.manual_seed(0)
    layout = VertexLayout(V, perm=torch.randperm(V), multiple=4)
    return DiffusionPrior(_network(network, layout.length), layout, channels=C, parameterization="wiener",
                          gaussian=_gaussian(kind), fingerprint="toy-geometry", data_mean=0.2, data_std=0.3)


def _randomize(module: nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.2)


STEP0 = pytest.mark.parametrize(("network", "kind"), [(n, k) for n in ("mlp", "unet") for k in ("full", "low_rank")])


@STEP0
def test_step0_denoise_and_score_are_the_gaussians(network: str, kind: str) -> None:
    prior = _prior(network, kind).double()
    g = prior.gaussian
    assert g is not None
    x = torch.randn(5, C, V, dtype=torch.float64)
    t = torch.tensor([1e-3, 0.01, 0.1, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(prior.denoise(x, t), g.denoise(x, t), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(prior.score(x, t), g.score(x, t), rtol=1e-10, atol=1e-10)


@STEP0
def test_step0_elbo_is_the_gaussians_given_the_same_generator(network: str, kind: str) -> None:
    prior = _prior(network, kind).double()
    g = prior.gaussian
    assert g is not None
    x0 = _signals(4, seed=1)
    for importance in (True, False):
        kw = dict(n_time=3, n_noise=2, t_min=1e-3, importance=importance)
        ours = prior.elbo(x0, generator=torch.Generator().manual_seed(7), **kw)  # type: ignore[arg-type]
        ref = g.elbo(x0, generator=torch.Generator().manual_seed(7), **kw)  # type: ignore[arg-type]
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-8)


@STEP0
@pytest.mark.parametrize(("method", "kwargs"), [("ddpm", {"steps": 30}), ("ode", {"steps": 8})])
def test_step0_samples_are_the_gaussians_given_the_same_generator(network: str, kind: str, method: str,
                                                                   kwargs: dict[str, int]) -> None:
    prior = _prior(network, kind).double().eval()
    g = prior.gaussian
    assert g is not None
    common = dict(method=method, **kwargs)
    ours = prior.sample(3, generator=torch.Generator().manual_seed(3), **common)  # type: ignore[arg-type]
    ref = g.sample(3, generator=torch.Generator().manual_seed(3), **common)  # type: ignore[arg-type]
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def test_output_scale_is_the_rms_posterior_std_of_the_gaussian() -> None:
    prior = _prior(kind="low_rank")
    g = prior.gaussian
    assert g is not None
    t = torch.tensor([1e-3, 0.05, 0.3, 1.0], dtype=torch.float64)
    s = g.covariance()
    expected = []
    for ti in t:
        a, var = prior.sde.alpha(ti), prior.sde.std(ti) ** 2
        post = s - a**2 * s @ torch.linalg.solve(a**2 * s + var * torch.eye(C * V, dtype=s.dtype), s)
        expected.append(post.diagonal().reshape(C, V).mean(-1).sqrt())
    x = torch.zeros(4, C, V, dtype=torch.float64)
    torch.testing.assert_close(prior.output_scale(x, t), torch.stack(expected)[..., None], rtol=1e-8, atol=1e-12)


def test_step0_loss_is_one_on_the_fitted_signals() -> None:
    # the Wiener denoiser's expected error on the data it was fitted to is exactly its posterior variance
    data = _signals(400)
    g = GaussianPrior.fit(data, ridge=1e-4)
    layout = VertexLayout(V, multiple=4)
    prior = DiffusionPrior(_network("mlp", layout.length), layout, channels=C, parameterization="wiener",
                           gaussian=g).double()
    with torch.no_grad():
        loss = prior.dsm_loss(data.repeat(20, 1, 1), torch.Generator().manual_seed(0))
    assert abs(float(loss.mean()) - 1.0) < 0.05, float(loss.mean())


@pytest.mark.parametrize("network", ["mlp", "unet"])
def test_every_parameter_learns_after_two_steps(network: str) -> None:
    prior = _prior(network)
    data = _signals(16).float()
    opt = torch.optim.SGD(prior.parameters(), lr=0.1)
    # step 0 moves the zero-initialised output layer, step 1 the zero-initialised residual
    # branches; from then on the gradient reaches everything
    for step in range(3):
        opt.zero_grad()
        prior.dsm_loss(data, torch.Generator().manual_seed(step)).mean().backward()
        if step == 0:
            grads = {name: p.grad for name, p in prior.named_parameters()}
            assert all(g is not None for g in grads.values())
            assert any(bool((g != 0).any()) for g in grads.values() if g is not None)  # the last layer
        opt.step()
    for name, p in prior.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert bool((p.grad != 0).any()), name
    # the Gaussian is fixed: buffers, not parameters
    assert not any(name.startswith("gaussian.") for name, _ in prior.named_parameters())


def test_trained_correction_changes_the_denoiser_and_shapes_hold() -> None:
    prior = _prior("unet")
    _randomize(prior.network)
    g = prior.gaussian
    assert g is not None
    x, t = torch.randn(3, C, V), torch.tensor([0.05, 0.3, 0.8])
    out = prior.denoise(x, t)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    assert not torch.allclose(out.double(), g.denoise(x.double(), t.double()), atol=1e-4)
    assert prior.output_scale(x, t).shape == (3, C, 1)


def test_save_load_round_trips_the_gaussian_part(tmp_path: Path) -> None:
    prior = _prior("mlp").eval()
    _randomize(prior.network)
    g = prior.gaussian
    assert g is not None
    x, t = torch.randn(2, C, V), torch.tensor([0.02, 0.6])
    expected = prior.denoise(x, t)
    torch.save(prior, tmp_path / "module.pt")
    whole = torch.load(tmp_path / "module.pt", weights_only=False)
    torch.testing.assert_close(whole.denoise(x, t), expected, rtol=0.0, atol=0.0)
    prior.save(tmp_path / "prior.pt")
    loaded = DiffusionPrior.load(tmp_path / "prior.pt", fingerprint="toy-geometry", num_vertices=V)
    assert loaded.parameterization == "wiener" and loaded.gaussian is not None
    for name in ("mean", "eigvecs", "eigvals", "floor"):
        ref = getattr(g, name)
        got = getattr(loaded.gaussian, name)
        assert got.dtype == ref.dtype
        torch.testing.assert_close(got, ref, rtol=0.0, atol=0.0)
    assert loaded.gaussian.fit_info == g.fit_info
    torch.testing.assert_close(loaded.denoise(x, t), expected, rtol=0.0, atol=0.0)
    with pytest.raises(ValueError, match="toy-geometry.*other-geometry"):
        DiffusionPrior.load(tmp_path / "prior.pt", fingerprint="other-geometry")
    with pytest.raises(ValueError, match=f"{V} vertices.*{V + 1} vertices"):
        DiffusionPrior.load(tmp_path / "prior.pt", num_vertices=V + 1)


def test_build_prior_wiener_on_a_mesh(tmp_path: Path) -> None:
    sphere = Icosphere(1)
    data = torch.rand(200, 1, sphere.num_vertices, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g = GaussianPrior.fit(data, rank=20)
    prior = build_prior(sphere, preset="tiny", network="mlp", parameterization="wiener", gaussian=g).double()
    x, t = data[:3], torch.tensor([0.01, 0.1, 0.9], dtype=torch.float64)
    torch.testing.assert_close(prior.denoise(x, t), g.denoise(x, t))
    torch.testing.assert_close(prior.data_mean.double(), g.mean.mean(-1), rtol=1e-5, atol=1e-6)
    prior.save(tmp_path / "p.pt")
    loaded = DiffusionPrior.load(tmp_path / "p.pt", geometry=sphere).double()
    torch.testing.assert_close(loaded.denoise(x, t), g.denoise(x, t))
    with pytest.raises(ValueError, match="Icosphere|vertices"):
        DiffusionPrior.load(tmp_path / "p.pt", geometry=Icosphere(2))
    with pytest.raises(ValueError, match="need a fitted gaussian"):
        build_prior(sphere, preset="tiny", network="mlp", parameterization="wiener")


def test_validation_errors() -> None:
    g = _gaussian("low_rank")
    layout = VertexLayout(V)
    net = MLPDenoiser(C, C, V, hidden=8, depth=1)
    with pytest.raises(ValueError, match="need a fitted gaussian"):
        DiffusionPrior(net, layout, channels=C, parameterization="wiener")
    with pytest.raises(ValueError, match="only they take one"):
        DiffusionPrior(net, layout, channels=C, parameterization="edm", gaussian=g)
    with pytest.raises(ValueError, match="channels x"):
        DiffusionPrior(MLPDenoiser(1, 1, V, hidden=8, depth=1), layout, channels=1, parameterization="wiener",
                       gaussian=g)
    with pytest.raises(ValueError, match="SDE"):
        DiffusionPrior(net, layout, channels=C, parameterization="wiener", gaussian=g,
                       sde=VPSDE(beta_max=10.0))
    with pytest.raises(ValueError, match=f"{2 * C} signal .* skip's estimate"):  # a network without the W input
        DiffusionPrior(net, layout, channels=C, parameterization="wiener", gaussian=g)
    with pytest.raises(ValueError, match="no exact skip"):
        DiffusionPrior(net, layout, channels=C).skip(torch.zeros(1, C, V), torch.ones(1))


def _two_mode_data(n: int = 256, v: int = 16) -> Tensor:
    """Bumps at one of two places: far from Gaussian, so the correction has something to learn."""
    g = torch.Generator().manual_seed(0)
    grid = torch.linspace(-1, 1, v)
    bumps = torch.stack([torch.exp(-((grid - 0.5) ** 2) / 0.05), torch.exp(-((grid + 0.5) ** 2) / 0.05)])
    pick = torch.randint(0, 2, (n,), generator=g)
    return (bumps[pick] + 0.05 * torch.randn(n, v, generator=g))[:, None, :]


def test_train_prior_learns_what_the_gaussian_misses(tmp_path: Path) -> None:
    from manifold_ps.priors import train_prior

    data = _two_mode_data()
    g = GaussianPrior.fit(data.double(), ridge=1e-4)
    torch.manual_seed(0)
    layout = VertexLayout(16)
    prior = DiffusionPrior(MLPDenoiser(2, 1, 16, hidden=64, depth=2, time_embedding_dim=16), layout, channels=1,
                           parameterization="wiener", gaussian=g)

    def mse_ratio(p: DiffusionPrior) -> float:  # denoising error relative to the Gaussian's, at t = 0.1
        x0 = data.repeat(4, 1, 1)
        t = torch.full((x0.shape[0],), 0.1)
        a, s = p.sde.alpha(t)[:, None, None], p.sde.std(t)[:, None, None]
        xt = a * x0 + s * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            wiener = g.denoise(xt.double(), t.double()).float()
            return float((p.denoise(xt, t) - x0).square().mean() / (wiener - x0).square().mean())

    before = mse_ratio(prior)
    trained = train_prior(prior, data, out_dir=tmp_path, steps=300, batch_size=64, lr=2e-3, ema_decay=0.9,
                          t_min=0.05, progress=False, device="cpu", checkpoint_every=1000)
    after = mse_ratio(trained)
    assert abs(before - 1.0) < 1e-5 and after < 0.95, (before, after)
    loaded = DiffusionPrior.load(tmp_path / "prior.pt", num_vertices=16)
    x, t = data[:2], torch.tensor([0.2, 0.6])
    torch.testing.assert_close(loaded.denoise(x, t), trained.denoise(x, t))


@pytest.mark.parametrize("time_sampling", ["log_snr", "uniform", "edm"])
def test_training_times_respect_t_max(time_sampling: str) -> None:
    prior = _prior()
    t = prior.sample_times(256, t_min=0.01, t_max=0.2, time_sampling=time_sampling,  # type: ignore[arg-type]
                           generator=torch.Generator().manual_seed(0))
    assert t.shape == (256,) and bool((t >= t.new_tensor(0.01)).all() and (t <= t.new_tensor(0.2)).all())
    default = prior.sample_times(8, generator=torch.Generator().manual_seed(0))
    explicit = prior.sample_times(8, t_max=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(default, explicit)
    for bad in (dict(t_min=0.3, t_max=0.2), dict(t_max=1.5), dict(t_min=0.0)):
        with pytest.raises(ValueError, match="t_min < t_max"):
            prior.sample_times(4, **bad)  # type: ignore[arg-type]
    assert prior.dsm_loss(_signals(4).float(), torch.Generator().manual_seed(0), t_max=0.1).shape == (4,)


# -- loss weighting ------------------------------------------------------------------------------


def _snr(sde: VPSDE, t: Tensor) -> Tensor:
    """``alpha^2 / sigma^2 = 1 / (exp(B(t)) - 1)`` written out from the linear schedule."""
    b = sde.beta_min * t + 0.5 * (sde.beta_max - sde.beta_min) * t**2
    return 1.0 / torch.expm1(b)


def _fixed_time_loss(prior: DiffusionPrior, x0: Tensor, t: Tensor, monkeypatch: pytest.MonkeyPatch,
                     **kwargs: str) -> tuple[Tensor, Tensor]:
    """``dsm_loss`` at the injected times ``t``, and the noised signals it used (same generator)."""
    monkeypatch.setattr(prior, "sample_times", lambda batch, **kw: t)
    with torch.no_grad():
        loss = prior.dsm_loss(x0, torch.Generator().manual_seed(5), **kwargs)  # type: ignore[arg-type]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5), dtype=x0.dtype)
    xt = prior.sde.alpha(t)[:, None, None] * x0 + prior.sde.std(t)[:, None, None] * noise
    return loss, xt


def test_elbo_weighting_at_fixed_times_is_the_snr_times_the_squared_error(monkeypatch: pytest.MonkeyPatch) -> None:
    prior = _prior(kind="full").double()  # step 0: its denoiser is the Gaussian's
    g = prior.gaussian
    assert g is not None
    x0 = _signals(4, seed=2)
    t = torch.tensor([1e-3, 0.02, 0.3, 0.9], dtype=torch.float64)
    loss, xt = _fixed_time_loss(prior, x0, t, monkeypatch, weighting="elbo")
    expected = _snr(prior.sde, t) * (g.denoise(xt, t) - x0).square().mean(dim=(1, 2))
    torch.testing.assert_close(loss, expected, rtol=1e-9, atol=0.0)


def test_edm_weighting_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    t = torch.tensor([1e-3, 0.02, 0.3, 0.9], dtype=torch.float64)
    x0 = _signals(4, seed=2)
    # "wiener": 1 / c_out^2, c_out^2 the mean posterior variance of the Gaussian (dense algebra)
    prior = _prior(kind="low_rank").double()
    _randomize(prior.network)
    g = prior.gaussian
    assert g is not None
    loss, xt = _fixed_time_loss(prior, x0, t, monkeypatch)
    s = g.covariance()
    c2 = []
    for ti in t:
        a, var = prior.sde.alpha(ti), prior.sde.std(ti) ** 2
        post = s - a**2 * s @ torch.linalg.solve(a**2 * s + var * torch.eye(C * V, dtype=s.dtype), s)
        c2.append(post.diagonal().reshape(C, V).mean(-1))
    with torch.no_grad():
        err = (prior.denoise(xt, t) - x0).square().mean(-1)  # (B, C)
    torch.testing.assert_close(loss, (err / torch.stack(c2)).mean(-1), rtol=1e-8, atol=0.0)
    # "edm" parameterisation: 1 / c_out^2 = alpha^2 / sigma^2 + 1 / sigma_d^2
    layout = VertexLayout(V)
    edm = DiffusionPrior(MLPDenoiser(C, C, V, hidden=16, depth=1), layout, channels=C, data_mean=0.2,
                         data_std=0.25).double()  # exact in the float32 buffer
    _randomize(edm.network)
    loss, xt = _fixed_time_loss(edm, x0, t, monkeypatch, weighting="edm")
    with torch.no_grad():
        err = (edm.denoise(xt, t) - x0).square().mean(dim=(1, 2))
    torch.testing.assert_close(loss, (_snr(edm.sde, t) + 1 / 0.25**2) * err, rtol=1e-9, atol=0.0)
    # and "edm" is the default
    monkeypatch.undo()
    kw = dict(t_min=0.01)
    torch.testing.assert_close(edm.dsm_loss(x0, torch.Generator().manual_seed(1), **kw),  # type: ignore[arg-type]
                               edm.dsm_loss(x0, torch.Generator().manual_seed(1), weighting="edm", **kw),
                               rtol=0.0, atol=0.0)


def test_elbo_weighted_loss_averages_to_the_elbos_error_integral() -> None:
    # Truth: for the linear Wiener denoiser D = m + K (x_t - alpha m), K = alpha S (alpha^2 S + sigma^2)^-1,
    #   E_eps ||x0 - D||^2 = ||(I - alpha K)(x0 - m)||^2 + sigma^2 ||K||_F^2,
    # and the ELBO's error integral int beta/sigma^2 alpha^2/sigma^2 E||x0 - D||^2 dt is, in u = log(sigma^2/alpha^2),
    # int exp(-u) E||x0 - D||^2 du: a 1-D quadrature.
    prior = _prior(kind="full").double()
    g = prior.gaussian
    assert g is not None
    sde, d, t_min = prior.sde, C * V, 1e-3
    x0 = _signals(2, seed=3)
    u_lo, u_hi = (sde.log_snr_inverse(torch.tensor(v, dtype=torch.float64)) for v in (t_min, sde.T))
    u = torch.linspace(float(u_lo), float(u_hi), 4001, dtype=torch.float64)
    t = sde.t_from_log_snr_inverse(u)
    a, var = sde.alpha(t)[:, None, None], (sde.std(t) ** 2)[:, None, None]
    s, eye = g.covariance(), torch.eye(d, dtype=torch.float64)
    k = a * torch.linalg.solve(a**2 * s + var * eye, s).mT  # S (a^2 S + var)^-1, S symmetric
    resid = torch.einsum("uij,nj->uni", eye - a * k, (x0 - g.mean).flatten(1))
    err = resid.square().sum(-1) + var[:, :, 0] * k.square().sum(dim=(1, 2))[:, None]  # (U, N)
    integral = torch.trapezoid(torch.exp(-u)[:, None] * err, u, dim=0)  # (N,)
    reps = 4000
    with torch.no_grad():
        loss = prior.dsm_loss(x0.repeat_interleave(reps, 0), torch.Generator().manual_seed(0), t_min=t_min,
                              weighting="elbo").reshape(2, reps)
    # the documented constant: E[loss] * d * (u_hi - u_lo) is the error integral
    estimate = loss.mean(-1) * d * (u_hi - u_lo)
    se = loss.std(-1) / reps**0.5 * d * (u_hi - u_lo)
    assert bool(((estimate - integral).abs() < 4 * se).all()), (estimate, integral, se)
    assert bool((se < 0.05 * integral).all())  # the check has teeth
    # the ELBO itself (without constants): b' = -1/2 alpha_T^2 ||x0||^2 - 1/2 (error integral)
    elbo = prior.elbo(x0, n_time=2000, t_min=t_min, include_constants=False, generator=torch.Generator().manual_seed(1))
    from_elbo = -2 * elbo - sde.alpha(torch.tensor(sde.T, dtype=torch.float64)) ** 2 * x0.flatten(1).square().sum(-1)
    torch.testing.assert_close(from_elbo, integral, rtol=0.05, atol=0.0)


def test_unknown_weighting_and_elbo_with_other_times_are_refused() -> None:
    from manifold_ps.priors import DSMObjective

    prior = _prior()
    x0 = _signals(2).float()
    with pytest.raises(ValueError, match="weighting must be 'edm' or 'elbo', got 'snr'"):
        prior.dsm_loss(x0, torch.Generator().manual_seed(0), weighting="snr")  # type: ignore[arg-type]
    for times in ("uniform", "edm"):
        with pytest.raises(ValueError, match=f"needs time_sampling='log_snr', got '{times}'"):
            prior.dsm_loss(x0, torch.Generator().manual_seed(0), time_sampling=times,  # type: ignore[arg-type]
                           weighting="elbo")
    with pytest.raises(ValueError, match="got 'snr'"):  # at construction, before any step
        DSMObjective(prior, weighting="snr")  # type: ignore[arg-type]
    assert DSMObjective(prior, weighting="elbo")(x0, torch.Generator().manual_seed(0)).shape == ()
