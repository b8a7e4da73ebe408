"""``manifold-ps train-flow``: distil a trained diffusion prior into an amortized conditional flow.

Example::

    manifold-ps train-flow --workload bunny-mnist --prior runs/prior/prior.pt --profile cpu --out runs/flow
    manifold-ps train-flow --prior runs/prior/prior.pt --t-min 0.01 --set flow.n_z=4 --out runs/flow-tmin001

The settings are the ``[flow]`` and ``[eval]`` sections (and ``seed``) of
:class:`manifold_ps.config.Config`, from ``--profile``, ``--config FILE.toml``, the shortcut flags
and ``--set``, as in the benchmarks (the flow is built and trained with the same
:meth:`~manifold_ps.config.FlowConfig.network_kwargs` / ``trainer_kwargs``). The measurements are
generated once with a fixed seed and stored in ``OUT/measurements.pt`` (only ``y`` and the
operator are used for training; the clean test signals are kept there for evaluation); the
resolved settings, with the measurement options, are written to ``OUT/config.json``. Rerunning
the command resumes from ``OUT/checkpoint.pt``; a rerun with other result-changing settings is
refused, naming them. The trained sampler is written to ``OUT/posterior.pt`` (load it with
:meth:`manifold_ps.flows.AmortizedPosterior.load`).
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

    p = subparsers.add_parser("train-flow", help="distil a diffusion prior into an amortized conditional flow",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=_WORKLOADS, default="bunny-mnist")
    p.add_argument("--prior", required=True, type=Path, help="trained prior file (DiffusionPrior.save)")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoint, measurements, posterior.pt)")
    add_config_arguments(p)
    p.set_defaults(shortcuts=add_shortcuts(p, SHORTCUTS))
    p.add_argument("--blind", action="store_true",
                   help="blind mode: missing fraction drawn per sample from --missing-range, flow sees y only")
    p.add_argument("--missing", type=float, default=0.3, help="missing fraction (non-blind)")
    p.add_argument("--missing-range", type=float, nargs=2, default=(0.1, 0.5))
    p.add_argument("--sigma", type=float, default=0.1, help="measurement noise sigma_y")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    return p


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
    from ..config import check_same_run, config_from_args, read_config, write_config
    from ..datasets import bunny_path
    from ..flows import (AmortizedPosterior, ConditionalRealNVP, HarmonicFill, condition_channels,
                         prepare_data, train_amortized)
    from ..geometry import Mesh
    from ..priors.diffusion import DiffusionPrior

    config = config_from_args(args, args.shortcuts)
    out = Path(args.out)
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
        progress=not args.no_progress, device=args.device, config={"run": record},
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
