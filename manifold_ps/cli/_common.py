"""Options shared by the sub-commands: the geometry, the device (private)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_geometry_arguments", "geometry_from_args", "geometry_from_args_or_beside", "add_run_arguments"]


def add_geometry_arguments(parser: argparse.ArgumentParser, *, required: bool) -> argparse._MutuallyExclusiveGroup:
    """``--mesh FILE | --grid FILE.nc | --icosphere N | --image HxW`` (and ``--lat`` / ``--lon``)."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--mesh", type=Path, metavar="FILE",
                       help="triangle mesh file (PLY, OBJ, OFF, STL); the signals follow its vertex order")
    group.add_argument("--grid", type=Path, metavar="FILE.nc",
                       help="NetCDF (or zarr) file whose latitude/longitude coordinates make a regular global grid; "
                            "signals are row-major (lat, lon)")
    group.add_argument("--icosphere", type=int, metavar="N", help="icosphere with N subdivisions (10*4^N+2 vertices)")
    group.add_argument("--image", metavar="HxW", help="H x W pixel grid (signals row-major)")
    parser.add_argument("--lat", default=None, help="latitude coordinate name in --grid (default: lat/latitude/...)")
    parser.add_argument("--lon", default=None, help="longitude coordinate name in --grid (default: lon/longitude/...)")
    return group


def geometry_from_args(args: argparse.Namespace) -> Any:
    """The geometry of ``--mesh`` / ``--grid`` / ``--icosphere`` / ``--image``, or ``None``."""
    from ..io import load_geometry

    given = {k: getattr(args, k) for k in ("mesh", "grid", "icosphere", "image") if getattr(args, k, None) is not None}
    if not given:
        return None
    return load_geometry(**given, lat=args.lat, lon=args.lon)


def geometry_from_args_or_beside(args: argparse.Namespace, model: str | Path, what: str) -> Any:
    """The geometry given on the command line, else the ``geometry.npz`` saved beside ``model``.

    Raises:
        ValueError: neither is there (the message names ``model``, described as ``what``).
    """
    from ..io import read_geometry

    geometry = geometry_from_args(args)
    if geometry is not None:
        return geometry
    beside = Path(model).parent / "geometry.npz"
    if not beside.is_file():
        raise ValueError(f"no geometry.npz beside {model}: give the geometry of the {what} again "
                         "(--mesh, --grid, --icosphere or --image)")
    return read_geometry(beside)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--no-progress``."""
    parser.add_argument("--device", default=None,
                        help="cpu, cuda, cuda:1 ... (default: cuda if available); a CUDA device on a CPU-only "
                             "PyTorch build is refused with a message")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
