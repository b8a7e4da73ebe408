"""Baselines against the exact linear-Gaussian posterior, plus the shared sampler contract."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from manifold_ps.baselines import (
    DPS,
    MCG,
    HarmonicInterpolation,
    NFECounter,
    REDDiff,
    TweedieDenoiser,
    reverse_grid,
    timed,
)
from manifold_ps.geometry import ImageGrid, VertexLayout
from manifold_ps.operators import Denoising, Inpainting, Operator, random_mask
from manifold_ps.priors import DiffusionPrior, GaussianPrior, ScorePrior, UNet1d, VPSDE, linear_gaussian_posterior
from manifold_ps.sampling import PosteriorSampler

V = 12


def _gaussian(v: int = V) -> GaussianPrior:
    pos = torch.arange(v, dtype=torch.float64)
    cov = 0.04 * (torch.exp(-(pos[:, None] - pos[None]) ** 2 / 8.0) + 0.05 * torch.eye(v, dtype=torch.float64))
    return GaussianPrior(torch.full((1, v), 0.5, dtype=torch.float64), cov)


@pytest.fixture(scope="module")
def gaussian() -> GaussianPrior:
    return _gaussian()


@pytest.fixture(scope="module")
def problem(gaussian: GaussianPrior) -> tuple[Inpainting, Tensor, Tensor, float]:
    """4 measurements, 40% of the vertices missing, sigma_y = 0.1; exact posterior mean and mean std."""
    g = torch.Generator().manual_seed(0)
    op = Inpainting(random_mask(V, 0.4, 1, generator=g)[0], 0.1)
    x = gaussian.sample_data(4, generator=g)
    y = op(x, generator=g)
    mean, cov = linear_gaussian_posterior(gaussian, op, y)
    return op, y, mean, float(cov.diag().sqrt().mean())


def _error(estimate: Tensor, mean: Tensor, std: float) -> float:
    """RMS distance to the exact posterior mean in units of the mean posterior std."""
    return float((estimate - mean).square().mean().sqrt() / std)


# -- accuracy on the linear-Gaussian problem ------------------------------------------------------------

# The mean of 256 samples against the exact posterior mean, in posterior stds (the zero-filled
# measurement A^T y is 3.6 units away, the prior mean ~1.6). Monte-Carlo error of a 256-sample
# mean: ~0.05 units. DPS is biased even with the exact score and infinitely many steps: it
# replaces p(y | x_t) by N(y; A x0_hat(x_t), sigma^2), dropping Cov[x0 | x_t], so it over-trusts y
# at intermediate t; MCG adds its own bias (it keeps the measurement noise on observed vertices,
# and its samples are too narrow). Measured with these seeds (100 steps): likelihood 0.33,
# norm (zeta=1) 0.75, MCG likelihood 0.59, MCG norm 0.86, RED-diff 0.52 (mean of 8 runs of a
# point estimate; 0.75 for one run). The bounds are ~1.4x those values: loose for Monte-Carlo noise, tight enough that a
# wrong sign, a missing step scale or a wrong time grid (all land > 1.5 units away or diverge)
# fails.
@pytest.mark.parametrize(
    ("make", "n", "bound"),
    [
        (lambda p: DPS(p, steps=100, zeta=1.0, step_convention="likelihood"), 256, 0.5),
        (lambda p: DPS(p, steps=100, zeta=1.0, step_convention="likelihood", time_grid="uniform"), 256, 0.5),
        (lambda p: DPS(p, steps=100, zeta=1.0), 256, 1.1),
        (lambda p: MCG(p, steps=100, zeta=1.0, step_convention="likelihood"), 256, 0.85),
        (lambda p: MCG(p, steps=100, zeta=1.0), 256, 1.2),
        (lambda p: REDDiff(p, steps=200), 8, 0.8),
    ],
    ids=["dps-likelihood", "dps-likelihood-uniform", "dps-norm", "mcg-likelihood", "mcg-norm", "reddiff"],
)
def test_close_to_exact_posterior_mean(gaussian, problem, make, n: int, bound: float) -> None:
    op, y, mean, std = problem
    samples = make(gaussian).sample(y, op, n, generator=torch.Generator().manual_seed(1))
    assert _error(samples.mean(1), mean, std) < bound
    assert _error(samples.mean(1), mean, std) < 0.35 * _error(y, mean, std)  # far better than the zero fill


def _chain_variances(eigvals: Tensor, times_abar: tuple[Tensor, Tensor]) -> Tensor:
    """Exact variances of the unguided ancestral chain (x0_hat exact) along the prior's eigenvectors.

    The chain is linear for a Gaussian prior: with ``x0_hat = mu + c_t (x_t - alpha_t mu)``,
    ``c_t = alpha_t lam / (alpha_t^2 lam + sigma_t^2)``, a step ``x_s = a x0_hat + b x_t + sqrt(v) z``
    maps the variance to ``(a c_t + b)^2 var + v``. It is *not* the prior variance: the DDPM chain
    under-disperses data much narrower than the unit noise (ratio 0.77 for lam = 0.04 at 100 steps,
    0.96 at 1000), so the test compares with this recursion, not with the prior.
    """
    _, abar = times_abar
    var = torch.ones_like(eigvals)
    for i in reversed(range(abar.shape[0])):
        at = abar[i]
        c = at.sqrt() * eigvals / (at * eigvals + 1 - at)
        if i == 0:
            return c**2 * var
        as_ = abar[i - 1]
        beta = 1 - at / as_
        a, b = as_.sqrt() * beta / (1 - at), (1 - beta).sqrt() * (1 - as_) / (1 - at)
        var = (a * c + b) ** 2 * var + beta * (1 - as_) / (1 - at)
    raise AssertionError("unreachable")


@pytest.mark.parametrize("time_grid", ["ddpm", "uniform"])
def test_unguided_chain_is_the_exact_ddpm_chain(gaussian, time_grid: str) -> None:
    """zeta = 0: the ancestral chain with the exact denoiser, checked against its closed form."""
    op = Inpainting(torch.ones(V, dtype=torch.bool), 0.1)
    n = 2000
    samples = DPS(gaussian, steps=50, zeta=0.0, time_grid=time_grid).sample(
        torch.zeros(1, 1, V, dtype=torch.float64), op, n, generator=torch.Generator().manual_seed(0))[0, :, 0]
    var = _chain_variances(gaussian.eigvals, reverse_grid(gaussian.sde, 50, time_grid))
    expected = (gaussian.eigvecs * var) @ gaussian.eigvecs.T
    std = expected.diag().sqrt()
    # mean: 5 Monte-Carlo standard errors (std / sqrt(n)); the chain's mean bias is ~alpha_T ~ 1e-2 std
    assert float(((samples.mean(0) - gaussian.mean[0]) / std).abs().max()) < 5 / n**0.5
    # covariance: Monte-Carlo relative error ~ sqrt(2 / n) = 0.03; measured 0.02-0.03
    emp = torch.cov(samples.T)
    assert float((emp - expected).norm() / expected.norm()) < 0.08
    assert float((var / gaussian.eigvals).min()) < 0.9  # the check above can tell the chain from the prior


def test_squared_normalized_is_norm_at_half_zeta(gaussian, problem) -> None:
    op, y, _, _ = problem
    run = lambda s: s.sample(y, op, 2, generator=torch.Generator().manual_seed(4))  # noqa: E731
    a = run(DPS(gaussian, steps=20, zeta=2.0))
    b = run(DPS(gaussian, steps=20, zeta=1.0, step_convention="squared_normalized"))
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_reddiff_improves_on_its_start(gaussian, problem) -> None:
    op, y, mean, std = problem
    red = REDDiff(gaussian, steps=200)
    start = red.initial(y, op)
    out = red.sample(y, op, 4, generator=torch.Generator().manual_seed(2))
    # measured: 0.58 (mean of 4 runs) and 0.76 (one run) against 3.6 for the start
    assert _error(out.mean(1), mean, std) < 0.25 * _error(start, mean, std)
    assert _error(out[:, 0], mean, std) < 0.3 * _error(start, mean, std)
    # the fit to the observed entries stays at the noise level (sigma = 0.1), not far beyond it
    rms = float(op.residual(y, out[:, 0]).square().sum() / op.mask.sum() / y.shape[0]) ** 0.5
    assert rms < 0.2


def test_tweedie_is_the_exact_posterior_mean(gaussian) -> None:
    # prior N(mu, Sigma), y = x + sigma_y n  =>  E[x | y] = mu + Sigma (Sigma + sigma_y^2 I)^{-1} (y - mu)
    g = torch.Generator().manual_seed(3)
    x = gaussian.sample_data(5, generator=g)
    op = Denoising(V, 0.2)
    y = op(x, generator=g)
    cov, mu = gaussian.cov, gaussian.mean.flatten()
    exact = mu + (y.flatten(1) - mu) @ torch.linalg.solve(cov + 0.04 * torch.eye(V, dtype=cov.dtype), cov)
    tweedie = TweedieDenoiser(gaussian)
    out = tweedie.sample(y, op, 2)
    torch.testing.assert_close(out[:, 0, 0], exact, atol=1e-8, rtol=0)
    torch.testing.assert_close(out[:, 0], out[:, 1])
    assert tweedie.nfe == 1


def test_harmonic_reproduces_a_linear_function() -> None:
    grid = ImageGrid(7, 8)
    xy = grid.positions[:, :2]
    f = (0.3 + 0.05 * xy[:, 0] - 0.02 * xy[:, 1]).reshape(1, 1, -1)
    rows, cols = torch.div(torch.arange(56), 8, rounding_mode="floor"), torch.arange(56) % 8
    boundary = (rows == 0) | (rows == 6) | (cols == 0) | (cols == 7)
    interior_kept = random_mask(56, 0.5, 1, generator=torch.Generator().manual_seed(0))[0]
    mask = boundary | interior_kept
    assert int((~mask).sum()) > 10
    out = HarmonicInterpolation(grid).sample(f * mask, Inpainting(mask, 0.0))
    torch.testing.assert_close(out[:, 0], f, atol=1e-8, rtol=0)


def test_harmonic_tikhonov_keeps_constants() -> None:
    grid = ImageGrid(4, 5)
    mask = random_mask(20, 0.5, 2, generator=torch.Generator().manual_seed(0))
    y = torch.full((2, 1, 20), 0.7, dtype=torch.float64) * mask[:, None]
    out = HarmonicInterpolation(grid, smoothing=0.3).sample(y, Inpainting(mask, 0.1), 2)
    torch.testing.assert_close(out, torch.full_like(out, 0.7), atol=1e-10, rtol=0)


# -- shared pieces -----------------------------------------------------------------------------------------


def test_reverse_grid() -> None:
    sde = VPSDE()
    t, abar = reverse_grid(sde, 1000)
    torch.testing.assert_close(abar, sde.discrete_alphas_cumprod(1000))
    torch.testing.assert_close(sde.alpha(t) ** 2, abar)
    t, abar = reverse_grid(sde, 7)
    full = sde.discrete_alphas_cumprod(1000)
    assert abar[0] == full[0] and abar[-1] == full[-1] and bool((t.diff() > 0).all())
    assert bool(torch.isin(abar, full).all())
    t, abar = reverse_grid(sde, 4, "uniform")
    torch.testing.assert_close(t, torch.tensor([0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="time_grid"):
        reverse_grid(sde, 4, "cosine")  # type: ignore[arg-type]


def test_nfe_counter_and_timer(gaussian) -> None:
    counter = NFECounter(gaussian)
    x = torch.zeros(6, 1, V, dtype=torch.float64)
    t = torch.full((6,), 0.5, dtype=torch.float64)
    counter.denoise(x, t)
    counter.eps(x, t)
    counter.score(x[:3], t[:3])  # half the batch: half an evaluation per sample
    assert counter.evaluations == 15 and counter.per_sample(6) == 3
    torch.testing.assert_close(counter.eps(x, t), gaussian.eps(x, t))
    with timed(x.device) as watch:
        sum(range(100))
    assert watch.seconds > 0


# -- the protocol contract, over every sampler ---------------------------------------------------------

def _tiny_diffusion_prior() -> DiffusionPrior:
    torch.manual_seed(0)
    layout = VertexLayout(V, perm=torch.randperm(V), multiple=8)  # 12 vertices padded to 16
    net = UNet1d(1, 1, base_channels=8, channel_mults=(1, 2, 2, 2), num_res_blocks=1, attention=False)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.1)
    return DiffusionPrior(net, layout, channels=1)


def _flat_gaussian() -> GaussianPrior:
    return GaussianPrior(torch.full((1, V), 0.5, dtype=torch.float64), 0.05 * torch.eye(V, dtype=torch.float64))


PRIORS: dict[str, Callable[[], ScorePrior]] = {"gaussian": _flat_gaussian, "diffusion": _tiny_diffusion_prior}
SAMPLERS: dict[str, Callable[[ScorePrior], PosteriorSampler]] = {
    "dps": lambda p: DPS(p, steps=6),
    "dps-squared_normalized": lambda p: DPS(p, steps=6, step_convention="squared_normalized", time_grid="uniform"),
    "dps-likelihood": lambda p: DPS(p, steps=6, step_convention="likelihood"),
    "mcg": lambda p: MCG(p, steps=6),
    "reddiff": lambda p: REDDiff(p, steps=6),
    "harmonic": lambda p: HarmonicInterpolation(ImageGrid(3, 4)),
    "harmonic-tikhonov": lambda p: HarmonicInterpolation(ImageGrid(3, 4), smoothing=0.1),
    "tweedie": lambda p: TweedieDenoiser(p),
}
NFE = {"dps": 6, "dps-squared_normalized": 6, "dps-likelihood": 6, "mcg": 6, "reddiff": 6, "harmonic": 0,
       "harmonic-tikhonov": 0, "tweedie": 1}
STOCHASTIC = {"dps", "dps-squared_normalized", "dps-likelihood", "mcg", "reddiff"}


@pytest.mark.parametrize("prior_kind", list(PRIORS))
@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sampler_contract(name: str, prior_kind: str, dtype: torch.dtype, device: torch.device) -> None:
    prior = PRIORS[prior_kind]().to(device=device, dtype=dtype).train()
    sampler = SAMPLERS[name](prior)
    assert isinstance(sampler, PosteriorSampler)
    if name == "tweedie":
        op: Operator = Denoising(V, 0.1)
    else:
        op = Inpainting(random_mask(V, 0.3, 2, generator=torch.Generator().manual_seed(0)), 0.1).to(device)
    y = op(torch.rand(2, 1, V, device=device, dtype=dtype), generator=torch.Generator(device).manual_seed(0))
    y_before = y.clone()
    run = lambda seed: sampler.sample(y, op, 3, generator=torch.Generator(device).manual_seed(seed))  # noqa: E731
    a = run(0)
    assert a.shape == (2, 3, 1, V) and a.dtype == dtype and a.device.type == device.type
    assert torch.isfinite(a).all()
    assert sampler.nfe == NFE[name]
    assert sampler.last_seconds > 0 and sampler.seconds_per_sample == pytest.approx(sampler.last_seconds / 6)
    assert torch.equal(a, run(0))
    assert (not torch.equal(a, run(1))) == (name in STOCHASTIC)
    assert torch.equal(y, y_before) and prior.training  # inputs untouched, prior mode restored
    if name in STOCHASTIC:  # the n samples of one measurement differ
        assert not torch.equal(a[:, 0], a[:, 1])
    if prior_kind == "diffusion":  # the padded sequence positions of the network never leak out
        seq = prior.layout.to_sequence(a[:, 0])
        assert seq.shape[-1] == 16 and bool((seq[..., ~prior.layout.valid] == 0).all())


class _Square(Operator):
    """A non-linear toy operator: ``A(x) = x^2``."""

    def A(self, x: Tensor) -> Tensor:  # noqa: N802
        return x.square()


@pytest.mark.parametrize(
    ("make", "wrong"),
    [
        (lambda p: MCG(p, steps=4), Denoising(V, 0.1)),
        (lambda p: TweedieDenoiser(p), Inpainting(torch.ones(V, dtype=torch.bool), 0.1)),
        (lambda p: TweedieDenoiser(p), Denoising(V, 0.0)),
        (lambda p: HarmonicInterpolation(ImageGrid(3, 4)), _Square(V, 0.1)),
        (lambda p: REDDiff(p, steps=4), _Square(V, 0.1)),
        (lambda p: DPS(p, steps=4, step_convention="likelihood"), Inpainting(torch.ones(V, dtype=torch.bool), 0.0)),
    ],
    ids=["mcg-denoising", "tweedie-inpainting", "tweedie-noiseless", "harmonic-nonlinear", "reddiff-nonlinear",
         "dps-likelihood-noiseless"],
)
def test_wrong_operator_is_refused(gaussian, make, wrong: Operator) -> None:
    with pytest.raises(ValueError, match="operator"):
        make(gaussian).sample(torch.zeros(1, 1, V, dtype=torch.float64), wrong)


def test_dps_on_a_nonlinear_operator(gaussian) -> None:
    y = torch.full((2, 1, V), 0.3, dtype=torch.float64)
    out = DPS(gaussian, steps=8).sample(y, _Square(V, 0.1), 2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 2, 1, V) and torch.isfinite(out).all()


def test_bad_configuration_is_refused(gaussian) -> None:
    op = Inpainting(torch.ones(V, dtype=torch.bool), 0.1)
    y = torch.zeros(1, 1, V, dtype=torch.float64)
    with pytest.raises(ValueError, match="step_convention"):
        DPS(gaussian, step_convention="other")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        DPS(gaussian, steps=1)
    with pytest.raises(ValueError, match="time_grid"):
        MCG(gaussian, time_grid="cosine")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="zeta"):
        DPS(gaussian, zeta=-1.0)
    with pytest.raises(ValueError, match="init"):
        REDDiff(gaussian, init="zeros")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lr"):
        REDDiff(gaussian, lr=0.0)
    with pytest.raises(ValueError, match="smoothing"):
        HarmonicInterpolation(ImageGrid(3, 4), smoothing=-1.0)
    with pytest.raises(ValueError, match="n must"):
        DPS(gaussian, steps=4).sample(y, op, 0)
    with pytest.raises(ValueError, match="y contains"):
        DPS(gaussian, steps=4).sample(y * float("nan"), op)
