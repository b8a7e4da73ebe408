"""Quality metrics over valid vertices: MSE, PSNR, SSIM, uncertainty calibration, and intervals.

Every metric is computed per sample (shape ``(B,)``) so that means and spreads can be reported;
``valid`` masks select the vertices that count (padded or otherwise invalid vertices never do).
:func:`project` is the one place for projecting estimates onto a known data range before they
are scored; :func:`bootstrap_interval`, :func:`paired_difference` and :func:`paired_ratio` turn
per-measurement scores into a mean (a difference, a ratio of means) with a bootstrap confidence
interval (resampling whole groups of measurements that share a clean field).
"""

from __future__ import annotations

import inspect
import math
from statistics import NormalDist
from typing import Literal

import numpy as np
import torch
from scipy import stats
from torch import Tensor
from torch.nn import functional as F

from ._checks import check_data_range

__all__ = [
    "mse",
    "psnr",
    "ssim",
    "posterior_std",
    "credible_interval_coverage",
    "CALIBRATION_LEVELS",
    "central_intervals",
    "normal_intervals",
    "interval_coverage",
    "calibration_curve",
    "summarize",
    "project",
    "bootstrap_interval",
    "paired_difference",
    "paired_ratio",
    "BootstrapMethod",
]

BootstrapMethod = Literal["BCa", "percentile"]
"""Interval method of :func:`bootstrap_interval` (see there)."""


def _weights(x: Tensor, valid: Tensor | None) -> Tensor:
    """Per-entry weights ``(B, C, V)``: 1 on counted vertices, 0 elsewhere."""
    if valid is None:
        return torch.ones_like(x)
    valid = torch.as_tensor(valid, device=x.device)
    if valid.dtype != torch.bool:
        raise ValueError(f"valid must be a boolean mask, got {valid.dtype}")
    if valid.shape[-1] != x.shape[-1] or valid.ndim not in (1, 2):
        raise ValueError(f"valid must have shape (V,) or (B, V) with V={x.shape[-1]}, got {tuple(valid.shape)}")
    w = valid[None, None, :] if valid.ndim == 1 else valid[:, None, :]
    return w.to(x.dtype).expand_as(x)


def _check_pair(x: Tensor, ref: Tensor) -> None:
    if x.shape != ref.shape:
        raise ValueError(f"estimate and reference shapes differ: {tuple(x.shape)} vs {tuple(ref.shape)}")
    if x.ndim < 2:
        raise ValueError(f"signals must have a batch dimension, got shape {tuple(x.shape)}")


def mse(x: Tensor, ref: Tensor, valid: Tensor | None = None) -> Tensor:
    """Mean squared error per sample over the counted entries.

    Args:
        x: Estimates ``(B, C, V)`` (or any ``(B, ...)`` when ``valid`` is None).
        ref: Ground truth, same shape.
        valid: Optional boolean ``(V,)`` or ``(B, V)`` mask of counted vertices.

    Returns:
        ``(B,)``.

    Example:
        >>> mse(torch.zeros(1, 1, 4), torch.tensor([[[0.0, 0.0, 2.0, 2.0]]]))
        tensor([2.])
    """
    _check_pair(x, ref)
    w = _weights(x, valid) if valid is not None else torch.ones_like(x)
    err = (x - ref).square() * w
    count = w.flatten(1).sum(-1)
    if bool((count == 0).any()):
        raise ValueError("a sample has no valid entry to average over")
    return err.flatten(1).sum(-1) / count


def psnr(x: Tensor, ref: Tensor, *, data_range: float = 1.0, valid: Tensor | None = None) -> Tensor:
    """Peak signal-to-noise ratio in dB per sample: ``10 log10(range^2 / MSE)``.

    Args:
        x: Estimates ``(B, C, V)``.
        ref: Ground truth.
        data_range: Peak-to-peak range of the signal (1 for data in ``[0, 1]``).
        valid: Optional boolean mask of counted vertices.

    Returns:
        ``(B,)`` (``inf`` where the estimate is exact).

    Example:
        >>> psnr(torch.full((1, 1, 4), 0.1), torch.zeros(1, 1, 4))
        tensor([20.])
    """
    e = mse(x, ref, valid)
    return 10.0 * torch.log10(data_range**2 / e)


def _gaussian_window(size: int, sigma: float, like: Tensor) -> Tensor:
    r = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x: Tensor, ref: Tensor, *, data_range: float = 1.0, window_size: int = 11, window_sigma: float = 1.5
         ) -> Tensor:
    """Structural similarity (Wang et al. 2004) per sample for grid-shaped data.

    Gaussian window, statistics over the window positions that fit inside the image ("valid"
    convolution), constants ``K1 = 0.01``, ``K2 = 0.03``; channels are averaged.

    Args:
        x: Estimates ``(B, C, H, W)``.
        ref: Ground truth ``(B, C, H, W)``.
        data_range: Peak-to-peak range.
        window_size: Side of the Gaussian window (shrunk to the image size if larger).
        window_sigma: Its standard deviation in pixels.

    Returns:
        ``(B,)``.

    Example:
        >>> img = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> ssim(img, img)
        tensor([1., 1.])
    """
    _check_pair(x, ref)
    if x.ndim != 4:
        raise ValueError(f"ssim needs (B, C, H, W) images, got shape {tuple(x.shape)}")
    size = min(window_size, x.shape[-1], x.shape[-2])
    win = _gaussian_window(size, window_sigma, x).expand(x.shape[1], 1, size, size)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def filt(t: Tensor) -> Tensor:
        return F.conv2d(t, win, groups=x.shape[1])

    mu_x, mu_y = filt(x), filt(ref)
    sxx = filt(x * x) - mu_x**2
    syy = filt(ref * ref) - mu_y**2
    sxy = filt(x * ref) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).flatten(1).mean(-1)


def posterior_std(samples: Tensor) -> Tensor:
    """Per-vertex posterior standard deviation of ``N`` samples (unbiased).

    Shapes:
        ``samples``: ``(B, N, C, V)`` -> ``(B, C, V)``.

    Example:
        >>> posterior_std(torch.tensor([[[[0.0]], [[2.0]]]]))
        tensor([[[1.4142]]])
    """
    if samples.ndim != 4 or samples.shape[1] < 2:
        raise ValueError(f"samples must have shape (B, N >= 2, C, V), got {tuple(samples.shape)}")
    return samples.std(dim=1)


def credible_interval_coverage(samples: Tensor, truth: Tensor, level: float = 0.9, valid: Tensor | None = None
                               ) -> float:
    """Fraction of true values inside the per-entry central credible interval of the samples.

    The interval runs between the empirical ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles
    of the ``N`` samples of each entry (:func:`central_intervals`). A calibrated posterior covers
    about ``level``; :func:`calibration_curve` gives several levels at once.

    Args:
        samples: Posterior samples ``(B, N, C, V)``.
        truth: Ground truth ``(B, C, V)``.
        level: Credibility level in ``(0, 1)``.
        valid: Optional boolean ``(V,)`` or ``(B, V)`` mask of counted vertices.

    Returns:
        The coverage, a float in ``[0, 1]``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> s = torch.randn(4, 400, 1, 50, generator=g)
        >>> round(credible_interval_coverage(s, torch.zeros(4, 1, 50)), 1)
        1.0
    """
    return float(calibration_curve(samples, truth, (level,), valid)[0])


CALIBRATION_LEVELS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)
"""Nominal levels of the calibration curves the benchmarks report (``coverage50`` ... ``coverage95``)."""


def _check_levels(levels: tuple[float, ...] | list[float]) -> tuple[float, ...]:
    levels = tuple(float(level) for level in levels)
    if not levels:
        raise ValueError("levels must hold at least one level")
    bad = [level for level in levels if not 0.0 < level < 1.0]
    if bad:
        raise ValueError(f"every level must lie in (0, 1), got {bad}")
    return levels


def central_intervals(samples: Tensor, levels: tuple[float, ...] | list[float] = CALIBRATION_LEVELS
                      ) -> tuple[Tensor, Tensor]:
    """Per-entry central intervals of posterior draws at several levels.

    The interval of level ``l`` runs from the empirical ``(1 - l) / 2`` to the ``(1 + l) / 2``
    quantile of the ``N`` draws of each entry, linearly interpolated between order statistics
    (``torch.quantile``'s default). One sort serves every level. A NaN draw makes the bounds of
    its entry NaN, so that entry never counts as covered.

    Args:
        samples: Posterior draws ``(B, N, C, V)``.
        levels: Nominal levels, each in ``(0, 1)``.

    Returns:
        ``(lower, upper)``, each ``(L, B, C, V)`` with ``L = len(levels)``.

    Shapes:
        ``samples``: ``(B, N, C, V)`` -> two ``(L, B, C, V)``.

    Example:
        >>> s = torch.arange(5.0)[None, :, None, None]  # draws 0, 1, 2, 3, 4 of one entry
        >>> lower, upper = central_intervals(s, (0.5, 0.9))
        >>> lower.flatten().tolist(), upper.flatten().tolist()
        ([1.0, 0.2...], [3.0, 3.8...])
    """
    levels = _check_levels(levels)
    if samples.ndim != 4:
        raise ValueError(f"samples must have shape (B, N, C, V), got {tuple(samples.shape)}")
    half = torch.tensor(levels, dtype=samples.dtype, device=samples.device) / 2
    q = torch.quantile(samples, torch.cat([0.5 - half, 0.5 + half]), dim=1)
    return q[: len(levels)], q[len(levels):]


def normal_intervals(mean: Tensor, std: Tensor, levels: tuple[float, ...] | list[float] = CALIBRATION_LEVELS
                     ) -> tuple[Tensor, Tensor]:
    """Exact central intervals of independent normal marginals ``N(mean, std^2)`` per entry.

    The interval of level ``l`` is ``mean -/+ z std`` with ``z`` the ``(1 + l) / 2`` quantile of
    the standard normal: for a Gaussian posterior with known marginal std (the exact Gaussian
    posterior's closed form) this is what the draws' quantiles estimate, without their
    Monte-Carlo error.

    Args:
        mean: Posterior mean ``(B, C, V)``.
        std: Posterior standard deviation ``(B, C, V)``, non-negative.
        levels: Nominal levels, each in ``(0, 1)``.

    Returns:
        ``(lower, upper)``, each ``(L, B, C, V)``.

    Shapes:
        ``mean``, ``std``: ``(B, C, V)`` -> two ``(L, B, C, V)``.

    Example:
        >>> lower, upper = normal_intervals(torch.zeros(1, 1, 1), torch.ones(1, 1, 1), (0.95,))
        >>> round(float(upper), 3), round(float(lower), 3)
        (1.96, -1.96)
    """
    levels = _check_levels(levels)
    if mean.shape != std.shape:
        raise ValueError(f"mean and std shapes differ: {tuple(mean.shape)} vs {tuple(std.shape)}")
    if bool((std < 0).any()):
        raise ValueError("std must be non-negative")
    z = torch.tensor([NormalDist().inv_cdf((1 + level) / 2) for level in levels], dtype=mean.dtype,
                     device=mean.device)
    shape = (len(levels),) + (1,) * mean.ndim
    half = z.reshape(shape) * std
    return mean - half, mean + half


def interval_coverage(lower: Tensor, upper: Tensor, truth: Tensor, valid: Tensor | None = None) -> Tensor:
    """Fraction of the counted entries whose true value lies in ``[lower, upper]``, per level.

    Args:
        lower: Lower interval bounds ``(L, B, C, V)`` (from :func:`central_intervals` or
            :func:`normal_intervals`).
        upper: Upper bounds, same shape.
        truth: Ground truth ``(B, C, V)``.
        valid: Optional boolean ``(V,)`` or ``(B, V)`` mask of counted vertices.

    Returns:
        ``(L,)`` float64 coverages in ``[0, 1]``.

    Shapes:
        ``lower``, ``upper``: ``(L, B, C, V)``; ``truth``: ``(B, C, V)`` -> ``(L,)``.

    Example:
        >>> truth = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]])  # (B, C, V) = (1, 1, 4)
        >>> lower = torch.full((2, 1, 1, 4), 0.5)  # two levels
        >>> upper = torch.tensor([2.0, 9.0]).reshape(2, 1, 1, 1).expand(2, 1, 1, 4)
        >>> interval_coverage(lower, upper, truth)
        tensor([0.5000, 0.7500], dtype=torch.float64)
    """
    if lower.shape != upper.shape or lower.ndim != truth.ndim + 1 or lower.shape[1:] != truth.shape:
        raise ValueError(f"bounds (L, B, C, V) {tuple(lower.shape)} / {tuple(upper.shape)} do not match truth "
                         f"(B, C, V) {tuple(truth.shape)}")
    w = _weights(truth, valid).to(torch.float64)
    total = float(w.sum())
    if total == 0 or not math.isfinite(total):
        raise ValueError("no valid entry to compute the coverage on")
    inside = ((truth >= lower) & (truth <= upper)).to(torch.float64)
    return (inside * w).flatten(1).sum(-1) / total


def calibration_curve(samples: Tensor, truth: Tensor, levels: tuple[float, ...] | list[float] = CALIBRATION_LEVELS,
                      valid: Tensor | None = None) -> Tensor:
    """Empirical coverage of the draws' central intervals at each nominal level.

    A calibrated posterior's curve lies on the diagonal (coverage ``l`` at level ``l``); below it
    the draws are over-confident (intervals too narrow), above it under-confident. Restricting
    ``valid`` to the vertices a mask hides gives the calibration where the measurement says
    nothing.

    With finitely many draws the curve of a calibrated sampler lies slightly below the diagonal:
    the truth is then one more draw of the same distribution, and lies between the order
    statistics at 0-based positions ``a < b`` with probability ``(b - a) / (N + 1)``, so the
    expected coverage of level ``l`` is about ``l (N - 1) / (N + 1)`` (exactly so where
    ``l (N - 1) / 2`` is an integer): 0.886 at 90% for ``N = 128``, 0.70 for ``N = 8``. The
    exact intervals of a Gaussian posterior (:func:`normal_intervals`) have no such bias.

    Args:
        samples: Posterior draws ``(B, N, C, V)``.
        truth: Ground truth ``(B, C, V)``.
        levels: Nominal levels, each in ``(0, 1)`` (:data:`CALIBRATION_LEVELS` by default).
        valid: Optional boolean ``(V,)`` or ``(B, V)`` mask of counted vertices.

    Returns:
        ``(L,)`` float64 empirical coverages, in the order of ``levels``.

    Shapes:
        ``samples``: ``(B, N, C, V)``, ``truth``: ``(B, C, V)`` -> ``(L,)``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> draws, truth = torch.randn(8, 1000, 1, 100, generator=g), torch.randn(8, 1, 100, generator=g)
        >>> calibration_curve(draws, truth, (0.5, 0.9)).round(decimals=1)
        tensor([0.5000, 0.9000], dtype=torch.float64)
    """
    if samples.ndim != 4 or samples.shape[0] != truth.shape[0] or samples.shape[2:] != truth.shape[1:]:
        raise ValueError(f"samples (B, N, C, V) {tuple(samples.shape)} do not match truth (B, C, V) {tuple(truth.shape)}")
    lower, upper = central_intervals(samples, levels)
    return interval_coverage(lower, upper, truth, valid)


def summarize(
    x: Tensor,
    ref: Tensor,
    *,
    data_range: float = 1.0,
    valid: Tensor | None = None,
    image_shape: tuple[int, int] | None = None,
) -> dict[str, float]:
    """Means over the batch of :func:`psnr`, :func:`mse` and (on image grids) :func:`ssim`.

    Args:
        x: Estimates ``(B, C, V)``.
        ref: Ground truth ``(B, C, V)``.
        data_range: Peak-to-peak range of the signal.
        valid: Optional boolean ``(V,)`` or ``(B, V)`` mask of counted vertices (PSNR and MSE).
        image_shape: ``(H, W)`` with ``H * W = V`` when the vertices form a row-major grid; SSIM
            is then added (over the whole image: ``valid`` does not apply to it).

    Returns:
        ``{"psnr": ..., "mse": ...}`` plus ``"ssim"`` when ``image_shape`` is given, as floats.

    Example:
        >>> ref = torch.zeros(2, 1, 16)
        >>> summarize(ref + 0.1, ref, image_shape=(4, 4))
        {'psnr': 20.0..., 'mse': 0.0100..., 'ssim': 0.0099...}
    """
    out = {"psnr": float(psnr(x, ref, data_range=data_range, valid=valid).mean()),
           "mse": float(mse(x, ref, valid).mean())}
    if image_shape is not None:
        h, w = image_shape
        if h * w != x.shape[-1]:
            raise ValueError(f"image_shape {image_shape} does not hold {x.shape[-1]} vertices")
        grid = (*x.shape[:-1], h, w)
        out["ssim"] = float(ssim(x.reshape(grid), ref.reshape(grid), data_range=data_range).mean())
    return out


def project(x: Tensor, data_range: tuple[float, float] | None) -> Tensor:
    """Project estimates onto a known data range before scoring them (``None``: unchanged).

    Where the range of the data is guaranteed (digits and images in ``[0, 1]``), the projection
    onto it can only bring an estimate closer to the truth, so every method is scored after it;
    where the range is only nominal, pass ``None``.

    Args:
        x: Estimates of any shape.
        data_range: ``(low, high)`` with ``low < high``, or ``None``.

    Returns:
        ``x.clamp(low, high)``, or ``x`` itself when ``data_range`` is ``None``.

    Shapes:
        ``x``: any -> the same.

    Example:
        >>> project(torch.tensor([-0.5, 0.3, 1.2]), (0.0, 1.0))
        tensor([0.0000, 0.3000, 1.0000])
        >>> x = torch.tensor([2.0])
        >>> project(x, None) is x
        True
    """
    if data_range is None:
        return x
    low, high = check_data_range(data_range)
    return x.clamp(low, high)


def _as_values(values: Tensor | np.ndarray, name: str) -> np.ndarray:
    """Finite float64 numpy copy of a ``(N,)`` tensor or array with ``N >= 2``."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().to(torch.float64).numpy()
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must have shape (N,), got {arr.shape}")
    if arr.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 values to bootstrap, got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    return arr


def _group_index(groups: Tensor | np.ndarray | None, n: int) -> np.ndarray:
    """Group index ``0..G-1`` of each of ``n`` values (each value its own group when ``None``)."""
    if groups is None:
        return np.arange(n)
    if isinstance(groups, Tensor):
        groups = groups.detach().cpu().numpy()
    labels = np.asarray(groups)
    if labels.shape != (n,):
        raise ValueError(f"groups must have shape ({n},) like the values, got {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise ValueError(f"groups must hold integer labels, got dtype {labels.dtype}")
    _, index = np.unique(labels, return_inverse=True)
    if index.max() < 1:
        raise ValueError("groups must hold at least 2 distinct labels to bootstrap over them")
    return index.reshape(n)


_BATCH_ENTRIES = 2**22
"""Resampled entries :func:`bootstrap_interval` holds at once (about 32 MiB per float64 array)."""

_RNG_KEYWORD = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


def bootstrap_interval(
    values: Tensor | np.ndarray,
    *,
    groups: Tensor | np.ndarray | None = None,
    level: float = 0.95,
    n_resamples: int = 9999,
    seed: int | np.random.Generator = 0,
    method: BootstrapMethod = "BCa",
) -> tuple[float, float, float]:
    """Mean of per-measurement scores with a bootstrap confidence interval.

    Without ``groups`` the measurements are resampled with replacement. With ``groups`` (an
    integer label per value, e.g. the index of the clean field when several masks share one
    field) whole groups are resampled (cluster bootstrap): the statistic of a resample is the
    overall mean of the values of the drawn groups, ``sum of their values / number of their
    values``, a ratio of sums, so groups of unequal size weigh by their size as in the point
    estimate. Measurements that share a field are correlated; resampling them one by one would
    treat them as independent and give too narrow an interval.

    The interval is ``scipy.stats.bootstrap``'s. The default ``"BCa"`` (bias-corrected and
    accelerated) corrects the percentile interval for the bias and the skewness of the bootstrap
    distribution and is second-order accurate, which matters for scores such as PSNR whose
    per-measurement distribution is skewed by a few hard measurements; its jackknife costs one
    evaluation per group. ``"percentile"`` is the plain percentile interval. When the statistic
    is the same for every resample (all group means equal up to rounding) the interval is
    ``(mean, mean)`` exactly.

    Args:
        values: Scores, one per measurement (a torch tensor or numpy array).
        groups: Optional integer group label per value.
        level: Confidence level in ``(0, 1)``.
        n_resamples: Number of bootstrap resamples.
        seed: Seed or ``numpy.random.Generator`` of the resampling (the result is deterministic
            for a given seed).
        method: ``"BCa"`` or ``"percentile"``.

    Returns:
        ``(mean, low, high)`` as floats: the mean of all values and the interval's ends.

    Raises:
        ValueError: If ``values`` is not ``(N,)`` with ``N >= 2`` finite entries, ``groups`` is
            not an integer label per value with at least 2 distinct labels, or ``level``,
            ``n_resamples`` or ``method`` is invalid.

    Shapes:
        ``values``: ``(N,)``; ``groups``: ``(N,)``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> mean, low, high = bootstrap_interval(rng.normal(10.0, 2.0, 400), seed=1)
        >>> round(mean, 2), low < mean < high, round(high - low, 1)
        (9.9..., True, 0.4)
        >>> bootstrap_interval(torch.tensor([1.0, 2.0, 1.0, 2.0]), groups=torch.tensor([0, 0, 1, 1]))
        (1.5, 1.5, 1.5)
    """
    arr = _as_values(values, "values")
    index = _group_index(groups, arr.shape[0])
    sums = np.bincount(index, weights=arr)
    counts = np.bincount(index).astype(np.float64)
    return _ratio_of_sums_interval(sums, counts, float(arr.mean()), level=level, n_resamples=n_resamples, seed=seed,
                                   method=method)


def _ratio_of_sums_interval(num: np.ndarray, den: np.ndarray, point: float, *, level: float, n_resamples: int,
                            seed: int | np.random.Generator, method: BootstrapMethod) -> tuple[float, float, float]:
    """``(point, low, high)``: the bootstrap interval of ``sum(num) / sum(den)``, resampling the
    ``(num, den)`` pairs (one per group) together; ``den`` is positive."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if not isinstance(n_resamples, int) or isinstance(n_resamples, bool) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if method not in ("BCa", "percentile"):
        raise ValueError(f"method must be 'BCa' or 'percentile', got {method!r}")
    group_ratios = num / den
    if np.ptp(group_ratios) <= 8 * np.finfo(np.float64).eps * np.abs(group_ratios).max():
        return point, point, point  # every resample has the same statistic: scipy would warn and return NaN

    def ratio_of_sums(s: np.ndarray, c: np.ndarray, axis: int = -1) -> np.ndarray:
        return s.sum(axis=axis) / c.sum(axis=axis)

    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    batch = max(1, _BATCH_ENTRIES // num.shape[0])  # bounds the memory of resamples and jackknife
    result = stats.bootstrap((num, den), ratio_of_sums, paired=True, vectorized=True, n_resamples=n_resamples,
                             batch=batch, confidence_level=level, method=method, **{_RNG_KEYWORD: rng})
    ci = result.confidence_interval
    return point, float(ci.low), float(ci.high)


def paired_difference(
    a: Tensor | np.ndarray,
    b: Tensor | np.ndarray,
    *,
    groups: Tensor | np.ndarray | None = None,
    level: float = 0.95,
    n_resamples: int = 9999,
    seed: int | np.random.Generator = 0,
    method: BootstrapMethod = "BCa",
) -> tuple[float, float, float]:
    """Mean difference ``a - b`` of two methods scored on the same measurements, with its interval.

    The pairs are resampled together (as :func:`bootstrap_interval` of ``a - b``), so the
    variation the two methods share -- hard and easy measurements -- cancels; this interval is
    the one that says whether one method beats the other.

    Args:
        a: Scores of the first method, one per measurement.
        b: Scores of the second method on the same measurements, in the same order.
        groups: Optional integer group label per measurement (see :func:`bootstrap_interval`).
        level: Confidence level in ``(0, 1)``.
        n_resamples: Number of bootstrap resamples.
        seed: Seed or ``numpy.random.Generator`` of the resampling.
        method: ``"BCa"`` or ``"percentile"``.

    Returns:
        ``(mean, low, high)`` of ``a - b`` as floats.

    Raises:
        ValueError: If ``a`` and ``b`` differ in shape, or as :func:`bootstrap_interval`.

    Shapes:
        ``a``, ``b``, ``groups``: ``(N,)``.

    Example:
        >>> a = np.array([20.0, 25.0, 31.0, 22.0])
        >>> paired_difference(a + 1.5, a)
        (1.5, 1.5, 1.5)
    """
    a_arr, b_arr = _as_values(a, "a"), _as_values(b, "b")
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"a and b must score the same measurements, got shapes {a_arr.shape} and {b_arr.shape}")
    return bootstrap_interval(a_arr - b_arr, groups=groups, level=level, n_resamples=n_resamples, seed=seed,
                              method=method)


def paired_ratio(
    a: Tensor | np.ndarray,
    b: Tensor | np.ndarray,
    *,
    groups: Tensor | np.ndarray | None = None,
    level: float = 0.95,
    n_resamples: int = 9999,
    seed: int | np.random.Generator = 0,
    method: BootstrapMethod = "BCa",
) -> tuple[float, float, float]:
    """Ratio of means ``mean(a) / mean(b)`` of two scores on the same measurements, with its interval.

    Meant for errors such as the MSE of two denoisers on the same signals (0.85: the first makes
    15% less error). The pairs are resampled together (whole groups with ``groups``) and each
    resample's statistic is ``sum(a) / sum(b)`` over it, so the variation the two share cancels as
    in :func:`paired_difference`. This is the ratio of the mean errors, not the mean of
    per-measurement ratios (which a few nearly error-free measurements would dominate).

    Args:
        a: Scores of the first method, one per measurement.
        b: Positive scores of the second method on the same measurements, in the same order.
        groups: Optional integer group label per measurement (see :func:`bootstrap_interval`).
        level: Confidence level in ``(0, 1)``.
        n_resamples: Number of bootstrap resamples.
        seed: Seed or ``numpy.random.Generator`` of the resampling.
        method: ``"BCa"`` or ``"percentile"``.

    Returns:
        ``(ratio, low, high)`` as floats: ``sum(a) / sum(b)`` and the interval's ends.

    Raises:
        ValueError: If ``a`` and ``b`` differ in shape, ``b`` has an entry that is not positive,
            or as :func:`bootstrap_interval`.

    Shapes:
        ``a``, ``b``, ``groups``: ``(N,)``.

    Example:
        >>> b = np.array([0.01, 0.02, 0.04, 0.03])
        >>> paired_ratio(0.5 * b, b)
        (0.5, 0.5, 0.5)
    """
    a_arr, b_arr = _as_values(a, "a"), _as_values(b, "b")
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"a and b must score the same measurements, got shapes {a_arr.shape} and {b_arr.shape}")
    if not (b_arr > 0).all():
        raise ValueError(f"b must be positive (the ratio divides by it), got {int((b_arr <= 0).sum())} entries <= 0")
    index = _group_index(groups, a_arr.shape[0])
    num, den = np.bincount(index, weights=a_arr), np.bincount(index, weights=b_arr)
    return _ratio_of_sums_interval(num, den, float(a_arr.sum() / b_arr.sum()), level=level, n_resamples=n_resamples,
                                   seed=seed, method=method)
