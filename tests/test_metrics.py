"""Metrics against independent numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from manifold_ps.metrics import (
    bootstrap_interval,
    credible_interval_coverage,
    mse,
    paired_difference,
    paired_ratio,
    posterior_std,
    project,
    psnr,
    ssim,
    summarize,
)


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


# -- projection and bootstrap intervals -----------------------------------------------------------


def test_project_clamps_onto_the_range() -> None:
    x = torch.tensor([[-0.5, 0.0, 0.3, 1.0, 1.2]], dtype=torch.float64)
    torch.testing.assert_close(project(x, (0.0, 1.0)), torch.tensor([[0.0, 0.0, 0.3, 1.0, 1.0]], dtype=torch.float64))
    assert project(x, None) is x
    for bad, match in [((1.0, 0.0), "low < high"), ((0.0, math.nan), "low < high"), ((0.0,), "pair")]:
        with pytest.raises(ValueError, match=match):
            project(x, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("method", ["BCa", "percentile"])
@pytest.mark.parametrize(("level", "z"), [(0.95, 1.959964), (0.9, 1.644854)])
def test_bootstrap_interval_matches_normal_theory(method: str, level: float, z: float) -> None:
    # the mean of n normal draws: interval mean +- z s / sqrt(n). Monte-Carlo error of an end from
    # 9999 resamples ~0.03 standard errors, the sample's own skewness a little more: allow 0.15.
    x = np.random.default_rng(0).normal(3.0, 2.0, 2000)
    se = x.std(ddof=1) / math.sqrt(x.size)
    mean, low, high = bootstrap_interval(x, level=level, method=method, seed=1)
    assert mean == pytest.approx(x.mean(), rel=1e-12)
    assert low == pytest.approx(mean - z * se, abs=0.15 * se)
    assert high == pytest.approx(mean + z * se, abs=0.15 * se)


def test_bootstrap_interval_is_deterministic_and_accepts_torch() -> None:
    x = torch.randn(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    first = bootstrap_interval(x, seed=3, n_resamples=999)
    assert first == bootstrap_interval(x.numpy(), seed=3, n_resamples=999)
    assert first == bootstrap_interval(x, seed=np.random.default_rng(3), n_resamples=999)
    assert first != bootstrap_interval(x, seed=4, n_resamples=999)


@pytest.mark.parametrize("groups", [None, np.array([0, 0, 0, 1, 2, 2])], ids=["iid", "groups"])
def test_identical_values_give_zero_width(groups: np.ndarray | None) -> None:
    assert bootstrap_interval(np.full(6, 27.5), groups=groups) == (27.5, 27.5, 27.5)


def test_identical_group_means_give_zero_width() -> None:
    # values differ inside the groups, but every group (of any size) has mean 2: so has every resample
    values = np.array([1.0, 3.0, 2.0, 0.0, 4.0, 2.0])
    assert bootstrap_interval(values, groups=np.array([0, 0, 1, 2, 2, 2])) == (2.0, 2.0, 2.0)


@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_cluster_bootstrap_of_duplicates_is_the_bootstrap_of_the_distinct_values(method: str) -> None:
    distinct = np.random.default_rng(2).normal(25.0, 2.0, 40)
    k = 4
    duplicated = np.repeat(distinct, k)
    groups = np.repeat(np.arange(distinct.size), k)
    reference = bootstrap_interval(distinct, method=method, seed=5)
    clustered = bootstrap_interval(duplicated, groups=groups, method=method, seed=5)
    np.testing.assert_allclose(clustered, reference, rtol=1e-9)
    # resampling the copies one by one treats them as independent: about sqrt(k) = 2 times too narrow
    _, low, high = bootstrap_interval(duplicated, method=method, seed=5)
    assert high - low < 0.7 * (reference[2] - reference[1])


def test_cluster_bootstrap_of_unequal_groups_is_a_ratio_of_sums() -> None:
    # delta method for the ratio R = sum(s_g) / sum(n_g): se = sqrt(sum (s_g - R n_g)^2) / sum(n_g)
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 7, 400)
    groups = np.repeat(np.arange(sizes.size), sizes)
    effect = rng.normal(0.0, 1.0, sizes.size) + 0.5 * sizes  # group means depend on group size
    values = effect[groups] + rng.normal(0.0, 0.5, groups.size)
    perm = rng.permutation(values.size)
    values, groups = values[perm], groups[perm]  # labels need not be sorted or contiguous
    mean, low, high = bootstrap_interval(values, groups=groups * 7 + 3, seed=0)
    sums, counts = np.bincount(groups, weights=values), np.bincount(groups)
    ratio = sums.sum() / counts.sum()
    se = math.sqrt(((sums - ratio * counts) ** 2).sum()) / counts.sum()
    assert mean == pytest.approx(values.mean(), rel=1e-12)
    assert abs(mean - (sums / counts).mean()) > 5 * se  # the mean of group means would be another number
    assert (high - low) / 2 == pytest.approx(1.959964 * se, rel=0.1)
    assert low < mean < high


def test_paired_difference() -> None:
    rng = np.random.default_rng(4)
    a = rng.normal(25.0, 3.0, 64)
    c = 1.25
    mean, low, high = paired_difference(a + c, a)
    assert mean == pytest.approx(c, abs=1e-12) and low == pytest.approx(c, abs=1e-12)
    assert high == pytest.approx(c, abs=1e-12)
    # shared difficulty cancels: the paired interval is far narrower than either method's own
    b = a + c + rng.normal(0.0, 0.3, a.size)
    groups = np.arange(a.size) // 2
    diff = paired_difference(b, a, groups=groups, seed=2)
    assert diff == bootstrap_interval(b - a, groups=groups, seed=2)
    own = bootstrap_interval(b, groups=groups, seed=2)
    assert diff[2] - diff[1] < 0.2 * (own[2] - own[1])
    assert diff[1] < c < diff[2]
    with pytest.raises(ValueError, match="same measurements"):
        paired_difference(a, a[:-1])



def test_paired_ratio_is_a_ratio_of_means_with_a_delta_method_interval() -> None:
    # errors of two denoisers on the same signals: b varies a lot from signal to signal, a is 0.8 b
    # plus a small floor (so its per-signal ratio is large where b is small). Delta method for
    # R = sum(a) / sum(b): se = sqrt(sum (a_i - R b_i)^2) / sum(b)
    rng = np.random.default_rng(5)
    b = rng.lognormal(-5.0, 1.0, 400)
    a = 0.8 * b + 1e-3 * rng.lognormal(0.0, 0.5, b.size)
    ratio, low, high = paired_ratio(a, b, seed=1)
    assert ratio == pytest.approx(a.sum() / b.sum(), rel=1e-12)
    assert abs(ratio - (a / b).mean()) > 0.05  # the mean of per-signal ratios is another number
    se = math.sqrt(((a - ratio * b) ** 2).sum()) / b.sum()
    assert (high - low) / 2 == pytest.approx(1.959964 * se, rel=0.15)
    assert low < ratio < high
    # pairing: the interval is far narrower than that of either mean
    own = bootstrap_interval(a, seed=1)
    assert (high - low) * b.mean() < 0.3 * (own[2] - own[1])
    # groups of duplicated pairs give the interval of the distinct pairs
    k = 3
    dup = paired_ratio(np.repeat(a, k), np.repeat(b, k), groups=np.repeat(np.arange(a.size), k), seed=1)
    np.testing.assert_allclose(dup, (ratio, low, high), rtol=1e-9)
    assert paired_ratio(torch.as_tensor(a), torch.as_tensor(b), seed=1) == (ratio, low, high)


def test_paired_ratio_refuses_bad_input() -> None:
    b = np.array([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="same measurements"):
        paired_ratio(b, b[:-1])
    with pytest.raises(ValueError, match="b must be positive"):
        paired_ratio(b, np.array([0.1, 0.0, 0.3]))
    with pytest.raises(ValueError, match="level"):
        paired_ratio(b, b + 1.0, level=0.0)

@pytest.mark.parametrize(
    ("values", "kwargs", "match"),
    [
        (np.array([1.0, math.nan, 2.0]), {}, "NaN or infinite"),
        (np.array([1.0, math.inf, 2.0]), {}, "NaN or infinite"),
        (np.array([1.0]), {}, "at least 2"),
        (np.ones((2, 3)), {}, r"shape \(N,\)"),
        (np.arange(4.0), {"groups": np.array([0, 0, 1])}, "groups must have shape"),
        (np.arange(4.0), {"groups": np.array([0.0, 0.0, 1.0, 1.0])}, "integer labels"),
        (np.arange(4.0), {"groups": np.zeros(4, dtype=int)}, "2 distinct"),
        (np.arange(4.0), {"level": 1.0}, "level"),
        (np.arange(4.0), {"n_resamples": 0}, "n_resamples"),
        (np.arange(4.0), {"method": "basic"}, "method"),
    ],
    ids=["nan", "inf", "one", "2d", "groups-shape", "groups-float", "one-group", "level", "resamples", "method"],
)
def test_bootstrap_interval_refuses_bad_input(values: np.ndarray, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bootstrap_interval(values, **kwargs)  # type: ignore[arg-type]


def test_coverage_over_valid_vertices_by_hand() -> None:
    # 5 samples 0..4 of every entry; level 0.5 -> interval [q25, q75] = [1, 3] (linear quantiles)
    samples = torch.arange(5, dtype=torch.float64)[None, :, None, None].expand(2, 5, 1, 4)
    truth = torch.tensor([[[0.0, 2.0, 3.0, 5.0]], [[1.0, 4.0, 2.5, 2.0]]], dtype=torch.float64)
    # inside: sample 0 [F, T, T, F], sample 1 [T, F, T, T]
    assert credible_interval_coverage(samples, truth, 0.5) == pytest.approx(5 / 8)
    missing = torch.tensor([False, True, True, False])
    assert credible_interval_coverage(samples, truth, 0.5, valid=missing) == pytest.approx(3 / 4)
    per_sample = torch.tensor([[True, False, False, True], [True, True, True, False]])
    assert credible_interval_coverage(samples, truth, 0.5, valid=per_sample) == pytest.approx(2 / 5)
    with pytest.raises(ValueError, match="no valid entry"):
        credible_interval_coverage(samples, truth, 0.5, valid=torch.zeros(4, dtype=torch.bool))
