"""Tests of the diffusion priors: analytic Gaussian truth, networks, samplers, training, persistence."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from manifold_ps.geometry import ImageGrid, VertexLayout
from manifold_ps.priors import (
    DiffusionPrior,
    GaussianPrior,
    MLPDenoiser,
    UNet1d,
    bits_per_dim,
    build_prior,
    ddpm_sample,
    ode_sample,
    ode_sample_adaptive,
    train_prior,
)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():  # noqa: ANN202
    """Tiny tensors gain nothing from intra-op threads, and on busy shared cores the OpenMP
    spin-waiting of 2 threads made these tests ~50x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

# -- the analytic case ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gaussian() -> GaussianPrior:
    """N(mu, Sigma) on C=2 channels x V=4 vertices (d = 8), eigenvalues 0.05 .. 2, float64."""
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    evals = torch.logspace(math.log10(0.05), math.log10(2.0), 8, dtype=torch.float64)
    cov = q @ torch.diag(evals) @ q.T
    mean = 0.5 * torch.randn(2, 4, generator=g, dtype=torch.float64)
    return GaussianPrior(mean, 0.5 * (cov + cov.T))


@pytest.fixture(scope="module")
def x_gauss(gaussian: GaussianPrior) -> Tensor:
    return gaussian.sample_data(3, generator=torch.Generator().manual_seed(4))


def test_elbo_bounds_exact_log_density(gaussian: GaussianPrior, x_gauss: Tensor) -> None:
    # 200 independent 64-draw estimates per signal. With the exact score the systematic gap is
    # KL(p_T || pi) (~1e-4 nats here) plus the t_min cut-off (~1e-3); the rest is Monte-Carlo noise,
    # whose standard error (~0.3 nats at t_min = 1e-5) sets the tolerance: 3 SE + 0.05 nats.
    reps = 200
    est = gaussian.elbo(x_gauss.repeat_interleave(reps, 0), n_time=64, t_min=1e-5,
                        generator=torch.Generator().manual_seed(5)).reshape(-1, reps)
    mean, se = est.mean(1), est.std(1) / math.sqrt(reps)
    exact = gaussian.log_prob(x_gauss)
    assert bool((mean <= exact + 3 * se).all()), (mean, exact, se)
    assert bool(((mean - exact).abs() <= 3 * se + 0.05).all()), (mean - exact, se)
    assert float(se.max()) < 0.4


def test_elbo_importance_and_uniform_agree(gaussian: GaussianPrior, x_gauss: Tensor) -> None:
    reps = 100
    x = x_gauss.repeat_interleave(reps, 0)
    imp = gaussian.elbo(x, n_time=32, t_min=1e-3, generator=torch.Generator().manual_seed(6)).reshape(-1, reps)
    uni = gaussian.elbo(x, n_time=32, t_min=1e-3, importance=False,
                        generator=torch.Generator().manual_seed(7)).reshape(-1, reps)
    se = (imp.var(1) / reps + uni.var(1) / reps).sqrt()
    assert bool(((imp.mean(1) - uni.mean(1)).abs() <= 4 * se + 1e-3).all())


def _exact_p1(gaussian: GaussianPrior):  # noqa: ANN202
    return lambda z: gaussian.marginal_log_prob(z, z.new_ones(z.shape[0]))


def test_ode_likelihood_exact_trace(gaussian: GaussianPrior, x_gauss: Tensor) -> None:
    exact = gaussian.log_prob(x_gauss)
    # with the exact terminal density p_1 only the solver and t_min errors remain
    ll = gaussian.ode_log_likelihood(x_gauss, exact_trace=True, rtol=1e-6, atol=1e-6, terminal_logp=_exact_p1(gaussian))
    torch.testing.assert_close(ll, exact, atol=1e-3, rtol=0.0)
    # with pi = N(0, I) at t = 1 the mean shift alpha(1) mu adds ~ alpha(1)|mu||x_1| ~ 0.02 nats
    ll_pi = gaussian.ode_log_likelihood(x_gauss, exact_trace=True, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ll_pi, exact, atol=5e-2, rtol=0.0)
    rk4 = gaussian.ode_log_likelihood(x_gauss, exact_trace=True, solver="rk4", steps=16,
                                      terminal_logp=_exact_p1(gaussian))
    torch.testing.assert_close(rk4, exact, atol=1e-2, rtol=0.0)


@pytest.mark.parametrize("hutchinson", ["gaussian", "rademacher"])
def test_ode_likelihood_hutchinson(gaussian: GaussianPrior, x_gauss: Tensor, hutchinson: str) -> None:
    reps = 24
    ll = gaussian.ode_log_likelihood(x_gauss.repeat_interleave(reps, 0), hutchinson=hutchinson, rtol=1e-5,
                                     atol=1e-5, terminal_logp=_exact_p1(gaussian),
                                     generator=torch.Generator().manual_seed(8)).reshape(-1, reps)
    se = ll.std(1) / math.sqrt(reps)
    assert bool(((ll.mean(1) - gaussian.log_prob(x_gauss)).abs() <= 4 * se + 1e-3).all())


def test_bits_per_dim_of_gaussian(gaussian: GaussianPrior, x_gauss: Tensor) -> None:
    bpd = bits_per_dim(gaussian.log_prob(x_gauss), gaussian.num_dims)
    torch.testing.assert_close(bpd, -gaussian.log_prob(x_gauss) / (8 * math.log(2.0)))


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [("ddpm", {"steps": 200}), ("ode", {"steps": 18}), ("ode", {"steps": 10, "solver": "rk4"}), ("ode_adaptive", {})],
)
def test_gaussian_samples_match_moments(gaussian: GaussianPrior, method: str, kwargs: dict[str, object]) -> None:
    n = 4000
    x = gaussian.sample(n, method=method, generator=torch.Generator().manual_seed(9), **kwargs)
    assert x.shape == (n, 2, 4) and x.dtype == torch.float64
    flat = x.flatten(1)
    # standard errors: mean ~ sqrt(2/4000) = 0.022, covariance entries ~ 0.045; tolerances ~ 4 SE
    torch.testing.assert_close(flat.mean(0), gaussian.mean.flatten(), atol=0.1, rtol=0.0)
    torch.testing.assert_close(torch.cov(flat.T), gaussian.cov, atol=0.2, rtol=0.0)


@pytest.mark.parametrize("sampler", [ddpm_sample, ode_sample, ode_sample_adaptive])
def test_samplers_reproducible(gaussian: GaussianPrior, sampler: object) -> None:
    a = sampler(gaussian, 5, generator=torch.Generator().manual_seed(1))  # type: ignore[operator]
    b = sampler(gaussian, 5, generator=torch.Generator().manual_seed(1))  # type: ignore[operator]
    c = sampler(gaussian, 5, generator=torch.Generator().manual_seed(2))  # type: ignore[operator]
    assert a.shape == (5, 2, 4)
    assert torch.equal(a, b) and not torch.equal(a, c)


# -- networks and the diffusion prior --------------------------------------------------------------

V = 13  # not a multiple of anything: padding is exercised
UNET_CONFIGS = {
    "flat": dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention=False),
    "deep-attn": dict(base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=2, attention=True, attention_heads=2),
    "patch": dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, patch_size=2),
    "mlp": dict(hidden=32, depth=2, time_embedding_dim=16),
}


def _make_prior(parameterization: str, features: bool, config: str, *, channels: int = 2) -> DiffusionPrior:
    torch.manual_seed(0)
    kwargs = UNET_CONFIGS[config]
    k = 3 if features else 0
    feats = torch.randn(V, k) if features else None
    if config == "mlp":
        layout = VertexLayout(V, perm=torch.randperm(V), multiple=4)
        net: nn.Module = MLPDenoiser(channels + k, channels, layout.length, **kwargs)  # type: ignore[arg-type]
    else:
        multiple = int(kwargs.get("patch_size", 1)) * 2 ** (len(kwargs["channel_mults"]) - 1)  # type: ignore[call-overload]
        layout = VertexLayout(V, perm=torch.randperm(V), multiple=multiple)
        net = UNet1d(channels + k, channels, **kwargs)  # type: ignore[arg-type]
    return DiffusionPrior(net, layout, channels=channels,  # type: ignore[arg-type]
                          parameterization=parameterization, geometry_features=feats,  # type: ignore[arg-type]
                          fingerprint="toy-geometry", data_mean=0.2, data_std=0.4)


def _randomize(module: nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.2)


CONTRACT = pytest.mark.parametrize(
    ("parameterization", "features", "config"),
    [(p, f, c) for p in ("edm", "x0", "eps") for f in (False, True) for c in UNET_CONFIGS],
)


@CONTRACT
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_prior_contract_shapes_dtypes(parameterization: str, features: bool, config: str, dtype: torch.dtype,
                                      device: torch.device) -> None:
    prior = _make_prior(parameterization, features, config).to(device=device, dtype=dtype)
    _randomize(prior.network)
    x = torch.randn(4, 2, V, device=device, dtype=dtype)
    t = torch.rand(4, device=device, dtype=dtype) * 0.9 + 0.05
    out = prior.denoise(x, t)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert torch.isfinite(out).all()
    for name in ("eps", "score"):
        assert getattr(prior, name)(x, t).shape == x.shape
    seq = prior.network_output(x, t)
    assert seq.shape == (4, 2, prior.layout.length)
    assert prior.layout.num_padding > 0 and bool((seq[..., ~prior.layout.valid] == 0).all())
    assert bool((seq[..., prior.layout.valid] != 0).any())


@CONTRACT
def test_prior_contract_gradients(parameterization: str, features: bool, config: str) -> None:
    prior = _make_prior(parameterization, features, config)
    _randomize(prior.network)
    x0 = torch.randn(4, 2, V)
    prior.dsm_loss(x0, torch.Generator().manual_seed(0)).mean().backward()
    for name, p in prior.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert bool((p.grad != 0).any()), name


@CONTRACT
def test_prior_contract_save_load(parameterization: str, features: bool, config: str, tmp_path: Path) -> None:
    prior = _make_prior(parameterization, features, config).eval()
    _randomize(prior.network)
    x, t = torch.randn(2, 2, V), torch.tensor([0.3, 0.7])
    expected = prior.denoise(x, t)

    torch.save(prior, tmp_path / "module.pt")
    whole = torch.load(tmp_path / "module.pt", weights_only=False)
    torch.testing.assert_close(whole.denoise(x, t), expected, atol=0.0, rtol=0.0)

    prior.save(tmp_path / "prior.pt")
    loaded = DiffusionPrior.load(tmp_path / "prior.pt", fingerprint="toy-geometry", num_vertices=V)
    torch.testing.assert_close(loaded.denoise(x, t), expected, atol=0.0, rtol=0.0)
    assert loaded.parameterization == parameterization and loaded.num_features == (3 if features else 0)

    with pytest.raises(ValueError, match="toy-geometry.*other-geometry"):
        DiffusionPrior.load(tmp_path / "prior.pt", fingerprint="other-geometry")
    with pytest.raises(ValueError, match=f"{V} vertices.*{V + 1} vertices"):
        DiffusionPrior.load(tmp_path / "prior.pt", num_vertices=V + 1)


def test_elbo_gradients_reach_x0_and_parameters() -> None:
    prior = _make_prior("edm", True, "flat")
    _randomize(prior.network)
    x0 = torch.randn(3, 2, V, requires_grad=True)
    prior.elbo(x0, n_time=2, t_min=0.03, include_constants=False,
               generator=torch.Generator().manual_seed(0)).sum().backward()
    assert x0.grad is not None and torch.isfinite(x0.grad).all() and bool((x0.grad != 0).any())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in prior.parameters())


@pytest.mark.parametrize("method", ["ddpm", "ode", "ode_adaptive"])
def test_diffusion_prior_sampling_reproducible(method: str) -> None:
    prior = _make_prior("edm", False, "flat").eval()
    _randomize(prior.network)
    kwargs = {"steps": 6} if method != "ode_adaptive" else {"rtol": 1e-2, "atol": 1e-2}
    a = prior.sample(3, method=method, generator=torch.Generator().manual_seed(0), **kwargs)
    b = prior.sample(3, method=method, generator=torch.Generator().manual_seed(0), **kwargs)
    assert a.shape == (3, 2, V) and torch.equal(a, b) and torch.isfinite(a).all()


def test_ode_likelihood_of_network_prior_is_finite() -> None:
    prior = _make_prior("edm", False, "flat").eval()
    ll = prior.ode_log_likelihood(torch.rand(2, 2, V), solver="heun", steps=8,
                                  generator=torch.Generator().manual_seed(0))
    assert ll.shape == (2,) and torch.isfinite(ll).all()


def test_validation_errors() -> None:
    with pytest.raises(ValueError, match="divisible"):
        UNet1d(1, 1, base_channels=8, channel_mults=(1, 2, 2))(torch.randn(1, 1, 10), torch.rand(1))
    with pytest.raises(ValueError, match="input channels"):
        DiffusionPrior(UNet1d(1, 1, base_channels=8, channel_mults=(1,)), VertexLayout(5), channels=2)
    with pytest.raises(ValueError, match="parameterization"):
        DiffusionPrior(UNet1d(1, 1, base_channels=8, channel_mults=(1,)), VertexLayout(5), channels=1,
                       parameterization="v")  # type: ignore[arg-type]
    prior = _make_prior("edm", False, "flat")
    with pytest.raises(ValueError, match="vertices"):
        prior.denoise(torch.randn(1, 2, V + 1), torch.rand(1))
    with pytest.raises(ValueError, match="method"):
        prior.sample(1, method="euler")  # type: ignore[arg-type]


# -- training --------------------------------------------------------------------------------------


def _two_mode_data(n: int = 256, v: int = 16) -> Tensor:
    g = torch.Generator().manual_seed(0)
    grid = torch.linspace(-1, 1, v)
    bumps = torch.stack([torch.exp(-((grid - 0.5) ** 2) / 0.05), torch.exp(-((grid + 0.5) ** 2) / 0.05)])
    pick = torch.randint(0, 2, (n,), generator=g)
    return (bumps[pick] + 0.05 * torch.randn(n, v, generator=g))[:, None, :]


def test_dsm_loss_decreases_and_prior_is_saved(tmp_path: Path) -> None:
    data = _two_mode_data()
    torch.manual_seed(0)
    prior = DiffusionPrior(UNet1d(1, 1, base_channels=16, channel_mults=(1, 2)), VertexLayout(16, multiple=2),
                           channels=1)
    prior.set_data_statistics(data)

    def eval_loss(p: DiffusionPrior) -> float:
        with torch.no_grad():
            return float(p.dsm_loss(data.repeat(4, 1, 1), torch.Generator().manual_seed(1)).mean())

    before = eval_loss(prior)
    trained = train_prior(prior, data, out_dir=tmp_path, steps=60, batch_size=32, lr=3e-3, ema_decay=0.9,
                          progress=False, device="cpu", checkpoint_every=1000)
    after = eval_loss(trained)
    assert after < 0.7 * before, (before, after)
    loaded = DiffusionPrior.load(tmp_path / "prior.pt", num_vertices=16)
    x, t = data[:2], torch.tensor([0.2, 0.6])
    torch.testing.assert_close(loaded.denoise(x, t), trained.denoise(x, t))


def test_build_prior_on_grid_geometry() -> None:
    grid = ImageGrid(6, 7)
    prior = build_prior(grid, channels=1, preset="tiny", geometry_channels=2)
    assert prior.fingerprint == grid.fingerprint() and prior.num_features == 2
    assert prior.layout.length % 2 == 0 and prior.layout.length >= 42
    x = torch.rand(2, 1, 42)
    assert prior.dsm_loss(x, torch.Generator().manual_seed(0)).shape == (2,)


def test_build_prior_mlp_network_round_trip(tmp_path: Path) -> None:
    grid = ImageGrid(5, 6)
    prior = build_prior(grid, channels=1, preset="tiny", network="mlp")
    assert isinstance(prior.network, MLPDenoiser) and prior.layout.length == 30
    _randomize(prior.network)
    x, t = torch.rand(2, 1, 30), torch.tensor([0.1, 0.9])
    prior.save(tmp_path / "mlp.pt")
    loaded = DiffusionPrior.load(tmp_path / "mlp.pt", geometry=grid)
    torch.testing.assert_close(loaded.denoise(x, t), prior.denoise(x, t), atol=0.0, rtol=0.0)
    with pytest.raises(ValueError, match="network must be"):
        build_prior(grid, network="transformer")  # type: ignore[arg-type]
