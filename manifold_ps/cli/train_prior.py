"""``manifold-ps train-prior``: train a diffusion prior on your own signals or a built-in workload.

Examples::

    manifold-ps train-prior --mesh torus.ply --signals fields.npy --out runs/torus-prior
    manifold-ps train-prior --grid t2m.nc --signals t2m.nc --variable t2m --out runs/t2m-prior
    manifold-ps train-prior --icosphere 3 --signals x.pt --profile smoke --out runs/ico
    manifold-ps train-prior --image 32x32 --signals digits.npz --set prior.lr=1e-3 --out runs/img
    manifold-ps train-prior --workload bunny-mnist --profile cpu --out runs/prior-bunny
    torchrun --nproc_per_node=4 "$(which manifold-ps)" train-prior --workload era5-imputation --profile paper --out runs/era5

The geometry is one of ``--mesh`` (PLY, OBJ, OFF, STL), ``--grid`` (the latitude/longitude
coordinates of a NetCDF file), ``--icosphere N`` or ``--image HxW``; ``--signals`` holds the
clean training signals, ``(N, V)`` or ``(N, C, V)`` in the geometry's vertex order (on grids also
``(N, H, W)`` / ``(N, C, H, W)``), as ``.npy``, ``.npz``, ``.pt``, NetCDF or zarr. The shape is
checked against the geometry, float64 is converted, NaN is refused; the data range is recorded
in ``OUT/data.json``. A built-in ``--workload`` is a preset of the same stage
(:func:`manifold_ps.benchmarking.pipeline.stage_prior`): the ``smoke`` prior trained here is the
one ``benchmarks/bunny_mnist.py --profile smoke`` trains.

The settings are the ``[prior]`` section (and ``seed``) of :class:`manifold_ps.config.Config`:
the ``--profile``, then the ``--config`` file, the shortcut flags and ``--set`` over it. The
resolved settings are written to ``OUT/config.json``. Rerunning the same command resumes from
``OUT/checkpoint.pt`` ("resuming from step N of M"; a larger ``prior.train_steps`` extends a
finished run); other data or other result-changing settings are refused, naming each difference.
The trained (EMA) prior is written to ``OUT/prior.pt`` (load it with
:meth:`manifold_ps.priors.DiffusionPrior.load`) and the geometry to ``OUT/geometry.npz``, where
``train-flow`` finds it.
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
    from ._common import add_geometry_arguments, add_run_arguments

    parser = subparsers.add_parser(
        "train-prior", help="train a diffusion prior (resumes when rerun)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = add_geometry_arguments(parser, required=True)
    group.add_argument("--workload", choices=sorted(WORKLOADS),
                       help="a built-in benchmark workload (its geometry and training signals) instead")
    parser.add_argument("--signals", type=Path, metavar="FILE",
                        help="clean training signals (.npy, .npz, .pt, .nc, .zarr) on the geometry")
    parser.add_argument("--variable", default=None,
                        help="array / variable of --signals to read when the file holds several")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder (checkpoint.pt, prior.pt, config.json, data.json, geometry.npz)")
    add_config_arguments(parser)
    parser.set_defaults(shortcuts=add_shortcuts(parser, SHORTCUTS))
    add_run_arguments(parser)
    parser.add_argument("--tensorboard", action="store_true", help="write TensorBoard scalars to OUT/tensorboard")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Execute ``train-prior`` with parsed arguments; returns the exit status."""
    from ..api import output_folder, resolve_device, train_prior_on
    from ..benchmarking.workloads import profile_defaults
    from ..config import config_from_args
    from ._common import geometry_from_args

    # a built-in workload's own settings of the profile, as its benchmark script applies them
    defaults = {} if args.workload is None else profile_defaults(args.workload, args.profile)
    config = config_from_args(args, args.shortcuts, defaults=defaults)
    device = resolve_device(args.device)
    out = output_folder(args.out)
    if args.workload is not None:
        if args.signals is not None:
            raise ValueError("--signals goes with a geometry (--mesh/--grid/--icosphere/--image), not --workload")
        from ..benchmarking.pipeline import stage_prior
        from ..benchmarking.workloads import get_workload
        from ..io import save_geometry

        workload = get_workload(args.workload)(config)
        trained = stage_prior(workload, config, out, device=device, progress=not args.no_progress, folder=out,
                              tensorboard=args.tensorboard)
        save_geometry(workload.geometry, out / "geometry.npz")
    else:
        if args.signals is None:
            raise ValueError("--signals FILE is needed with a geometry: the clean signals the prior learns")
        from ..io import load_signals

        geometry = geometry_from_args(args)
        signals = load_signals(args.signals, geometry, variable=args.variable)
        trained = train_prior_on(geometry, signals, config, out, device=device, progress=not args.no_progress,
                                 tensorboard=args.tensorboard)
    summary = {"prior": str(out / "prior.pt"), "config": str(out / "config.json"),
               "train_steps": config.prior.train_steps, "num_vertices": trained.num_vertices,
               "fingerprint": trained.fingerprint, "parameters": sum(p.numel() for p in trained.parameters())}
    print(json.dumps(summary))
    return 0
