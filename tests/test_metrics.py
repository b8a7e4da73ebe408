"""Metrics against independent numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from manifold_ps.metrics import credible_interval_coverage, mse, posterior_std, psnr, ssim, summarize


@pytest.mark.parametrize("e", [0.01, 0.1, 0.3])
def test_psnr_of_constant_error(e: float) -> None:
    ref = torch.rand(3, 2, 17, dtype=torch.float64)
    torch.testing.assert_close(psnr(ref + e, ref), torch.full((3,), 10 * math.log10(1 / e**2), dtype=torch.float64))


def test_valid_mask_excludes_vertices() -> None:
    ref = torch.zeros(2, 1, 4, dtype=torch.float64)
    x = torch.tensor([[[0.1, 0.1, 5.0, 5.0]], [[0.1, 5.0, 0.1, 5.0]]], dtype=torch.float64)
    shared = torch.tensor([True, True, False, False])
    torch.testing.assert_close(mse(x[:1], ref[:1], shared), torch.tensor([0.01], dtype=torch.float64))
    per = torch.tensor([[True, True, False, False], [True, False, True, False]])
    torch.testing.assert_close(mse(x, ref, per), torch.full((2,), 0.01, dtype=torch.float64))
    with pytest.raises(ValueError, match="valid"):
        mse(x, ref, torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="no valid entry"):
        mse(x, ref, torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(x, ref[:1])


def _ssim_numpy(a: np.ndarray, b: np.ndarray, size: int = 11, sigma: float = 1.5) -> float:
    """Direct per-window SSIM (loops over window positions), the textbook definition."""
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-0.5 * (r / sigma) ** 2)
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for i in range(a.shape[0] - size + 1):
        for j in range(a.shape[1] - size + 1):
            pa, pb = a[i:i + size, j:j + size], b[i:i + size, j:j + size]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * pa * pa).sum() - ma**2, (w * pb * pb).sum() - mb**2
            cov = (w * pa * pb).sum() - ma * mb
            vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_direct_definition_and_properties(generator: torch.Generator) -> None:
    a = torch.rand(1, 1, 16, 14, generator=generator, dtype=torch.float64)
    b = (a + 0.1 * torch.randn(a.shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
    got = float(ssim(a, b))
    assert got == pytest.approx(_ssim_numpy(a[0, 0].numpy(), b[0, 0].numpy()), abs=1e-6)
    assert float(ssim(a, a)) == pytest.approx(1.0)
    assert float(ssim(b, a)) == pytest.approx(got)
    noisier = (a + 0.3 * torch.randn(a.shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
    assert float(ssim(noisier, a)) < got < 1.0
    with pytest.raises(ValueError, match="H, W"):
        ssim(a[0], b[0])


def test_coverage_is_calibrated_for_the_true_posterior(generator: torch.Generator) -> None:
    # truth and samples from the same N(m, 1): each entry is inside the 90% interval w.p. ~0.9.
    # 20 * 200 entries -> binomial std sqrt(0.09 / 4000) = 0.0047; the empirical quantiles of 400
    # samples add a little spread: allow 0.03.
    mean = torch.randn(20, 1, 200, generator=generator, dtype=torch.float64)
    truth = mean + torch.randn(mean.shape, generator=generator, dtype=torch.float64)
    samples = mean[:, None] + torch.randn(20, 400, 1, 200, generator=generator, dtype=torch.float64)
    assert abs(credible_interval_coverage(samples, truth, 0.9) - 0.9) < 0.03
    # over-confident samples (std 0.3) cover far less
    assert credible_interval_coverage(mean[:, None] + 0.3 * (samples - mean[:, None]), truth, 0.9) < 0.5
    with pytest.raises(ValueError, match="level"):
        credible_interval_coverage(samples, truth, 1.5)


def test_posterior_std(generator: torch.Generator) -> None:
    s = 2.0 * torch.randn(3, 5000, 1, 4, generator=generator, dtype=torch.float64)
    assert torch.allclose(posterior_std(s), torch.full((3, 1, 4), 2.0, dtype=torch.float64), atol=0.1)
    with pytest.raises(ValueError, match="N >= 2"):
        posterior_std(s[:, :1])


def test_summarize_against_closed_forms() -> None:
    ref = torch.zeros(3, 1, 16, dtype=torch.float64)
    out = summarize(ref + 0.1, ref, image_shape=(4, 4))
    assert out["psnr"] == pytest.approx(20.0)
    assert out["mse"] == pytest.approx(0.01)
    # constant images: SSIM = C1 / (mu_x^2 + C1) with C1 = 0.01^2 (all variances vanish)
    assert out["ssim"] == pytest.approx(1e-4 / (0.01 + 1e-4))
    assert set(summarize(ref + 0.1, ref)) == {"psnr", "mse"}
    with pytest.raises(ValueError, match="image_shape"):
        summarize(ref, ref, image_shape=(3, 4))


def test_psnr_data_range_and_exact_estimate() -> None:
    ref = torch.rand(2, 1, 9, dtype=torch.float64)
    torch.testing.assert_close(psnr(ref + 0.1, ref, data_range=2.0),
                               torch.full((2,), 10 * math.log10(4 / 0.01), dtype=torch.float64))
    assert bool(torch.isinf(psnr(ref, ref)).all())
