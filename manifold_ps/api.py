"""Your own data in three calls: train a prior, train its amortized posterior, sample it.

:func:`train_prior_on` and :func:`train_posterior` run the benchmarks' own stages
(:func:`~manifold_ps.benchmarking.pipeline.stage_prior`, :func:`~manifold_ps.benchmarking.pipeline.stage_flow`)
on a user's geometry and data, with the settings of one :class:`~manifold_ps.config.Config`.
Each writes its folder (the trained file, the resolved ``config.json``, the geometry and what the
data was) and returns the trained object; rerunning the same call into the same folder resumes
("resuming from step N of M"), and a call with other data or result-changing settings is refused,
naming every difference. :func:`sample_posterior` turns measurements into the posterior mean,
standard deviation and a few draws. ``manifold-ps train-prior`` / ``train-flow`` / ``sample``
are these three calls.

Example:
    >>> import tempfile, torch
    >>> from manifold_ps.api import train_prior_on, train_posterior, sample_posterior
    >>> from manifold_ps.config import build_config
    >>> from manifold_ps.geometry import ImageGrid
    >>> from manifold_ps.io import simulate_measurements
    >>> grid, x = ImageGrid(4, 4), torch.rand(32, 1, 16, generator=torch.Generator().manual_seed(0))
    >>> cfg = build_config("smoke", overrides={"prior.train_steps": 2, "flow.train_steps": 2})
    >>> run = tempfile.mkdtemp()
    >>> prior = train_prior_on(grid, x, cfg, f"{run}/prior")
    [...] prior: training ... on 32 signals for 2 steps
    >>> meas = simulate_measurements(x, grid, "inpainting", missing=0.5, sigma=0.1)
    >>> posterior = train_posterior(prior, meas, cfg, f"{run}/flow", geometry=grid)
    [...] custom: distilling into a 2-layer flow ... on 32 measurements for 2 steps
    >>> out = sample_posterior(posterior, meas.y[:2], meas.operator.select(torch.arange(2)), n=8)
    >>> out.mean.shape, out.std.shape, out.draws.shape
    (torch.Size([2, 1, 16]), torch.Size([2, 1, 16]), torch.Size([2, 4, 1, 16]))
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .benchmarking.evaluate import run_sampler
from .benchmarking.pipeline import Measured, flow_record, stage_flow, stage_prior
from .benchmarking.workloads import Task, Workload
from .config import Config, EvalConfig, check_same_run, get_profile, read_config, write_config
from .flows import AmortizedPosterior
from .geometry import Geometry, ImageGrid
from .io import Measurements, Signals, as_signals, geometry_kind, save_geometry
from .operators import Inpainting, Operator
from .priors import DiffusionPrior

__all__ = ["train_prior_on", "train_posterior", "sample_posterior", "PosteriorSamples", "resolve_device",
           "output_folder"]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The training device: ``None`` is CUDA when available, else the CPU.

    Raises:
        ValueError: a CUDA device on a PyTorch build without CUDA, or without a visible GPU, or
            an unknown device name (the message says which).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device {device!r} is not a device name (cpu, cuda, cuda:1, ...): {err}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        if torch.version.cuda is None:
            raise ValueError(f"device {str(device)!r} asked for, but this PyTorch build ({torch.__version__}) has no "
                             "CUDA support: use --device cpu, or install a CUDA build of PyTorch")
        raise ValueError(f"device {str(device)!r} asked for, but no CUDA GPU is visible (CUDA_VISIBLE_DEVICES, "
                         "driver): use --device cpu")
    return dev


def output_folder(out: str | os.PathLike[str]) -> Path:
    """Create the output folder ``out`` and check that files can be written in it.

    Raises:
        ValueError: naming the folder when it cannot be created or written (a file in its place,
            no permission, read-only file system).
    """
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ValueError(f"cannot write to the output folder {path} ({type(err).__name__}: {err.strerror or err}); "
                         "choose another --out / out") from None
    return path


def _config(config: Config | str | None) -> Config:
    if config is None:
        return get_profile("cpu")
    return get_profile(config) if isinstance(config, str) else config


def _check_same_data(folder: Path, record: dict[str, Any]) -> None:
    """Refuse a rerun in ``folder`` with other data (``data.json``), else write the record.

    The data are compared by content (shape, dtype, range, hash), not by file name: a moved or
    renamed file with the same values resumes the run."""
    def content(r: dict[str, Any]) -> dict[str, Any]:
        return {k: {f: v for f, v in section.items() if f != "source"} for k, section in r.items()}

    stored = read_config(folder / "data.json")
    if stored is not None:
        check_same_run(content(stored), content(record), folder)
    write_config(folder / "data.json", record)


def _geometry_record(geometry: Geometry) -> dict[str, Any]:
    return {"kind": type(geometry).__name__, "fingerprint": geometry.fingerprint(),
            "num_vertices": geometry.num_vertices, "source": str(getattr(geometry, "source", ""))}


def _workload(geometry: Geometry, train: Tensor, source: str, normalisation: dict[str, Any],
              tasks: list[Task] | None = None) -> Workload:
    return Workload(name="custom", geometry=geometry, kind=geometry_kind(geometry), prior_train=train,
                    flow_train=train, flow_dataset=source, eval_sets=[], tasks=tasks or [],
                    image_shape=geometry.shape if isinstance(geometry, ImageGrid) else None,
                    normalisation=normalisation)


def train_prior_on(geometry: Geometry, signals: Tensor | np.ndarray | Signals, config: Config | str | None,
                   out: str | os.PathLike[str], *, device: str | torch.device | None = None,
                   progress: bool = False, tensorboard: bool = False) -> DiffusionPrior:
    """Train a diffusion prior on a user's clean signals (or resume, or load the finished one).

    Writes ``out/prior.pt`` (load it with :meth:`~manifold_ps.priors.DiffusionPrior.load`),
    ``out/checkpoint.pt``, ``out/config.json`` (the resolved ``[prior]`` settings),
    ``out/data.json`` (the geometry's fingerprint, the signals' source, shape, data range and
    hash) and ``out/geometry.npz`` (:func:`manifold_ps.io.read_geometry` rebuilds the geometry).

    Args:
        geometry: The geometry the signals live on.
        signals: Clean signals ``(N, C, V)`` (or ``(N, V)``); float64 is converted to float32.
        config: The run configuration, or a profile name (``None``: ``"cpu"``); only ``seed`` and
            the ``[prior]`` section matter here (``prior.train_size`` keeps the first signals).
        out: The run folder.
        device: Training device (``None``: CUDA when available).
        progress: Show a progress bar.
        tensorboard: Write TensorBoard scalars to ``out/tensorboard``.

    Returns:
        The trained (EMA) prior, in eval mode, on ``device``.

    Raises:
        ValueError: signals of another shape than the geometry (with both shapes), NaN values, a
            batch size larger than the data, another geometry or other data or settings than a
            previous run in ``out`` (naming each difference), an unusable device or folder.

    Shapes:
        signals ``(N, C, V)``.

    Example:
        >>> import tempfile, torch
        >>> from manifold_ps.config import build_config
        >>> from manifold_ps.geometry import ImageGrid
        >>> cfg = build_config("smoke", overrides={"prior.train_steps": 2})
        >>> prior = train_prior_on(ImageGrid(3, 3), torch.rand(20, 1, 9, dtype=torch.float64), cfg, tempfile.mkdtemp())
        [...] prior: training ... on 20 signals for 2 steps
        >>> prior.num_vertices
        9
    """
    cfg = _config(config)
    sig = signals if isinstance(signals, Signals) else as_signals(signals, geometry)
    x = sig.x if cfg.prior.train_size is None else sig.x[: cfg.prior.train_size]
    if cfg.prior.batch_size > x.shape[0]:
        raise ValueError(f"prior.batch_size={cfg.prior.batch_size} is larger than the {x.shape[0]} training signals "
                         f"of {sig.source}; set prior.batch_size to at most {x.shape[0]} (--set prior.batch_size=...)")
    dev = resolve_device(device)
    folder = output_folder(out)
    _check_same_data(folder, {"geometry": _geometry_record(geometry), "signals": {**sig.describe(), "used": x.shape[0]}})
    save_geometry(geometry, folder / "geometry.npz")
    workload = _workload(geometry, x, sig.source, {"kind": "none", "data_range": list(sig.data_range)})
    return stage_prior(workload, cfg, folder, device=dev, progress=progress, folder=folder, tensorboard=tensorboard)


def _check_measurements(prior: DiffusionPrior, m: Measurements, geometry: Geometry) -> Measurements:
    """Measurements as float32 that fit the prior and the geometry (else ValueError naming the field)."""
    if prior.fingerprint != geometry.fingerprint() or prior.num_vertices != geometry.num_vertices:
        raise ValueError(f"the prior was made for the geometry with fingerprint {prior.fingerprint!r} and "
                         f"{prior.num_vertices} vertices, but the given geometry has fingerprint "
                         f"{geometry.fingerprint()!r} and {geometry.num_vertices} vertices (another mesh or vertex "
                         "order): train the prior on this geometry, or give the one it was trained on")
    y = m.y
    if y.ndim != 3 or y.shape[1] != prior.channels or y.shape[-1] != geometry.num_vertices:
        raise ValueError(f"measurements y have shape {tuple(y.shape)}, expected (N, {prior.channels}, "
                         f"{geometry.num_vertices}) for this prior and geometry")
    if isinstance(m.operator, Inpainting) and m.operator.batched and m.operator.mask.shape[0] not in (1, y.shape[0]):
        raise ValueError(f"there are {y.shape[0]} measurements y but the operator holds {m.operator.mask.shape[0]} "
                         "masks: give one mask per measurement (or one shared mask)")
    if m.operator.num_vertices != geometry.num_vertices:
        raise ValueError(f"the operator acts on {m.operator.num_vertices} vertices, the geometry has "
                         f"{geometry.num_vertices}")
    if y.dtype != torch.float32:
        y = y.float()
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"measurements y contain {int((~torch.isfinite(y)).sum())} NaN or infinite values")
    x = None if m.x is None else m.x.float()
    return Measurements(y, m.operator.float(), x, m.description)


def train_posterior(prior: DiffusionPrior, measurements: Measurements, config: Config | str | None,
                    out: str | os.PathLike[str], *, geometry: Geometry, device: str | torch.device | None = None,
                    progress: bool = False) -> AmortizedPosterior:
    """Distil ``prior`` into an amortized posterior sampler for these measurements (or resume, or load).

    Writes ``out/posterior.pt`` (load it with :meth:`~manifold_ps.flows.AmortizedPosterior.load`),
    ``out/checkpoint.pt``, ``out/config.json`` (the resolved ``[flow]`` settings and how the
    measurements were made), ``out/measurements.pt`` (:func:`manifold_ps.io.load_measurements`
    reads it) and ``out/geometry.npz``.

    Args:
        prior: The trained prior (e.g. from :func:`train_prior_on`), made for ``geometry``.
        measurements: Training measurements and their operator: simulated from clean signals
            (:func:`manifold_ps.io.simulate_measurements`) or a user's y plus mask
            (:func:`manifold_ps.io.load_measurements`).
        config: The run configuration or a profile name; ``seed`` and ``[flow]`` matter here
            (``flow.train_size`` keeps the first measurements).
        out: The run folder.
        geometry: The geometry of the prior and the measurements.
        device: Training device (``None``: CUDA when available).
        progress: Show a progress bar.

    Returns:
        The trained (EMA) sampler, in eval mode, on ``device``.

    Raises:
        ValueError: a prior made for another geometry or vertex order, measurements of another
            shape or channel count, as many masks as measurements not given, other settings or
            measurements than a previous run in ``out``, an unusable device or folder.

    Shapes:
        measurements.y ``(N, C, V)``.
    """
    cfg = _config(config)
    m = _check_measurements(prior, measurements, geometry)
    if cfg.flow.train_size is not None and cfg.flow.train_size < m.y.shape[0]:
        keep = torch.arange(cfg.flow.train_size)
        m = Measurements(m.y[keep], m.operator.select(keep), None if m.x is None else m.x[keep], m.description)
    dev = resolve_device(device)
    folder = output_folder(out)
    task = Task(name="custom", make_operator=lambda n, g: m.operator, description=dict(m.description),
                reconstruct=m.reconstruct, baselines=())
    workload = _workload(geometry, m.y[:0], str(m.description.get("source", "measurements")), {"kind": "none"},
                         [task])
    record = flow_record(workload, task, cfg)
    stored = read_config(folder / "config.json")
    if stored is not None:  # before measurements.pt is replaced
        check_same_run(stored, record, folder, unresolved={"flow": asdict(cfg.flow)})
    m.save(folder / "measurements.pt", geometry)
    save_geometry(geometry, folder / "geometry.npz")
    # the clean signals are not needed to train (the stage reads only y and the operator)
    train = Measured(m.x if m.x is not None else m.y, m.y, m.operator)
    return stage_flow(workload, task, cfg, prior.to(dev), train, folder, device=dev, progress=progress, folder=folder)


@dataclass
class PosteriorSamples:
    """Posterior statistics of a batch of measurements.

    Attributes:
        mean: Posterior mean ``(B, C, V)``.
        std: Per-vertex posterior standard deviation ``(B, C, V)``.
        draws: A few posterior draws ``(B, K, C, V)``.
        n: Draws the mean and standard deviation were computed from.
    """

    mean: Tensor
    std: Tensor
    draws: Tensor
    n: int


def sample_posterior(posterior: AmortizedPosterior, y: Tensor, operator: Operator, n: int = EvalConfig.n_posterior,
                     *, draws: int = 4, batch_size: int = EvalConfig.batch_size, chunk: int | None = EvalConfig.chunk,
                     generator: torch.Generator | None = None) -> PosteriorSamples:
    """Posterior mean, standard deviation and ``draws`` draws for measurements ``y``.

    The draws are the benchmarks' (:func:`~manifold_ps.benchmarking.evaluate.run_sampler`): ``n``
    per measurement, drawn ``chunk`` at a time for ``batch_size`` measurements at a time, in
    order; the mean and standard deviation accumulate in float64, and ``draws`` are the first of
    them. With the generator seeded as a benchmark's evaluation (``seed + eval.seed_offset``) and
    its ``eval`` settings (the defaults here are those of :class:`~manifold_ps.config.EvalConfig`),
    these are the draws the benchmark scores: the first is its one-draw estimate.

    Args:
        posterior: A trained sampler (:func:`train_posterior`, or
            :meth:`~manifold_ps.flows.AmortizedPosterior.load`).
        y: Measurements ``(B, C, V)`` (float64 is converted).
        operator: Their operator (e.g. ``Inpainting(mask, sigma)``, one mask per row).
        n: Draws for the mean and standard deviation (at least 2).
        draws: Draws kept (at least 1, at most ``n``).
        batch_size: Measurements per flow pass.
        chunk: Draws per flow pass (bounds the memory; ``None``: all ``n``).
        generator: Seeds the draws.

    Returns:
        The :class:`PosteriorSamples`.

    Shapes:
        y ``(B, C, V)`` -> mean, std ``(B, C, V)``, draws ``(B, draws, C, V)``.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2 for a standard deviation, got {n}")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    y = y.float() if y.is_floating_point() and y.dtype != torch.float32 else y
    dev = next(posterior.parameters()).device
    y, op = y.to(dev), operator.float().to(dev)
    with torch.no_grad():
        out = run_sampler(posterior, y, op, n=n, batch_size=batch_size, chunk=chunk, keep=min(draws, n),
                          generator=generator)
    return PosteriorSamples(out.mean.cpu(), out.std.cpu(), out.kept.cpu(), n)
