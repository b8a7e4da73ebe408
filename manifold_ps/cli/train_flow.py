"""``manifold-ps train-flow``: distil a trained diffusion prior into an amortized conditional flow.

Example::

    manifold-ps train-flow --workload bunny-mnist --prior runs/prior/prior.pt --profile cpu --out runs/flow

The measurements are generated once with a fixed seed and stored in ``OUT/measurements.pt``
(only ``y`` and the operator are used for training; the clean test signals are kept there for
evaluation); rerunning the command resumes from ``OUT/checkpoint.pt``; the trained sampler is
written to ``OUT/posterior.pt`` (load it with :meth:`manifold_ps.flows.AmortizedPosterior.load`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["add_parser", "run", "PROFILES", "FlowProfile"]


@dataclass(frozen=True)
class FlowProfile:
    """Sizes and budgets of one training profile."""

    steps: int
    hidden: int
    blocks: int
    context_channels: int
    encoder_hidden: int
    max_steps: int
    batch_size: int
    n_z: int
    lr: float
    num_train: int
    num_test: int
    init_scale: float = 0.1
    t_min: float = 0.03
    n_time: int = 1


PROFILES: dict[str, FlowProfile] = {
    "smoke": FlowProfile(steps=2, hidden=8, blocks=1, context_channels=8, encoder_hidden=8, max_steps=3,
                         batch_size=4, n_z=2, lr=1e-3, num_train=16, num_test=4),
    "cpu": FlowProfile(steps=8, hidden=32, blocks=1, context_channels=16, encoder_hidden=32, max_steps=3000,
                       batch_size=16, n_z=2, lr=5e-4, num_train=10000, num_test=64),
    "paper": FlowProfile(steps=24, hidden=64, blocks=2, context_channels=32, encoder_hidden=64, max_steps=1_000_000,
                         batch_size=64, n_z=4, lr=1e-5, num_train=10000, num_test=1000),
}
"""Training profiles: ``smoke`` (seconds, CI), ``cpu`` (tens of minutes), ``paper`` (the paper's budget)."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``train-flow`` sub-command."""
    p = subparsers.add_parser("train-flow", help="distil a diffusion prior into an amortized conditional flow",
                              description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=["bunny-mnist"], default="bunny-mnist")
    p.add_argument("--prior", required=True, type=Path, help="trained prior file (DiffusionPrior.save)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoint, measurements, posterior.pt)")
    p.add_argument("--blind", action="store_true",
                   help="blind mode: missing fraction drawn per sample from --missing-range, flow sees y only")
    p.add_argument("--missing", type=float, default=0.3, help="missing fraction (non-blind)")
    p.add_argument("--missing-range", type=float, nargs=2, default=(0.1, 0.5))
    p.add_argument("--sigma", type=float, default=0.1, help="measurement noise sigma_y")
    p.add_argument("--max-steps", type=int, default=None, help="override the profile's step count")
    p.add_argument("--lr", type=float, default=None, help="override the profile's learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed of the measurements and of training")
    p.add_argument("--device", default=None)
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    return p


def _bunny_mnist(args: argparse.Namespace, profile: FlowProfile) -> tuple[Any, torch.Tensor, torch.Tensor]:
    from ..datasets import BunnyMNIST, bunny_path
    from ..geometry import Mesh

    geometry = Mesh.from_file(bunny_path("res3"))
    n = profile.num_train + profile.num_test
    signals = BunnyMNIST(geometry.positions, "test", num_samples=n).signals  # the paper: flow on the 10k test digits
    return geometry, signals[: profile.num_train], signals[profile.num_train: n]


def _measurements(args: argparse.Namespace, profile: FlowProfile, path: Path) -> dict[str, Any]:
    """Generate the run's measurements once (fixed seed) or load them."""
    from ..operators import Inpainting, RandomInpainting, operator_from_config

    if path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        blob["train_operator"] = operator_from_config(blob["train_operator"])
        blob["test_operator"] = operator_from_config(blob["test_operator"])
        return blob
    geometry, train_x, test_x = _bunny_mnist(args, profile)
    g = torch.Generator().manual_seed(args.seed)
    V = geometry.num_vertices
    ops = []
    for x in (train_x, test_x):
        if args.blind:
            ops.append(RandomInpainting(V, tuple(args.missing_range), args.sigma).draw(x.shape[0], generator=g))
        else:
            ops.append(RandomInpainting(V, (args.missing, args.missing), args.sigma).draw(x.shape[0], generator=g))
    train_op, test_op = ops
    blob = {
        "seed": args.seed,
        "fingerprint": geometry.fingerprint(),
        "train_y": train_op(train_x, generator=g),
        "test_y": test_op(test_x, generator=g),
        "test_x": test_x,  # for evaluation only; never used in training
        "train_operator": train_op.config(),
        "test_operator": test_op.config(),
        "blind": bool(args.blind),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    blob["train_operator"] = Inpainting(blob["train_operator"]["mask"], args.sigma)
    blob["test_operator"] = Inpainting(blob["test_operator"]["mask"], args.sigma)
    blob["geometry"] = geometry
    return blob


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; returns the exit status."""
    from ..datasets import bunny_path
    from ..flows import (AmortizedPosterior, ConditionalRealNVP, HarmonicFill, condition_channels,
                         prepare_data, train_amortized)
    from ..geometry import Mesh
    from ..priors.diffusion import DiffusionPrior

    profile = PROFILES[args.profile]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meas = _measurements(args, profile, out / "measurements.pt")
    geometry = meas.get("geometry") or Mesh.from_file(bunny_path("res3"))
    if geometry.fingerprint() != meas["fingerprint"]:
        raise ValueError(f"{out / 'measurements.pt'} was made for another geometry")
    prior = DiffusionPrior.load(args.prior, geometry=geometry)
    layout = prior.layout
    channels = prior.channels
    train_op = meas["train_operator"]
    condition = "measurement" if meas["blind"] else "operator"
    reconstruct = None if meas["blind"] else HarmonicFill.from_geometry(geometry)
    _, evecs = geometry.eigenbasis(9)
    flow = ConditionalRealNVP(
        channels, layout, condition_channels(channels, train_op, condition=condition, reconstruct=reconstruct is not None),
        steps=profile.steps, hidden=profile.hidden, blocks=profile.blocks, context_channels=profile.context_channels,
        encoder_hidden=profile.encoder_hidden, geometry_features=evecs[:, 1:].float(), init_scale=profile.init_scale,
        seed=args.seed,
    )
    posterior = AmortizedPosterior(
        flow, condition=condition, reconstruct=reconstruct,
        operator_config={k: v for k, v in train_op.config().items() if k != "mask"} | {
            "missing": args.missing_range if meas["blind"] else args.missing},
        normalisation={"kind": "minmax", "low": 0.0, "high": 1.0, "unit": "intensity"},
        fingerprint=geometry.fingerprint(),
        metadata={"workload": args.workload, "profile": args.profile, **asdict(profile)},
    )
    max_steps = args.max_steps or profile.max_steps
    lr = args.lr or profile.lr
    config = {"workload": args.workload, "profile": asdict(profile), "blind": meas["blind"], "seed": args.seed,
              "prior": str(args.prior), "sigma": args.sigma, "max_steps": max_steps, "lr": lr}
    data = prepare_data(posterior, meas["train_y"], train_op)
    tic = time.perf_counter()
    trainer = train_amortized(
        posterior, prior, meas["train_y"], train_op, out_dir=out, data=data, n_z=profile.n_z, n_time=profile.n_time,
        t_min=profile.t_min, batch_size=min(profile.batch_size, meas["train_y"].shape[0]), max_steps=max_steps,
        lr=lr, seed=args.seed, warmup_steps=min(100, max_steps // 10), lr_schedule="cosine", grad_clip=1.0,
        ema_decay=0.999, spike_guard=10.0, amp=args.amp, checkpoint_every=max(1, min(500, max_steps)),
        log_every=max(1, min(50, max_steps)), progress=not args.no_progress, device=args.device, config=config,
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
    g = torch.Generator().manual_seed(args.seed + 1)
    one = final.sample(test_y, test_op, 1, generator=g)[:, 0]
    mean, _ = final.posterior_mean_std(test_y, test_op, 128, chunk=32, generator=g)

    def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
        mse = (a.clamp(0, 1) - b).square().flatten(1).mean(-1)
        return float((10 * torch.log10(1.0 / mse.clamp_min(1e-12))).mean())

    report = {"psnr_n1": psnr(one, test_x), "psnr_n128": psnr(mean, test_x),
              "psnr_reconstruction": psnr(final.prepare(test_y, test_op)[1], test_x) if final.reconstruct else math.nan,
              "train_seconds": train_s, "steps": trainer.step, "skipped_steps": trainer.skipped_steps}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    trainer.close()
    return 0
