"""Quality metrics over valid vertices: MSE, PSNR, SSIM, and uncertainty calibration.

Every metric is computed per sample (shape ``(B,)``) so that means and spreads can be reported;
``valid`` masks select the vertices that count (padded or otherwise invalid vertices never do).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["mse", "psnr", "ssim", "posterior_std", "credible_interval_coverage", "summarize"]


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
    of the ``N`` samples of each entry. A calibrated posterior covers about ``level``.

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
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if samples.ndim != 4 or samples.shape[0] != truth.shape[0] or samples.shape[2:] != truth.shape[1:]:
        raise ValueError(f"samples (B, N, C, V) {tuple(samples.shape)} do not match truth (B, C, V) {tuple(truth.shape)}")
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=samples.dtype, device=samples.device)
    lo, hi = torch.quantile(samples, q, dim=1)
    inside = ((truth >= lo) & (truth <= hi)).to(samples.dtype)
    w = _weights(truth, valid)
    total = float(w.sum())
    if total == 0 or not math.isfinite(total):
        raise ValueError("no valid entry to compute the coverage on")
    return float((inside * w).sum()) / total


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
