"""``clip_denoised``: one contract over the ancestral prior sampler, DPS and MCG.

The samplers are instrumented from outside: a prior that records every raw denoiser output, the
ancestral step function replaced by one that records the Tweedie estimate it receives, and (for
DPS / MCG) the guidance-gradient hook ``_restrict`` recording the gradient before restriction.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import manifold_ps.baselines.dps as dps_module
import manifold_ps.priors.sampling as sampling_module
from manifold_ps.baselines import DPS, MCG
from manifold_ps.operators import Inpainting
from manifold_ps.priors import GaussianPrior, ddpm_sample

V = 10
STEPS = 20
RANGE = (0.35, 0.65)
INF = math.inf


class _RecordingGaussian(GaussianPrior):
    """A Gaussian prior whose ``denoise`` records every (raw, unclipped) output."""

    def __init__(self, mean: Tensor, cov: Tensor) -> None:
        super().__init__(mean, cov)
        self.raw: list[Tensor] = []

    def denoise(self, x: Tensor, t: Tensor) -> Tensor:
        out = super().denoise(x, t)
        self.raw.append(out.detach().clone())
        return out


def _prior() -> _RecordingGaussian:
    """Independent vertices (diagonal covariance): the Tweedie estimate of a vertex depends on it alone.

    Data ~ N(0.5, 0.02..0.08): most draws leave ``RANGE``, so clipping is exercised.
    """
    var = torch.linspace(0.02, 0.08, V, dtype=torch.float64)
    return _RecordingGaussian(torch.full((1, V), 0.5, dtype=torch.float64), torch.diag(var))


def _measurement() -> tuple[Tensor, Inpainting]:
    mask = torch.arange(V) % 3 != 0
    op = Inpainting(mask, 0.05)
    y = op(torch.linspace(0.0, 1.0, V, dtype=torch.float64).expand(2, 1, V), generator=torch.Generator().manual_seed(1))
    return y, op


def _run(name: str, prior: GaussianPrior, **clip: object) -> Tensor:
    """Draw with sampler ``name`` from a fixed seed; ``clip`` holds ``clip_denoised`` / ``data_range``."""
    g = torch.Generator().manual_seed(0)
    if name == "ddpm":
        return ddpm_sample(prior, 3, steps=STEPS, generator=g, **clip)  # type: ignore[arg-type]
    y, op = _measurement()
    return MAKERS[name](prior, **clip).sample(y.to(prior.mean.dtype), op, 3, generator=g)


MAKERS: dict[str, Callable[..., DPS]] = {
    "dps": lambda p, **kw: DPS(p, steps=STEPS, **kw),
    "dps-likelihood": lambda p, **kw: DPS(p, steps=STEPS, step_convention="likelihood", time_grid="uniform", **kw),
    "mcg": lambda p, **kw: MCG(p, steps=STEPS, **kw),
}
NAMES = ["ddpm", *MAKERS]


@pytest.fixture
def recorded_steps(monkeypatch: pytest.MonkeyPatch) -> list[Tensor]:
    """The Tweedie estimates every ancestral step of either sampler receives, in order."""
    seen: list[Tensor] = []

    def recording(step: Callable[..., Tensor]) -> Callable[..., Tensor]:
        def wrapped(x: Tensor, x0: Tensor, *args: object) -> Tensor:
            seen.append(x0.detach().clone())
            return step(x, x0, *args)
        return wrapped

    monkeypatch.setattr(sampling_module, "_ancestral_step", recording(sampling_module._ancestral_step))
    monkeypatch.setattr(dps_module, "posterior_step", recording(dps_module.posterior_step))
    return seen


@pytest.mark.parametrize("name", NAMES)
def test_every_estimate_used_in_an_update_lies_in_the_range(name: str, recorded_steps: list[Tensor]) -> None:
    prior = _prior()
    out = _run(name, prior, clip_denoised=True, data_range=RANGE)
    lo, hi = RANGE
    assert len(recorded_steps) == STEPS - 1 and len(prior.raw) == STEPS
    for used, raw in zip(recorded_steps, prior.raw, strict=False):
        # exactly the clamped network output: nothing else changed
        assert torch.equal(used, raw.clamp(lo, hi))
    assert bool(((out >= lo) & (out <= hi)).all())
    # the check can fail: raw estimates that enter an update, and the last (returned) one, leave the range
    outside = [bool(((r < lo) | (r > hi)).any()) for r in prior.raw]
    assert any(outside[:-1]) and outside[-1]


@pytest.mark.parametrize("name", NAMES)
def test_without_clipping_estimates_leave_the_range(name: str, recorded_steps: list[Tensor]) -> None:
    """The default path passes the raw estimates on (so the test above is not vacuous)."""
    prior = _prior()
    _run(name, prior)
    lo, hi = RANGE
    for used, raw in zip(recorded_steps, prior.raw, strict=False):
        assert torch.equal(used, raw)
    assert any(bool(((u < lo) | (u > hi)).any()) for u in recorded_steps)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_unbounded_range_is_bit_identical(name: str, dtype: torch.dtype) -> None:
    prior = _prior().to(dtype)
    plain = _run(name, prior)
    unbounded = _run(name, prior, clip_denoised=True, data_range=(-INF, INF))
    off_with_range = _run(name, prior, clip_denoised=False, data_range=RANGE)
    assert torch.equal(plain, unbounded)
    assert torch.equal(plain, off_with_range)
    assert not torch.equal(plain, _run(name, prior, clip_denoised=True, data_range=RANGE))


@pytest.mark.parametrize("cls", [DPS, MCG])
def test_guidance_gradient_goes_through_the_clamped_estimate(cls: type[DPS]) -> None:
    """As in the DPS reference code, the residual uses the clamped estimate: with independent
    vertices the guidance gradient vanishes wherever the raw estimate was clamped."""
    grads: list[Tensor] = []

    class Recording(cls):  # type: ignore[valid-type, misc]
        def _restrict(self, grad: Tensor, op: object) -> Tensor:
            grads.append(grad.detach().clone())
            return super()._restrict(grad, op)  # type: ignore[arg-type]

    prior = _prior()
    y, op = _measurement()
    Recording(prior, steps=STEPS, clip_denoised=True, data_range=RANGE).sample(
        y, op, 3, generator=torch.Generator().manual_seed(0))
    lo, hi = RANGE
    clamped_any, free_nonzero = False, False
    for grad, raw in zip(grads, prior.raw, strict=False):
        clamped = (raw < lo) | (raw > hi)
        scale = float(grad.abs().max())
        assert float(torch.where(clamped, grad, 0.0).abs().max()) <= 1e-12 * scale
        clamped_any |= bool(clamped.any())
        free_nonzero |= bool((grad[~clamped & op.measured(raw)].abs() > 1e-6 * scale).any())
    assert clamped_any and free_nonzero


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    ("clip", "match"),
    [
        ({"clip_denoised": True}, "data_range"),
        ({"clip_denoised": True, "data_range": (1.0, 0.0)}, "low < high"),
        ({"clip_denoised": True, "data_range": (0.0, math.nan)}, "low < high"),
        ({"clip_denoised": True, "data_range": (0.0, 1.0, 2.0)}, "pair"),
        ({"clip_denoised": False, "data_range": "01x"}, "pair"),
    ],
    ids=["missing", "reversed", "nan", "triple", "not-numbers"],
)
def test_bad_clip_configuration_is_refused(name: str, clip: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _run(name, _prior(), **clip)


def test_score_prior_sample_passes_clipping_through() -> None:
    prior = _prior()
    x = prior.sample(4, steps=STEPS, clip_denoised=True, data_range=RANGE, generator=torch.Generator().manual_seed(0))
    assert bool(((x >= RANGE[0]) & (x <= RANGE[1])).all())
    with pytest.raises(ValueError, match="data_range"):
        prior.sample(4, steps=STEPS, clip_denoised=True)


@pytest.mark.parametrize("convention", ["norm", "squared_normalized", "likelihood"])
def test_measurement_at_the_bound_gives_a_finite_guidance(convention: str) -> None:
    """Clamping makes an exactly zero residual reachable (every observed estimate clamped onto
    ``y = high``); its guidance gradient must be zero, not NaN."""
    prior = GaussianPrior(torch.zeros(1, 4, dtype=torch.float64), torch.eye(4, dtype=torch.float64))
    op = Inpainting(torch.tensor([True, True, False, True]), sigma=0.1)
    y = torch.ones(2, 1, 4, dtype=torch.float64)
    grads: list[Tensor] = []

    class Recording(DPS):
        def _restrict(self, grad: Tensor, op: object) -> Tensor:
            grads.append(grad.detach().clone())
            return grad

    out = Recording(prior, steps=20, step_convention=convention, clip_denoised=True, data_range=(0.0, 1.0)).sample(
        y, op, 8, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all() and all(bool(torch.isfinite(g).all()) for g in grads)
    # the case does occur: some sample's guidance gradient is exactly zero at some step
    assert any(bool((g.flatten(1).abs().sum(-1) == 0).any()) for g in grads)
