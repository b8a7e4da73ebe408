"""Forward models: adjointness, noise, reproducibility, serialisation, validation."""

from __future__ import annotations

import pytest
import torch

from manifold_ps.geometry import ImageGrid
from manifold_ps.operators import (Denoising, Downsample2x, HeatBlur, ImageBlur, Inpainting, LinearOperator,
                                   RandomInpainting, operator_from_config, random_mask)

H, W = 6, 8
V = H * W


def _operators() -> dict[str, LinearOperator]:
    g = torch.Generator().manual_seed(3)
    return {
        "inpainting-shared": Inpainting(random_mask(V, 0.3, 1, generator=g)[0], 0.1),
        "inpainting-batched": Inpainting(random_mask(V, 0.5, 3, generator=g), 0.1),
        "denoising": Denoising(V, 0.1),
        "heat-blur": HeatBlur.from_geometry(ImageGrid(H, W), 0.5, k=12, sigma=0.05),
        "image-blur": ImageBlur(H, W, kernel_sigma=1.2, kernel_size=5, sigma=0.01),
        "downsample": Downsample2x(H, W, 0.01),
    }


OPS = list(_operators())


@pytest.fixture(params=OPS)
def op(request: pytest.FixtureRequest) -> LinearOperator:
    return _operators()[request.param].double()


def test_adjointness(op: LinearOperator, generator: torch.Generator) -> None:
    x = torch.randn(3, 2, V, generator=generator, dtype=torch.float64)
    ax = op.A(x)
    y = torch.randn(ax.shape, generator=generator, dtype=torch.float64)
    lhs = (ax * y).sum()
    rhs = (x * op.A_adjoint(y)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)


def test_noise_level_and_reproducibility(op: LinearOperator) -> None:
    x = torch.rand(3, 1, V, dtype=torch.float64)
    reps = torch.stack([op(x, generator=torch.Generator().manual_seed(i)) for i in range(400)])
    resid = (reps - op.A(x)) * op.measured(op.A(x)).to(x.dtype)
    count = op.measured(op.A(x)).expand_as(op.A(x)).sum() * 400
    std = (resid.square().sum() / count).sqrt()
    # ~400 * 3 * (>= 12) draws: the std estimate is within 5% (its relative error is ~1/sqrt(2n) < 1%)
    assert abs(float(std) / op.sigma - 1) < 0.05
    a = op(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, op(x, generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(a, op(x, generator=torch.Generator().manual_seed(2)))


def test_config_round_trip(op: LinearOperator, generator: torch.Generator) -> None:
    x = torch.randn(3, 1, V, generator=generator, dtype=torch.float64)
    rebuilt = operator_from_config(op.config()).double()
    assert type(rebuilt) is type(op)
    torch.testing.assert_close(rebuilt.A(x), op.A(x))
    assert rebuilt.sigma == op.sigma


def test_condition_is_vertex_shaped(op: LinearOperator, generator: torch.Generator) -> None:
    x = torch.randn(3, 1, V, generator=generator, dtype=torch.float64)
    c = op.condition(op(x, generator=generator))
    assert c.shape == (3, op.condition_channels(1), V)


def test_inpainting_semantics_and_select() -> None:
    mask = torch.tensor([[True, False, True], [False, True, True]])
    op = Inpainting(mask, 0.5)
    x = torch.ones(2, 1, 3)
    y = op(x, generator=torch.Generator().manual_seed(0))
    assert bool((y[~mask[:, None, :]] == 0).all())
    assert bool((op.residual(y, x)[~mask[:, None, :]] == 0).all())
    sub = op.select(torch.tensor([1]))
    assert torch.equal(sub.mask, mask[1:])
    ll = op.log_likelihood(y, x)
    torch.testing.assert_close(ll, -((y - x) * mask[:, None]).square().flatten(1).sum(-1) / (2 * 0.25))


def test_random_inpainting_fractions(generator: torch.Generator) -> None:
    blind = RandomInpainting(200, (0.3, 0.6), 0.05)
    op = blind.draw(64, generator=generator)
    frac = 1 - op.mask.float().mean(-1)
    assert bool((frac >= 0.3 - 1e-9).all()) and bool((frac <= 0.6 + 1e-9).all())
    assert float(frac.std()) > 0.05  # the fraction really varies per sample
    y = blind(torch.rand(5, 1, 200), generator=generator)
    assert y.shape == (5, 1, 200)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Inpainting(torch.ones(5), 0.1), "boolean"),
        (lambda: Inpainting(torch.ones(2, 2, 5, dtype=torch.bool), 0.1), "shape"),
        (lambda: Denoising(5, -1.0), "sigma"),
        (lambda: Downsample2x(5, 4), "even"),
        (lambda: ImageBlur(4, 4, kernel_size=4), "odd"),
        (lambda: RandomInpainting(10, (0.6, 0.3), 0.1), "missing_range"),
    ],
)
def test_bad_construction(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_signals() -> None:
    op = Inpainting(torch.ones(4, dtype=torch.bool), 0.1)
    with pytest.raises(ValueError, match="4"):
        op(torch.ones(1, 1, 5))
    with pytest.raises(ValueError, match="NaN"):
        op(torch.full((1, 1, 4), float("nan")))
    batched = Inpainting(torch.ones(3, 4, dtype=torch.bool), 0.1)
    with pytest.raises(ValueError, match="batch"):
        batched.A(torch.ones(2, 1, 4))
    with pytest.raises(ValueError, match="unknown operator"):
        operator_from_config({"type": "Nope"})
