"""``manifold-ps train-prior``: train a diffusion prior for one of the acceptance workloads.

Examples::

    manifold-ps train-prior --workload bunny-mnist --profile cpu --out runs/prior-bunny
    torchrun --nproc_per_node=4 "$(which manifold-ps)" train-prior --workload era5 --profile paper --out runs/era5

Rerunning the same command resumes from ``OUT/checkpoint.pt``; the trained (EMA) prior is written
to ``OUT/prior.pt`` and loads with :meth:`manifold_ps.priors.DiffusionPrior.load`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

__all__ = ["add_parser", "PROFILES", "Profile", "load_workload", "run"]

WORKLOADS = ("bunny-mnist", "era5", "mnist32")


@dataclass(frozen=True)
class Profile:
    """Training defaults of a profile (each can be overridden on the command line)."""

    preset: str
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    ema_decay: float
    num_samples: int | None
    checkpoint_every: int
    log_every: int
    amp: bool


PROFILES: dict[str, Profile] = {
    # seconds: checks the whole pipeline
    "smoke": Profile("tiny", 20, 16, 1e-3, 0, 0.9, 256, 10, 5, False),
    # CPU budget: 2000 steps of batch 64 (about 45 min at the ~47 samples/s measured on one busy
    # core for the bunny; quality of this budget not yet measured)
    "cpu": Profile("cpu", 2000, 64, 1e-3, 100, 0.999, None, 250, 25, False),
    # the paper's budget (appendix table 5), for a GPU
    "paper": Profile("paper", 500_000, 64, 2e-4, 5000, 0.9999, None, 5000, 100, True),
}
"""Profiles of ``--profile``; the ``paper`` steps are those of bunny-MNIST (360k for ERA5)."""

_PAPER_STEPS = {"bunny-mnist": 500_000, "era5": 360_000, "mnist32": 1_000_000}


def load_workload(workload: str, *, num_samples: int | None = None, era5_dataset: str = "ipsl") -> tuple[Any, torch.Tensor]:
    """Geometry and training signals ``(N, C, V)`` of a workload.

    Args:
        workload: ``"bunny-mnist"`` (MNIST painted on the 1889-vertex bunny), ``"era5"`` (2 m
            temperature on the 4-degree GASP grid; offline stand-in data, see
            :func:`manifold_ps.datasets.load_gridded_temperature`) or ``"mnist32"`` (MNIST padded
            to a 32 x 32 image grid).
        num_samples: Keep only the first ``num_samples`` training signals.
        era5_dataset: Name of the gridded temperature file used for ``"era5"``.

    Returns:
        ``(geometry, signals)``.
    """
    from .. import datasets
    from ..geometry import ImageGrid, Mesh, SphereGrid

    if workload == "bunny-mnist":
        mesh = Mesh.from_file(datasets.bunny_path("res3"))
        signals = datasets.BunnyMNIST(mesh.positions, "train", num_samples=num_samples).signals
        return mesh, signals
    if workload == "era5":
        grid = SphereGrid.gasp()
        values = datasets.load_gridded_temperature(era5_dataset, split="train").values
        return grid, values[:num_samples] if num_samples else values
    if workload == "mnist32":
        grid = ImageGrid(32, 32)
        images, _ = datasets.mnist_padded_32("train")
        images = images[:num_samples] if num_samples else images
        return grid, images.reshape(images.shape[0], 1, 32 * 32)
    raise ValueError(f"workload must be one of {WORKLOADS}, got {workload!r}")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``train-prior`` sub-command."""
    parser = subparsers.add_parser(
        "train-prior", help="train a diffusion prior (resumes when rerun)",
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--workload", choices=WORKLOADS, required=True)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    parser.add_argument("--out", type=Path, required=True, help="output folder (checkpoint.pt, prior.pt, logs)")
    parser.add_argument("--steps", type=int, default=None, help="total optimizer steps (profile default)")
    parser.add_argument("--batch-size", type=int, default=None, help="global batch size (profile default)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (profile default)")
    parser.add_argument("--num-samples", type=int, default=None, help="use only this many training signals")
    parser.add_argument("--geometry-channels", type=int, default=0,
                        help="number of Laplacian eigenvectors fed as extra input channels")
    parser.add_argument("--parameterization", choices=("edm", "x0", "eps"), default="edm")
    parser.add_argument("--era5-dataset", default="ipsl", help="gridded temperature file for --workload era5")
    parser.add_argument("--device", default=None, help="training device (default: cuda if available)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tensorboard", action="store_true", help="write TensorBoard scalars to OUT/tensorboard")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Execute ``train-prior`` with parsed arguments; returns the exit status."""
    from ..priors import build_prior, train_prior

    profile = PROFILES[args.profile]
    if args.profile == "paper":
        profile = replace(profile, steps=_PAPER_STEPS[args.workload],
                          batch_size=128 if args.workload == "mnist32" else profile.batch_size)
    steps = args.steps or profile.steps
    batch_size = args.batch_size or profile.batch_size
    lr = args.lr or profile.lr
    num_samples = args.num_samples or profile.num_samples

    torch.manual_seed(args.seed)
    geometry, data = load_workload(args.workload, num_samples=num_samples, era5_dataset=args.era5_dataset)
    prior = build_prior(geometry, channels=data.shape[1], preset=profile.preset,  # type: ignore[arg-type]
                        geometry_channels=args.geometry_channels, parameterization=args.parameterization)
    config = {"workload": args.workload, "profile": args.profile, "num_samples": num_samples,
              "geometry_channels": args.geometry_channels, "seed": args.seed}
    args.out.mkdir(parents=True, exist_ok=True)
    trained = train_prior(
        prior, data, out_dir=args.out, steps=steps, batch_size=batch_size, lr=lr,
        warmup_steps=min(profile.warmup_steps, steps // 10), lr_schedule="cosine", ema_decay=profile.ema_decay,
        amp=profile.amp, checkpoint_every=profile.checkpoint_every, log_every=profile.log_every,
        tensorboard=args.tensorboard, spike_guard=100.0, seed=args.seed, config=config,
        progress=not args.no_progress, device=args.device,
    )
    summary = {"prior": str(args.out / "prior.pt"), "steps": steps, "num_vertices": trained.num_vertices,
               "fingerprint": trained.fingerprint, "parameters": sum(p.numel() for p in trained.parameters())}
    print(json.dumps(summary))
    return 0
