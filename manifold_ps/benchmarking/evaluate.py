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

from ..metrics import (
    CALIBRATION_LEVELS,
    bootstrap_interval,
    central_intervals,
    interval_coverage,
    normal_intervals,
    paired_difference,
    project,
    psnr,
    summarize,
)
from ..operators import Operator
from ..sampling import PosteriorSampler
from .results import MethodResult, coverage_key

__all__ = ["SamplerOutput", "run_sampler", "score_estimate", "scored_psnr", "add_paired_differences"]


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


def scored_psnr(estimate: Tensor, truth: Tensor, data_range: tuple[float, float] | None = None) -> Tensor:
    """Per-measurement PSNR as the benchmarks score it: the estimate projected onto the data range
    when the workload guarantees one (``None``: unprojected), on a peak-to-peak range of 1.

    Shapes:
        ``estimate``, ``truth``: ``(B, C, V)`` -> ``(B,)`` float64.
    """
    est = project(estimate.detach().to(torch.float64).clamp(-1e6, 1e6), data_range)
    return psnr(est, truth.detach().to(torch.float64))


def score_estimate(
    estimate: Tensor,
    truth: Tensor,
    *,
    seconds_per_sample: float,
    nfe: int,
    image_shape: tuple[int, int] | None = None,
    samples: Tensor | None = None,
    extra: dict[str, float] | None = None,
    data_range: tuple[float, float] | None = None,
    groups: Tensor | None = None,
    observed: Tensor | None = None,
    std: Tensor | None = None,
    exact_normal: bool = False,
    levels: tuple[float, ...] = CALIBRATION_LEVELS,
) -> MethodResult:
    """Mean PSNR with its 95% bootstrap interval, MSE, SSIM on grids, calibration when samples are given.

    With a ``data_range`` (a range the clean signals are guaranteed to lie in) every estimate and
    sample is projected onto it before scoring, and the unprojected PSNR is kept as
    ``psnr_raw``; without one nothing is projected.

    Args:
        estimate: Point estimates ``(B, C, V)``.
        truth: Ground truth ``(B, C, V)``.
        seconds_per_sample: Cost, for the table.
        nfe: Network evaluations per sample.
        image_shape: ``(H, W)`` when the vertices form a row-major grid (SSIM is then computed).
        samples: Posterior samples ``(B, k, C, V)`` with ``k > 1``: the calibration curve, the
            coverage of their central intervals at each of ``levels``, is added as
            ``coverage50`` ... ``coverage95`` (and ``coverage50_missing`` ... over the vertices
            that ``observed`` marks unobserved; see :func:`~manifold_ps.metrics.calibration_curve`).
        extra: Further numbers to record.
        data_range: ``(low, high)`` guaranteed range of the signals, or ``None``.
        groups: Field index per measurement ``(B,)`` when several measurements share one field
            (the interval then resamples fields).
        observed: Boolean ``(B, V)`` of observed vertices (masking): coverage and the mean
            posterior std are also reported over the missing and the observed vertices.
        std: Per-vertex posterior standard deviation ``(B, C, V)``: its mean over all, missing and
            observed vertices is reported (``std_mean``, ``std_missing``, ``std_observed``).
        exact_normal: The posterior is Gaussian with mean ``estimate`` and marginal standard
            deviation ``std`` (the exact Gaussian posterior): the coverage of its exact normal
            intervals is added too, as ``coverage50_exact`` ... (and ``..._exact_missing``).
        levels: Nominal levels of the calibration curve (the reported keys follow them).

    Returns:
        A :class:`MethodResult` with per-set means; ``extra`` holds ``psnr_low`` / ``psnr_high``
        (95% interval), ``psnr_raw`` (+ interval) and ``psnr_std``.
    """
    ref = truth.detach().to(torch.float64)
    raw = scored_psnr(estimate, ref)
    p = scored_psnr(estimate, ref, data_range)
    est = project(estimate.detach().to(torch.float64).clamp(-1e6, 1e6), data_range)
    means = summarize(est, ref, image_shape=image_shape)
    result_extra = dict(extra or {})
    result_extra["psnr_std"] = float(p.std()) if p.numel() > 1 else 0.0
    if p.numel() > 1 and bool(torch.isfinite(p).all()):
        _, result_extra["psnr_low"], result_extra["psnr_high"] = bootstrap_interval(p, groups=groups)
    result_extra["psnr_raw"] = float(raw.mean())
    if data_range is not None and raw.numel() > 1 and bool(torch.isfinite(raw).all()):
        _, result_extra["psnr_raw_low"], result_extra["psnr_raw_high"] = bootstrap_interval(raw, groups=groups)
    missing = None if observed is None else ~observed.to(device=ref.device, dtype=torch.bool)
    if samples is not None and samples.shape[1] > 1:
        s = project(samples.detach().double(), data_range)
        result_extra.update(_calibration(*central_intervals(s, levels), ref, missing, levels))
    if exact_normal:
        if std is None:
            raise ValueError("exact_normal needs the posterior std")
        intervals = normal_intervals(estimate.detach().double(), std.detach().double(), levels)
        result_extra.update(_calibration(*intervals, ref, missing, levels, exact=True))
    if std is not None:
        sd = std.detach().double()
        result_extra["std_mean"] = float(sd.mean())
        if missing is not None and bool(missing.any()) and bool((~missing).any()):
            w = missing[:, None, :].expand_as(sd)
            result_extra["std_missing"] = float(sd[w].mean())
            result_extra["std_observed"] = float(sd[~w].mean())
    return MethodResult(
        psnr=float(p.mean()),
        ssim=means.get("ssim"),
        mse=means["mse"],
        seconds_per_sample=float(seconds_per_sample),
        nfe=int(nfe),
        extra=result_extra,
        per_measurement=p,
    )


def _calibration(lower: Tensor, upper: Tensor, truth: Tensor, missing: Tensor | None, levels: tuple[float, ...],
                 *, exact: bool = False) -> dict[str, float]:
    """Coverage of the intervals ``(L, B, C, V)`` at each level, over all and over missing vertices."""
    out = dict(zip((coverage_key(lv, exact=exact) for lv in levels), interval_coverage(lower, upper, truth).tolist()))
    if missing is not None and bool(missing.any()):
        over_missing = interval_coverage(lower, upper, truth, valid=missing).tolist()
        out.update(zip((coverage_key(lv, exact=exact, missing=True) for lv in levels), over_missing))
    return out


def add_paired_differences(results: dict[str, MethodResult], *, references: tuple[str, ...] = ("aps_n1", "aps_n128"),
                           groups: Tensor | None = None) -> None:
    """Add to every method the mean PSNR difference to each reference method scored on the same
    measurements, with its 95% paired-bootstrap interval: ``diff_<ref>``, ``diff_<ref>_low``,
    ``diff_<ref>_high`` (positive: the method beats the reference).

    Methods evaluated on a prefix of the measurements are compared on that prefix.

    Args:
        results: Method results with ``per_measurement`` PSNR (from :func:`score_estimate`),
            updated in place.
        references: Methods to compare with (those absent are skipped).
        groups: Field index per measurement, as for :func:`score_estimate`.
    """
    for ref in references:
        if ref not in results or results[ref].per_measurement is None:
            continue
        base = results[ref].per_measurement
        for name, result in results.items():
            value = result.per_measurement
            if name == ref or value is None:
                continue
            n = min(value.shape[0], base.shape[0])
            a, b = value[:n], base[:n]
            if n < 2 or not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
                continue
            mean, low, high = paired_difference(a, b, groups=None if groups is None else groups[:n])
            result.extra.update({f"diff_{ref}": mean, f"diff_{ref}_low": low, f"diff_{ref}_high": high})
