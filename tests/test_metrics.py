"""Metrics against independent numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scipy import stats

from manifold_ps.metrics import (
    CALIBRATION_LEVELS,
    bootstrap_interval,
    calibration_curve,
    central_intervals,
    credible_interval_coverage,
    interval_coverage,
    mse,
    normal_intervals,
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


# -- calibration curves ----------------------------------------------------------------------------------
def _normal_grid(n: int) -> torch.Tensor:
    """The ``(i + 1/2) / n`` quantiles of N(0, 1), ``i < n``: a deterministic, exactly normal sample."""
    return torch.from_numpy(stats.norm.ppf((np.arange(n) + 0.5) / n))


def _grid_fraction_inside(n: int, half_width: float) -> float:
    """Fraction of the ``n`` grid quantiles of :func:`_normal_grid` inside ``[-half_width, half_width]``."""
    return float((np.abs(stats.norm.ppf((np.arange(n) + 0.5) / n)) <= half_width).mean())


@pytest.mark.parametrize("scale", [1.0, 0.5, 2.0])
def test_calibration_of_draws_from_a_known_gaussian(scale: float, generator: torch.Generator) -> None:
    # truth ~ N(m, 1) and draws ~ N(m, scale^2) at every entry: the draws' central interval of
    # level l is m -/+ scale z_l, so the truth falls inside w.p. 2 Phi(scale z_l) - 1 (= l when
    # scale = 1). 16 * 250 entries: binomial std <= 0.008; 800 draws add quantile error: allow 0.03.
    mean = 3.0 * torch.randn(16, 1, 250, generator=generator, dtype=torch.float64)
    truth = mean + torch.randn(mean.shape, generator=generator, dtype=torch.float64)
    draws = mean[:, None] + scale * torch.randn(16, 800, 1, 250, generator=generator, dtype=torch.float64)
    levels = np.array(CALIBRATION_LEVELS)
    expected = 2 * stats.norm.cdf(scale * stats.norm.ppf((1 + levels) / 2)) - 1
    got = calibration_curve(draws, truth)
    assert got.shape == (4,) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, atol=0.03)
    # the exact normal intervals of the same Gaussian: only the binomial error of the truth remains
    lower, upper = normal_intervals(mean, torch.full_like(mean, scale))
    np.testing.assert_allclose(interval_coverage(lower, upper, truth).numpy(), expected, atol=0.025)


@pytest.mark.parametrize(("level", "expected"), [(0.5, 0.4), (0.75, 0.6)])
def test_calibrated_draws_cover_l_times_n_minus_1_over_n_plus_1(level: float, expected: float,
                                                                  generator: torch.Generator) -> None:
    # truth and 9 draws i.i.d.: the truth's rank among the 10 is uniform, and the linear quantiles
    # at 0.25 / 0.75 (0.125 / 0.875) of 9 draws are the order statistics 2 and 6 (1 and 7), which
    # enclose it with probability 4 / 10 (6 / 10). 40000 entries: binomial std 0.0025.
    truth = torch.randn(40, 1, 1000, generator=generator, dtype=torch.float64)
    draws = torch.randn(40, 9, 1, 1000, generator=generator, dtype=torch.float64)
    assert calibration_curve(draws, truth, (level,)).item() == pytest.approx(expected, abs=0.01)
    assert expected == pytest.approx(level * (9 - 1) / (9 + 1))


def test_calibration_on_exact_normal_quantiles_is_exact() -> None:
    # 1000 truths and 2001 draws at N(0, 1)'s grid quantiles. Linear quantiles of 2001 draws at
    # q in {0.025, 0.05, ...} fall on the draw of index 2000 q exactly, the grid point of
    # probability (2000 q + 1/2) / 2001: so the bounds, and the fraction of the truth grid inside
    # them, are known in closed form; both are within a grid step of N(0, 1)'s own.
    n_truth, n_draws = 1000, 2001
    truth = _normal_grid(n_truth).reshape(1, 1, n_truth)
    draws = _normal_grid(n_draws).reshape(1, n_draws, 1, 1).expand(1, n_draws, 1, n_truth)
    levels = np.array([0.5, 0.8, 0.9, 0.95])
    q_hi = (1 + levels) / 2
    upper_exact = stats.norm.ppf((q_hi * (n_draws - 1) + 0.5) / n_draws)
    lower, upper = central_intervals(draws, tuple(levels))
    np.testing.assert_allclose(upper[:, 0, 0, 0].numpy(), upper_exact, rtol=1e-12)
    np.testing.assert_allclose(lower[:, 0, 0, 0].numpy(), -upper_exact, rtol=1e-12)
    expected = [_grid_fraction_inside(n_truth, u) for u in upper_exact]
    np.testing.assert_allclose(calibration_curve(draws, truth, tuple(levels)).numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(expected, levels, atol=2.5e-3)
    # the exact normal intervals of the same N(0, 1) cover the truth grid's own fraction inside -/+ z_l
    exact = interval_coverage(*normal_intervals(torch.zeros_like(truth), torch.ones_like(truth), tuple(levels)), truth)
    np.testing.assert_allclose(exact.numpy(), [_grid_fraction_inside(n_truth, z) for z in stats.norm.ppf(q_hi)],
                               atol=1e-12)
    np.testing.assert_allclose(exact.numpy(), levels, atol=1.5e-3)


def test_calibration_curve_by_hand() -> None:
    # 5 draws 0..4 of every entry, linear quantiles: level 0.5 -> [1, 3], level 0.9 -> [0.2, 3.8]
    samples = torch.arange(5, dtype=torch.float64)[None, :, None, None].expand(2, 5, 1, 4)
    truth = torch.tensor([[[0.0, 2.0, 3.5, 5.0]], [[0.1, 4.0, 1.0, 3.9]]], dtype=torch.float64)
    # inside at 0.5: [F, T, F, F], [F, F, T, F] -> 2 / 8; at 0.9: [F, T, T, F], [F, F, T, F] -> 3 / 8
    lower, upper = central_intervals(samples, (0.5, 0.9))
    torch.testing.assert_close(lower[:, 0, 0, 0], torch.tensor([1.0, 0.2], dtype=torch.float64))
    torch.testing.assert_close(upper[:, 0, 0, 0], torch.tensor([3.0, 3.8], dtype=torch.float64))
    torch.testing.assert_close(calibration_curve(samples, truth, (0.5, 0.9)),
                               torch.tensor([2 / 8, 3 / 8], dtype=torch.float64))
    # only the missing vertices 1 and 2: at 0.5 [T, F], [F, T] -> 2 / 4; at 0.9 [T, T], [F, T] -> 3 / 4
    missing = torch.tensor([False, True, True, False])
    torch.testing.assert_close(calibration_curve(samples, truth, (0.5, 0.9), valid=missing),
                               torch.tensor([2 / 4, 3 / 4], dtype=torch.float64))
    # the one-level helper is the same computation
    for level, value in ((0.5, 2 / 8), (0.9, 3 / 8)):
        assert credible_interval_coverage(samples, truth, level) == pytest.approx(value)
    # normal intervals by hand: mean 1, std 2 -> 0.5 level is 1 -/+ 2 * 0.6745
    lo, hi = normal_intervals(torch.ones(1, 1, 1, dtype=torch.float64), torch.full((1, 1, 1), 2.0, dtype=torch.float64),
                              (0.5,))
    assert (float(lo), float(hi)) == pytest.approx((1 - 2 * 0.6744898, 1 + 2 * 0.6744898))


def test_central_intervals_match_torch_quantile_and_nest(generator: torch.Generator) -> None:
    samples = torch.randn(3, 37, 2, 11, generator=generator, dtype=torch.float64)
    lower, upper = central_intervals(samples)
    for i, level in enumerate(CALIBRATION_LEVELS):
        torch.testing.assert_close(lower[i], torch.quantile(samples, (1 - level) / 2, dim=1))
        torch.testing.assert_close(upper[i], torch.quantile(samples, (1 + level) / 2, dim=1))
    assert bool((upper[1:] >= upper[:-1]).all()) and bool((lower[1:] <= lower[:-1]).all())
    truth = torch.randn(3, 2, 11, generator=generator, dtype=torch.float64)
    curve = calibration_curve(samples, truth)
    assert bool((curve[1:] >= curve[:-1]).all())  # nested intervals: coverage never falls with the level


def test_a_nan_draw_never_covers() -> None:
    samples = torch.zeros(1, 4, 1, 3, dtype=torch.float64)
    samples[0, 2, 0, 1] = float("nan")
    assert calibration_curve(samples, torch.zeros(1, 1, 3, dtype=torch.float64), (0.9,)).item() == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s, t: calibration_curve(s, t, (0.5, 1.0)), "level"),
        (lambda s, t: calibration_curve(s, t, ()), "at least one level"),
        (lambda s, t: calibration_curve(s[:, :, 0], t), "do not match"),
        (lambda s, t: calibration_curve(s, t[:1]), "do not match"),
        (lambda s, t: calibration_curve(s, t, valid=torch.zeros(5, dtype=torch.bool)), "no valid entry"),
        (lambda s, t: central_intervals(s[0]), r"\(B, N, C, V\)"),
        (lambda s, t: normal_intervals(t, -t.abs() - 1), "non-negative"),
        (lambda s, t: normal_intervals(t, t[:1].abs()), "shapes differ"),
        (lambda s, t: interval_coverage(*central_intervals(s), t[:1]), "do not match"),
    ],
)
def test_calibration_refuses_bad_input(call, match: str) -> None:  # type: ignore[no-untyped-def]
    samples, truth = torch.zeros(2, 6, 1, 5), torch.zeros(2, 1, 5)
    with pytest.raises(ValueError, match=match):
        call(samples, truth)
