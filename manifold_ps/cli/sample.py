"""``manifold-ps sample``: posterior mean, standard deviation and draws for measurements, as NetCDF.

Examples::

    manifold-ps sample --posterior runs/torus-flow/posterior.pt --measurements new.npz --n 128 --out post.nc
    manifold-ps sample --posterior runs/t2m-flow/posterior.pt --measurements y.npy --mask mask.npy \\
        --out post.nc --plot post.png
    manifold-ps sample --posterior runs/torus-flow/posterior.pt \\
        --measurements runs/torus-flow/measurements.pt --first 8 --out train8.nc

``--measurements`` is a file of ``y`` plus ``mask`` in the formats ``train-flow`` reads (``.npz``
/ ``.pt`` keys or NetCDF variables ``y`` and ``mask``, a ``y`` file with ``--mask FILE``, NaN in
``y`` at unobserved vertices), or the ``measurements.pt`` that ``train-flow`` stores in its folder.
The noise level is the sampler's training one unless ``--sigma`` is given. The geometry is read
from ``geometry.npz`` beside ``--posterior`` or given with ``--mesh`` / ``--grid`` / ... .

The draws are those a benchmark scores for the same measurements: with ``--seed`` its evaluation
seed (``seed + eval.seed_offset``, 7 by default) and its ``--n`` / ``--batch-size`` / ``--chunk``
(the defaults are the ``eval`` defaults), mean, std and draws are bit-identical to the benchmark's.

``--out`` is an xarray dataset (NetCDF) with ``mean`` and ``std`` ``(measurement, channel,
*space)``, ``draws`` ``(measurement, draw, channel, *space)``, and ``y`` / ``observed``;
``space`` is ``(lat, lon)`` with degree coordinates on a lat/lon grid, ``(row, col)`` on an image
and ``vertex`` (with its position ``vertex_x``, ``vertex_y``, ``vertex_z``) on a mesh. ``--plot FILE.png`` draws the first
measurement: (truth, when stored,) measurement, draws, mean and std.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``sample`` sub-command."""
    from ..config import EvalConfig
    from ._common import add_geometry_arguments, add_run_arguments

    p = subparsers.add_parser("sample", help="posterior mean, std and draws of measurements, written as NetCDF",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--posterior", required=True, type=Path, help="trained sampler (posterior.pt of train-flow)")
    p.add_argument("--measurements", required=True, type=Path, metavar="FILE",
                   help="y (and mask) file, or the measurements.pt of a train-flow folder")
    p.add_argument("--mask", type=Path, metavar="FILE", help="mask file of --measurements (True/1 = observed)")
    p.add_argument("--sigma", type=float, default=None, help="noise level of y (default: the sampler's training one)")
    p.add_argument("--set", dest="which", default=None, metavar="NAME",
                   help="set of a stored measurements file with several (train, test)")
    p.add_argument("--first", type=int, default=None, metavar="K", help="use only the first K measurements")
    p.add_argument("--n", type=int, default=EvalConfig.n_posterior,
                   help=f"draws per measurement for the mean and std (default {EvalConfig.n_posterior}, "
                        "eval.n_posterior)")
    p.add_argument("--draws", type=int, default=4, help="draws kept in the output, the first of the --n (default 4)")
    p.add_argument("--batch-size", type=int, default=EvalConfig.batch_size,
                   help=f"measurements per flow pass (default {EvalConfig.batch_size}, eval.batch_size)")
    p.add_argument("--chunk", type=int, default=EvalConfig.chunk,
                   help=f"draws per flow pass (memory bound; default {EvalConfig.chunk}, eval.chunk)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the draws (default 0; a benchmark's evaluation draws with its seed + eval.seed_offset, "
                        "7 by default)")
    p.add_argument("--out", required=True, type=Path, metavar="FILE.nc", help="output NetCDF file")
    p.add_argument("--plot", type=Path, default=None, metavar="FILE.png", help="figure of the first measurement")
    add_geometry_arguments(p, required=False)
    add_run_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Execute ``sample``; returns the exit status."""
    import torch

    from ..api import output_folder, resolve_device, sample_posterior
    from ..flows import AmortizedPosterior
    from ..io import geometry_kind, load_measurements, posterior_dataset
    from ._common import geometry_from_args_or_beside

    device = resolve_device(args.device)
    output_folder(Path(args.out).parent)
    if args.plot is not None:
        output_folder(Path(args.plot).parent)
    geometry = geometry_from_args_or_beside(args, args.posterior, "posterior")
    posterior = AmortizedPosterior.load(args.posterior, fingerprint=geometry.fingerprint(), map_location=device)
    meas = load_measurements(args.measurements, geometry, mask=args.mask, sigma=args.sigma,
                             operator=posterior.operator_config, which=args.which)
    y, op, x = meas.y, meas.operator, meas.x
    if args.first is not None:
        keep = torch.arange(min(args.first, y.shape[0]))
        y, op, x = y[keep], op.select(keep), None if x is None else x[keep]
    g = torch.Generator(device).manual_seed(args.seed)
    out = sample_posterior(posterior, y, op, args.n, draws=args.draws, batch_size=args.batch_size, chunk=args.chunk,
                           generator=g)
    mask = op.mask.expand(y.shape[0], -1) if hasattr(op, "mask") and op.mask.ndim else None
    ds = posterior_dataset(geometry, out.mean, out.std, out.draws, y=y, mask=mask,
                           attrs={"posterior": str(args.posterior), "measurements": str(args.measurements),
                                  "n": int(args.n), "seed": int(args.seed), "fingerprint": geometry.fingerprint()})
    ds.to_netcdf(args.out)
    if args.plot is not None:
        _plot(args.plot, geometry, y, out, None if mask is None else mask[0], None if x is None else x[0, 0])
    print(json.dumps({"out": str(args.out), "measurements": int(y.shape[0]), "n": int(args.n),
                      "kind": geometry_kind(geometry), **({"plot": str(args.plot)} if args.plot else {})}))
    return 0


def _plot(path: Path, geometry: Any, y: Any, out: Any, observed: Any, truth: Any) -> None:
    from ..io import geometry_kind
    from ..viz import posterior_row_figure

    kind = geometry_kind(geometry)
    kw: dict[str, Any] = {"kind": kind}
    if kind == "mesh":
        kw.update(vertices=geometry.positions.numpy(), faces=geometry.faces.numpy())
    elif kind == "sphere":
        kw.update(latitudes=geometry.latitudes, longitudes=geometry.longitudes)
    else:
        kw.update(image_shape=geometry.shape)
    fig = posterior_row_figure(truth, y[0, 0], out.draws[0, :, 0], out.mean[0, 0], out.std[0, 0], observed=observed,
                               title=f"measurement 0: posterior from {out.n} draws", **kw)
    fig.savefig(path, dpi=80)
