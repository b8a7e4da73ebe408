"""``manifold-ps train-prior``: train the diffusion prior of one of the benchmark workloads.

Examples::

    manifold-ps train-prior --workload bunny-mnist --profile cpu --out runs/prior-bunny
    manifold-ps train-prior --workload era5-imputation --config my.toml --set prior.lr=1e-4 --out runs/era5
    torchrun --nproc_per_node=4 "$(which manifold-ps)" train-prior --workload era5-imputation --profile paper --out runs/era5

The settings are the ``[prior]`` section (and ``seed``) of :class:`manifold_ps.config.Config`:
the ``--profile``, then the ``--config`` file, the shortcut flags and ``--set`` over it. This is
the benchmarks' own prior stage (:func:`manifold_ps.benchmarking.pipeline.stage_prior`): the
``smoke`` prior trained here is the one ``benchmarks/bunny_mnist.py --profile smoke`` trains.
The resolved settings are written to ``OUT/config.json``. Rerunning the same command resumes
from ``OUT/checkpoint.pt`` (a larger ``prior.train_steps`` extends a finished run; other
differing settings are refused, naming them); the trained (EMA) prior is written to
``OUT/prior.pt`` and loads with :meth:`manifold_ps.priors.DiffusionPrior.load`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run", "SHORTCUTS"]

SHORTCUTS: dict[str, str] = {
    "--train-steps|--steps": "prior.train_steps",
    "--batch-size": "prior.batch_size",
    "--lr": "prior.lr",
    "--train-size|--num-samples": "prior.train_size",
    "--minutes": "prior.minutes",
    "--geometry-channels": "prior.geometry_channels",
    "--parameterization": "prior.parameterization",
    "--seed": "seed",
}
"""Convenience flags of ``train-prior`` and the field each sets."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``train-prior`` sub-command."""
    from ..benchmarking.workloads import WORKLOADS
    from ..config import add_config_arguments, add_shortcuts

    parser = subparsers.add_parser(
        "train-prior", help="train a diffusion prior (resumes when rerun)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    parser.add_argument("--out", type=Path, required=True, help="output folder (checkpoint.pt, prior.pt, config.json)")
    add_config_arguments(parser)
    parser.set_defaults(shortcuts=add_shortcuts(parser, SHORTCUTS))
    parser.add_argument("--device", default=None, help="training device (default: cuda if available)")
    parser.add_argument("--tensorboard", action="store_true", help="write TensorBoard scalars to OUT/tensorboard")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Execute ``train-prior`` with parsed arguments; returns the exit status."""
    import torch

    from ..benchmarking.pipeline import stage_prior
    from ..benchmarking.workloads import get_workload
    from ..config import config_from_args

    config = config_from_args(args, args.shortcuts)
    workload = get_workload(args.workload)(config)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(args.out)
    trained = stage_prior(workload, config, out, device=device, progress=not args.no_progress, folder=out,
                          tensorboard=args.tensorboard)
    summary = {"prior": str(out / "prior.pt"), "config": str(out / "config.json"),
               "train_steps": config.prior.train_steps, "num_vertices": trained.num_vertices,
               "fingerprint": trained.fingerprint, "parameters": sum(p.numel() for p in trained.parameters())}
    print(json.dumps(summary))
    return 0
