"""Run any :class:`~manifold_ps.sampling.PosteriorSampler` on a batch of measurements and score it.

The same function serves the amortized flow and every baseline, so all methods in a benchmark
see the same measurements, the same batching and the same clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..metrics import credible_interval_coverage, psnr, summarize
from ..operators import Operator
from ..sampling import PosteriorSampler
from .results import MethodResult

__all__ = ["SamplerOutput", "run_sampler", "score_estimate"]


@dataclass
class SamplerOutput:
    """What one sampler produced for a batch of measurements.

    Attributes:
        first: The first posterior sample of each measurement ``(B, C, V)`` (the N = 1 estimate).
        mean: Posterior mean over the ``n`` samples ``(B, C, V)``.
        std: Per-vertex posterior standard deviation ``(B, C, V)`` (zeros when ``n == 1``).
        kept: Up to ``keep`` samples per measurement for figures and coverage ``(B, k, C, V)``.
        seconds_per_sample: Wall-clock seconds per posterior sample.
        nfe: Network evaluations per sample reported by the sampler.
        n: Samples drawn per measurement.
    """

    first: Tensor
    mean: Tensor
    std: Tensor
    kept: Tensor
    seconds_per_sample: float
    nfe: int
    n: int


def run_sampler(
    sampler: PosteriorSampler,
    y: Tensor,
    operator: Operator,
    *,
    n: int = 1,
    batch_size: int = 64,
    chunk: int | None = None,
    keep: int = 32,
    generator: torch.Generator | None = None,
    progress: Callable[[int], None] | None = None,
) -> SamplerOutput:
    """Draw ``n`` samples per measurement, in batches, and summarise them.

    Args:
        sampler: Any posterior sampler.
        y: Measurements ``(B, ...)``.
        operator: Their operator (per-sample parameters indexed with ``select``).
        n: Samples per measurement.
        batch_size: Measurements per call.
        chunk: Samples per call (``n`` by default); the mean and std accumulate over chunks.
        keep: Samples kept per measurement for figures and coverage.
        generator: Source of randomness.
        progress: Called with the number of measurements finished after each batch.

    Returns:
        A :class:`SamplerOutput`.
    """
    chunk = n if chunk is None else min(chunk, n)
    firsts, means, stds, kepts = [], [], [], []
    total_time, nfe = 0.0, 0
    for start in range(0, y.shape[0], batch_size):
        idx = torch.arange(start, min(start + batch_size, y.shape[0]), device=y.device)
        yb, op = y[idx], operator.select(idx)
        s1 = s2 = None
        kept: list[Tensor] = []
        first = None
        drawn = 0
        while drawn < n:
            m = min(chunk, n - drawn)
            if y.device.type == "cuda":
                torch.cuda.synchronize(y.device)
            tic = time.perf_counter()
            samples = sampler.sample(yb, op, m, generator=generator).detach()
            if y.device.type == "cuda":
                torch.cuda.synchronize(y.device)
            total_time += time.perf_counter() - tic
            nfe = int(sampler.nfe)
            s64 = samples.double()
            s1 = s64.sum(1) if s1 is None else s1 + s64.sum(1)
            s2 = s64.square().sum(1) if s2 is None else s2 + s64.square().sum(1)
            if first is None:
                first = samples[:, 0]
            if sum(k.shape[1] for k in kept) < keep:
                kept.append(samples[:, : keep - sum(k.shape[1] for k in kept)])
            drawn += m
        mean = s1 / n
        var = (s2 / n - mean.square()).clamp_min(0.0) * (n / max(n - 1, 1))
        firsts.append(first)
        means.append(mean.to(y.dtype))
        stds.append(var.sqrt().to(y.dtype))
        kepts.append(torch.cat(kept, dim=1))
        if progress is not None:
            progress(int(idx[-1]) + 1)
    return SamplerOutput(
        first=torch.cat(firsts),
        mean=torch.cat(means),
        std=torch.cat(stds),
        kept=torch.cat(kepts),
        seconds_per_sample=total_time / (y.shape[0] * n),
        nfe=nfe,
        n=n,
    )


def score_estimate(
    estimate: Tensor,
    truth: Tensor,
    *,
    seconds_per_sample: float,
    nfe: int,
    image_shape: tuple[int, int] | None = None,
    samples: Tensor | None = None,
    extra: dict[str, float] | None = None,
) -> MethodResult:
    """Mean PSNR / MSE (and SSIM on grid-shaped data, coverage when samples are given).

    Args:
        estimate: Point estimates ``(B, C, V)``.
        truth: Ground truth ``(B, C, V)``.
        seconds_per_sample: Cost, for the table.
        nfe: Network evaluations per sample.
        image_shape: ``(H, W)`` when the vertices form a row-major grid (SSIM is then computed).
        samples: Posterior samples ``(B, k, C, V)`` with ``k > 1``: the 90% credible-interval
            coverage is added as ``coverage90``.
        extra: Further numbers to record.

    Returns:
        A :class:`MethodResult` with per-set means.
    """
    est = estimate.detach().to(torch.float64).clamp(-1e6, 1e6)
    ref = truth.detach().to(torch.float64)
    means = summarize(est, ref, image_shape=image_shape)
    p = psnr(est, ref)
    result_extra = dict(extra or {})
    result_extra["psnr_std"] = float(p.std()) if p.numel() > 1 else 0.0
    if samples is not None and samples.shape[1] > 1:
        result_extra["coverage90"] = float(credible_interval_coverage(samples.double(), ref, level=0.9))
    return MethodResult(
        psnr=means["psnr"],
        ssim=means.get("ssim"),
        mse=means["mse"],
        seconds_per_sample=float(seconds_per_sample),
        nfe=int(nfe),
        extra=result_extra,
    )
