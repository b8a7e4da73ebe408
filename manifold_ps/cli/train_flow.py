"""``manifold-ps train-flow``: distil a trained diffusion prior into an amortized posterior sampler.

Examples::

    manifold-ps train-flow --prior runs/torus-prior/prior.pt --signals fields.npy --operator inpainting \
        --missing 0.3 --sigma 0.1 --out runs/torus-flow
    manifold-ps train-flow --prior runs/t2m-prior/prior.pt --measurements stations.nc --sigma 0.05 --out runs/t2m-flow
    manifold-ps train-flow --prior runs/prior/prior.pt --measurements y.npy --mask mask.npy --sigma 0.1 --out runs/flow
    manifold-ps train-flow --workload bunny-mnist --prior runs/prior/prior.pt --profile cpu --out runs/flow

The sampler learns from measurements only. Either simulate them from clean signals with a named
operator (``--signals FILE --operator inpainting|denoising|heat-blur`` with ``--missing``,
``--sigma``, ``--blur-time``; masks and noise are seeded with ``seed``, so a rerun makes the same
ones), or give your own: ``--measurements FILE`` holding ``y`` (and ``mask``, ``True`` = observed;
NaN in ``y`` marks unobserved vertices too) as ``.npz`` / ``.pt`` keys or NetCDF variables, or a
``y`` file plus ``--mask FILE``, with their noise level ``--sigma``. Without either, the built-in
``--workload bunny-mnist`` preset generates its measurements (and reports PSNR on held-out ones).

The geometry is read from ``geometry.npz`` beside ``--prior`` (written by ``train-prior``), or
given again with ``--mesh`` / ``--grid`` / ``--icosphere`` / ``--image``; a prior made for
another geometry or vertex order is refused. The settings are the ``[flow]`` and ``[eval]``
sections (and ``seed``) of :class:`manifold_ps.config.Config`, from ``--profile``, ``--config
FILE.toml``, the shortcut flags and ``--set``, as in the benchmarks (this is their
:func:`~manifold_ps.benchmarking.pipeline.stage_flow`). The folder gets ``config.json`` (the
resolved settings and how the measurements were made), ``measurements.pt`` (what ``manifold-ps
sample`` reads back), ``geometry.npz``, ``checkpoint.pt`` and the sampler ``posterior.pt``
(load it with :meth:`manifold_ps.flows.AmortizedPosterior.load`). Rerunning the command resumes
("resuming from step N of M"); other measurements or result-changing settings are refused,
naming each difference.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

__all__ = ["add_parser", "run", "SHORTCUTS"]

SHORTCUTS: dict[str, str] = {
    "--train-steps|--max-steps": "flow.train_steps",
    "--lr": "flow.lr",
    "--t-min": "flow.t_min",
    "--train-size": "flow.train_size",
    "--n-eval": "eval.n_eval",
    "--amp": "flow.amp",
    "--seed": "seed",
}
"""Convenience flags of ``train-flow`` and the field each sets."""

_WORKLOADS = ("bunny-mnist",)
"""The workloads ``train-flow`` can generate measurements for (so far)."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``train-flow`` sub-command."""
    from ..config import add_config_arguments, add_shortcuts
    from ..io import OPERATORS
    from ._common import add_geometry_arguments, add_run_arguments

    p = subparsers.add_parser("train-flow", help="distil a diffusion prior into an amortized conditional flow",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prior", required=True, type=Path, help="trained prior file (prior.pt of train-prior)")
    p.add_argument("--out", required=True, type=Path,
                   help="run folder (checkpoint.pt, measurements.pt, geometry.npz, config.json, posterior.pt)")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--measurements", type=Path, metavar="FILE",
                      help="your measurements: y (and mask) in .npz/.pt/.nc, or a y file with --mask")
    data.add_argument("--signals", type=Path, metavar="FILE",
                      help="clean signals to simulate measurements from with --operator")
    data.add_argument("--workload", choices=_WORKLOADS, default=None,
                      help="built-in preset: its measurements are generated (the default without the two above)")
    p.add_argument("--mask", type=Path, metavar="FILE", help="mask file of --measurements (True/1 = observed)")
    p.add_argument("--variable", default=None, help="array / variable of --signals to read when the file holds several")
    p.add_argument("--operator", choices=OPERATORS, default="inpainting",
                   help="operator that simulates measurements from --signals (default: inpainting)")
    p.add_argument("--missing", type=float, default=0.3, help="missing fraction of inpainting (default 0.3)")
    p.add_argument("--sigma", type=float, default=None,
                   help="measurement noise sigma_y (simulated: default 0.1; needed with --measurements)")
    p.add_argument("--blur-time", type=float, default=1e-3, help="diffusion time of heat-blur (default 1e-3)")
    p.add_argument("--blind", action="store_true",
                   help="--workload only: missing fraction drawn per sample from --missing-range, flow sees y only")
    p.add_argument("--missing-range", type=float, nargs=2, default=(0.1, 0.5), help="--workload --blind only")
    add_geometry_arguments(p, required=False)
    add_config_arguments(p)
    p.set_defaults(shortcuts=add_shortcuts(p, SHORTCUTS))
    add_run_arguments(p)
    p.set_defaults(func=run)
    return p


def _run_own_data(args: argparse.Namespace) -> int:
    """train-flow on the user's measurements (or ones simulated from the user's signals)."""
    from ..api import output_folder, resolve_device, train_posterior
    from ..config import config_from_args
    from ..io import load_measurements, load_signals, read_geometry, simulate_measurements
    from ..priors.diffusion import DiffusionPrior
    from ._common import geometry_from_args

    config = config_from_args(args, args.shortcuts)
    device = resolve_device(args.device)
    out = output_folder(args.out)
    geometry = geometry_from_args(args)
    if geometry is None:
        beside = Path(args.prior).parent / "geometry.npz"
        if not beside.is_file():
            raise ValueError(f"no geometry.npz beside {args.prior}: give the geometry of the prior again "
                             "(--mesh, --grid, --icosphere or --image)")
        geometry = read_geometry(beside)
    prior = DiffusionPrior.load(args.prior, geometry=geometry)
    if args.measurements is not None:
        if args.sigma is None:
            raise ValueError(f"--sigma is needed with --measurements: the noise level of y in {args.measurements}")
        meas = load_measurements(args.measurements, geometry, mask=args.mask, sigma=args.sigma)
    else:
        if args.mask is not None:
            raise ValueError("--mask goes with --measurements")
        signals = load_signals(args.signals, geometry, variable=args.variable)
        meas = simulate_measurements(signals.x, geometry, args.operator, missing=args.missing,
                                     sigma=0.1 if args.sigma is None else args.sigma, blur_time=args.blur_time,
                                     seed=config.seed, source=signals.source)
    posterior = train_posterior(prior, meas, config, out, geometry=geometry, device=device,
                                progress=not args.no_progress)
    print(json.dumps({"posterior": str(out / "posterior.pt"), "measurements": str(out / "measurements.pt"),
                      "config": str(out / "config.json"), "num_measurements": int(meas.y.shape[0]),
                      "steps": posterior.metadata.get("train_steps"), "fingerprint": posterior.fingerprint}))
    return 0


def _bunny_mnist(n_train: int | None, n_test: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """The bunny, the flow's training signals and the held-out ones, split as the benchmark splits
    the 10k test digits (:func:`manifold_ps.benchmarking.workloads.bunny_mnist`)."""
    from ..datasets import BunnyMNIST, bunny_path
    from ..geometry import Mesh

    geometry = Mesh.from_file(bunny_path("res3"))
    n_train = 10_000 - n_test if n_train is None else n_train
    signals = BunnyMNIST(geometry.positions, "test", num_samples=n_train + n_test).signals
    return geometry, signals[:n_train].float(), signals[n_train: n_train + n_test].float()


def _measurements(args: argparse.Namespace, config: Any, path: Path) -> dict[str, Any]:
    """Generate the run's measurements once (fixed seed) or load them."""
    from .._files import atomic_open
    from ..operators import Inpainting, RandomInpainting, operator_from_config

    if path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        blob["train_operator"] = operator_from_config(blob["train_operator"])
        blob["test_operator"] = operator_from_config(blob["test_operator"])
        return blob
    geometry, train_x, test_x = _bunny_mnist(config.flow.train_size, config.eval.n_eval)
    g = torch.Generator().manual_seed(config.seed)
    V = geometry.num_vertices
    missing = tuple(args.missing_range) if args.blind else (args.missing, args.missing)
    train_op, test_op = (RandomInpainting(V, missing, args.sigma).draw(x.shape[0], generator=g) for x in (train_x, test_x))
    blob = {
        "seed": config.seed,
        "fingerprint": geometry.fingerprint(),
        "train_y": train_op(train_x, generator=g),
        "test_y": test_op(test_x, generator=g),
        "test_x": test_x,  # for evaluation only; never used in training
        "train_operator": train_op.config(),
        "test_operator": test_op.config(),
        "blind": bool(args.blind),
    }
    with atomic_open(path) as fh:
        torch.save(blob, fh)
    blob["train_operator"] = Inpainting(blob["train_operator"]["mask"], args.sigma)
    blob["test_operator"] = Inpainting(blob["test_operator"]["mask"], args.sigma)
    blob["geometry"] = geometry
    return blob


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; returns the exit status."""
    if args.measurements is not None or args.signals is not None:
        return _run_own_data(args)
    args.workload = args.workload or "bunny-mnist"
    args.sigma = 0.1 if args.sigma is None else args.sigma
    from ..config import check_same_run, config_from_args, read_config, write_config
    from ..datasets import bunny_path
    from ..flows import (AmortizedPosterior, ConditionalRealNVP, HarmonicFill, condition_channels,
                         prepare_data, train_amortized)
    from ..geometry import Mesh
    from ..priors.diffusion import DiffusionPrior

    from ..api import output_folder, resolve_device

    config = config_from_args(args, args.shortcuts)
    device = resolve_device(args.device)
    out = output_folder(args.out)
    record = {"workload": args.workload, "profile": config.profile, "seed": config.seed,
              "measurements": {"blind": bool(args.blind), "missing": args.missing,
                               "missing_range": list(args.missing_range), "sigma": args.sigma,
                               "n_eval": config.eval.n_eval},
              "flow": asdict(config.flow.resolved())}
    stored = read_config(out / "config.json")
    if stored is not None:
        check_same_run(stored, record, out, unresolved={"flow": asdict(config.flow)})
    write_config(out / "config.json", record)
    meas = _measurements(args, config, out / "measurements.pt")
    geometry = meas.get("geometry") or Mesh.from_file(bunny_path("res3"))
    if geometry.fingerprint() != meas["fingerprint"]:
        raise ValueError(f"{out / 'measurements.pt'} was made for another geometry")
    prior = DiffusionPrior.load(args.prior, geometry=geometry)
    train_op = meas["train_operator"]
    condition = "measurement" if meas["blind"] else "operator"
    reconstruct = None if meas["blind"] else HarmonicFill.from_geometry(geometry)
    _, evecs = geometry.eigenbasis(config.flow.geometry_features + 1)
    flow = ConditionalRealNVP(
        prior.channels, prior.layout,
        condition_channels(prior.channels, train_op, condition=condition, reconstruct=reconstruct is not None),
        **config.flow.network_kwargs(), geometry_features=evecs[:, 1:].float(), seed=config.seed,
    )
    posterior = AmortizedPosterior(
        flow, condition=condition, reconstruct=reconstruct,
        operator_config={k: v for k, v in train_op.config().items() if k != "mask"} | {
            "missing": args.missing_range if meas["blind"] else args.missing},
        normalisation={"kind": "minmax", "low": 0.0, "high": 1.0, "unit": "intensity"},
        fingerprint=geometry.fingerprint(),
        metadata={"workload": args.workload, "profile": config.profile, "prior": str(args.prior), "config": record},
    )
    data = prepare_data(posterior, meas["train_y"], train_op)
    tic = time.perf_counter()
    trainer = train_amortized(
        posterior, prior, meas["train_y"], train_op, out_dir=out, data=data, seed=config.seed,
        progress=not args.no_progress, device=device, config={"run": record},
        **config.flow.trainer_kwargs(meas["train_y"].shape[0]),
    )
    train_s = time.perf_counter() - tic
    if not trainer.dist.is_main:
        trainer.close()
        return 0
    final = trainer.ema_model
    final.metadata["train_seconds_last_invocation"] = train_s
    final.cpu().eval()
    final.save(out / "posterior.pt")
    # quick evaluation on held-out measurements
    test_y, test_op, test_x = meas["test_y"], meas["test_operator"], meas["test_x"]
    g = torch.Generator().manual_seed(config.seed + config.eval.seed_offset)
    one = final.sample(test_y, test_op, 1, generator=g)[:, 0]
    mean, _ = final.posterior_mean_std(test_y, test_op, config.eval.n_posterior, chunk=32, generator=g)

    def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
        mse = (a.clamp(0, 1) - b).square().flatten(1).mean(-1)
        return float((10 * torch.log10(1.0 / mse.clamp_min(1e-12))).mean())

    report = {"psnr_n1": psnr(one, test_x), "psnr_mean": psnr(mean, test_x), "n_posterior": config.eval.n_posterior,
              "psnr_reconstruction": psnr(final.prepare(test_y, test_op)[1], test_x) if final.reconstruct else math.nan,
              "train_seconds": train_s, "steps": trainer.step, "skipped_steps": trainer.skipped_steps}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    trainer.close()
    return 0
