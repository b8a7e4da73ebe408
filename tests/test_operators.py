"""Forward models: adjointness, noise, reproducibility, serialisation, validation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from scipy import ndimage

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
    # each row misses exactly round(f * V) vertices for the fraction f it drew (the first draw)
    drawn = 0.3 + 0.3 * torch.rand(64, generator=torch.Generator().manual_seed(7))
    again = blind.draw(64, generator=torch.Generator().manual_seed(7))
    assert torch.equal((~again.mask).sum(-1), (drawn * 200).round().long())
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


def test_downsample_pseudo_inverse(generator: torch.Generator) -> None:
    op = Downsample2x(H, W).double()
    y = torch.randn(2, 1, V // 4, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(op.A(op.pseudo_inverse(y)), y)  # A A^+ = I


def test_bad_signals_every_operator(op: LinearOperator) -> None:
    with pytest.raises(ValueError, match="vertices"):
        op(torch.ones(3, 1, V + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="vertices"):
        op.A(torch.ones(3, 1, V + 1, dtype=torch.float64))
    x = torch.zeros(3, 1, V, dtype=torch.float64)
    x[1, 0, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        op(x)


@pytest.mark.parametrize(
    "build",
    [
        lambda s: Inpainting(torch.ones(V, dtype=torch.bool), s),
        lambda s: Denoising(V, s),
        lambda s: HeatBlur(torch.zeros(2), torch.zeros(V, 2), torch.ones(V), 1.0, s),
        lambda s: ImageBlur(H, W, sigma=s),
        lambda s: Downsample2x(H, W, s),
        lambda s: RandomInpainting(V, (0.1, 0.2), s),
    ],
)
@pytest.mark.parametrize("sigma", [-0.1, float("nan"), float("inf")])
def test_bad_sigma(build, sigma: float) -> None:
    with pytest.raises(ValueError, match="sigma"):
        build(sigma)


def test_inpainting_mask_must_match_the_signal() -> None:
    op = Inpainting(torch.ones(V - 1, dtype=torch.bool), 0.1)
    with pytest.raises(ValueError, match="vertices"):
        op.A(torch.ones(1, 1, V))
    with pytest.raises(ValueError, match="boolean"):
        Inpainting(torch.ones(V, dtype=torch.uint8), 0.1)


def test_inpainting_measured_and_select_batched(generator: torch.Generator) -> None:
    mask = random_mask(V, 0.4, 5, generator=generator)
    op = Inpainting(mask, 0.1)
    x = torch.rand(5, 2, V, generator=generator)
    assert torch.equal(op.measured(x).expand_as(x), mask[:, None].expand_as(x))
    y = op(x, generator=generator)
    assert bool((y[~mask[:, None].expand_as(y)] == 0).all())
    idx = torch.tensor([4, 0])
    sub = op.select(idx)
    assert torch.equal(sub.mask, mask[idx]) and sub.sigma == op.sigma
    torch.testing.assert_close(sub.A(x[idx]), op.A(x)[idx])
    shared = Inpainting(mask[0], 0.1)
    assert shared.select(idx) is shared  # shared parameters are kept


def test_heat_blur_is_mass_self_adjoint_and_serialisable(generator: torch.Generator) -> None:
    op = _operators()["heat-blur"].double()
    x, y = (torch.randn(2, 1, V, generator=generator, dtype=torch.float64) for _ in range(2))
    m = op.mass
    torch.testing.assert_close((op.A(x) * y * m).sum(), (x * op.A(y) * m).sum())
    # the heat kernel contracts every mode except the constant one
    assert float((op.A(x) * op.A(x) * m).sum()) < float((x * x * m).sum())
    buffer = io.BytesIO()
    torch.save(op.config(), buffer)
    buffer.seek(0)
    rebuilt = operator_from_config(torch.load(buffer, weights_only=True))  # no geometry needed
    torch.testing.assert_close(rebuilt.A(x), op.A(x))


def test_image_blur_matches_scipy(generator: torch.Generator) -> None:
    op = ImageBlur(H, W, kernel_sigma=1.2, kernel_size=5).double()
    x = torch.rand(2, 1, V, generator=generator, dtype=torch.float64)
    want = np.stack([ndimage.correlate(img.reshape(H, W), op.kernel.numpy(), mode="constant").ravel()
                     for img in x[:, 0].numpy()])
    np.testing.assert_allclose(op.A(x)[:, 0].numpy(), want, atol=1e-12)
    torch.testing.assert_close(op.kernel.sum(), torch.tensor(1.0, dtype=torch.float64))


def test_downsample_averages_blocks_and_condition_preserves_values(generator: torch.Generator) -> None:
    op = Downsample2x(H, W).double()
    x = torch.rand(2, 3, V, generator=generator, dtype=torch.float64)
    want = x.numpy().reshape(2, 3, H // 2, 2, W // 2, 2).mean(axis=(3, 5)).reshape(2, 3, -1)
    np.testing.assert_allclose(op.A(x).numpy(), want, atol=1e-12)
    y = op.A(x)
    c = op.condition(y)
    assert c.shape == (2, 3, V)
    torch.testing.assert_close(op.A(c), y)  # each pixel carries the value of its block
    with pytest.raises(ValueError, match="entries"):
        op.condition(torch.ones(2, 3, V))


def test_operators_move_with_their_buffers(op: LinearOperator, device: torch.device) -> None:
    moved = op.to(device)
    x = torch.rand(3, 1, V, dtype=torch.float64, device=device)
    assert moved.A(x).device.type == device.type
    assert moved.A_adjoint(moved.A(x)).device.type == device.type
