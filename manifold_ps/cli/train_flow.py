"""``manifold-ps train-flow``: distil a trained diffusion prior into an amortized posterior sampler.

Examples::

    manifold-ps train-flow --prior runs/torus-prior/prior.pt --signals fields.npy --operator inpainting \\
        --missing 0.3 --sigma 0.1 --out runs/torus-flow
    manifold-ps train-flow --prior runs/t2m-prior/prior.pt --measurements stations.nc --sigma 0.05 --out runs/t2m-flow
    manifold-ps train-flow --prior runs/prior/prior.pt --measurements y.npy --mask mask.npy --sigma 0.1 --out runs/flow
    manifold-ps train-flow --workload bunny-mnist --prior runs/prior/prior.pt --profile cpu --out runs/flow

The sampler learns from measurements only. Either simulate them from clean signals with a named
operator (``--signals FILE --operator inpainting|denoising|heat-blur`` with ``--missing``,
``--sigma``, ``--blur-time``; masks and noise are seeded with ``seed``, so a rerun makes the same
ones), or give your own: ``--measurements FILE`` holding ``y`` (and ``mask``, ``True`` = observed;
NaN in ``y`` marks unobserved vertices too) as ``.npz`` / ``.pt`` keys or NetCDF variables, or a
``y`` file plus ``--mask FILE``, with their noise level ``--sigma``. Without either, a built-in
``--workload`` (``bunny-mnist`` by default) is a preset of the same stages: the benchmark's
measurements of its task (``--task``, ``--blind``) are simulated and the flow is the one the
benchmark trains; ``OUT/report.json`` gives the PSNR on its held-out measurements.

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
from pathlib import Path
from typing import Any

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



def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``train-flow`` sub-command."""
    from ..benchmarking.workloads import WORKLOADS
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
    data.add_argument("--workload", choices=sorted(WORKLOADS), default=None,
                      help="built-in preset: the benchmark's flow stage on its measurements (bunny-mnist is the "
                           "default without the two above)")
    p.add_argument("--task", default=None, help="--workload only: which of its tasks (default: the first)")
    p.add_argument("--mask", type=Path, metavar="FILE", help="mask file of --measurements (True/1 = observed)")
    p.add_argument("--variable", default=None, help="array / variable of --signals to read when the file holds several")
    p.add_argument("--operator", choices=OPERATORS, default="inpainting",
                   help="operator that simulates measurements from --signals (default: inpainting)")
    p.add_argument("--missing", type=float, default=None,
                   help="missing fraction of inpainting (default 0.3; a --workload's own otherwise)")
    p.add_argument("--sigma", type=float, default=None,
                   help="measurement noise sigma_y (simulated: default 0.1, a --workload's own; needed with "
                        "--measurements)")
    p.add_argument("--blur-time", type=float, default=1e-3, help="diffusion time of heat-blur (default 1e-3)")
    p.add_argument("--blind", action="store_true",
                   help="--workload only: the blind task (missing fraction drawn per sample from --missing-range "
                        "unless the workload has its own), the flow sees y only")
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
    from ..io import load_measurements, load_signals, simulate_measurements
    from ..priors.diffusion import DiffusionPrior
    from ._common import geometry_from_args_or_beside

    config = config_from_args(args, args.shortcuts)
    device = resolve_device(args.device)
    out = output_folder(args.out)
    geometry = geometry_from_args_or_beside(args, args.prior, "prior")
    prior = DiffusionPrior.load(args.prior, geometry=geometry)
    if args.measurements is not None:
        if args.sigma is None:
            raise ValueError(f"--sigma is needed with --measurements: the noise level of y in {args.measurements}")
        meas = load_measurements(args.measurements, geometry, mask=args.mask, sigma=args.sigma)
    else:
        if args.mask is not None:
            raise ValueError("--mask goes with --measurements")
        signals = load_signals(args.signals, geometry, variable=args.variable)
        meas = simulate_measurements(signals.x, geometry, args.operator, missing=0.3 if args.missing is None else args.missing,
                                     sigma=0.1 if args.sigma is None else args.sigma, blur_time=args.blur_time,
                                     seed=config.seed, source=signals.source)
    posterior = train_posterior(prior, meas, config, out, geometry=geometry, device=device,
                                progress=not args.no_progress)
    print(json.dumps({"posterior": str(out / "posterior.pt"), "measurements": str(out / "measurements.pt"),
                      "config": str(out / "config.json"), "num_measurements": int(meas.y.shape[0]),
                      "steps": posterior.metadata.get("train_steps"), "fingerprint": posterior.fingerprint}))
    return 0


def _workload_task(args: argparse.Namespace, config: Any) -> tuple[Any, Any]:
    """The preset's workload (its flow-training signals and evaluation sets) and task."""
    import inspect
    from dataclasses import replace

    from ..benchmarking.workloads import Task, get_workload
    from ..operators import RandomInpainting

    build = get_workload(args.workload)
    options = {k: v for k, v in (("missing", args.missing), ("sigma", args.sigma)) if v is not None}
    accepted = inspect.signature(build).parameters
    unknown = sorted(k for k in options if k not in accepted)
    if unknown:
        raise ValueError(f"--workload {args.workload} has its own operators: {['--' + k for k in unknown]} do not apply")
    # the flow stage never reads the prior's training signals: do not load them all
    workload = build(replace(config, prior=replace(config.prior, train_size=1)), **options)
    if args.task is not None:
        tasks = {t.name: t for t in workload.tasks}
        if args.task not in tasks:
            raise ValueError(f"--workload {args.workload} has the tasks {sorted(tasks)}, not {args.task!r}")
        return workload, tasks[args.task]
    if not args.blind:
        return workload, workload.tasks[0]
    blind = [t for t in workload.tasks if t.condition == "measurement"]
    if blind:
        return workload, blind[0]
    low, high = args.missing_range
    sigma = 0.1 if args.sigma is None else args.sigma
    V = workload.geometry.num_vertices

    def make(n: int, generator: Any) -> Any:
        return RandomInpainting(V, (low, high), sigma).draw(n, generator=generator)

    return workload, Task(name="blind", make_operator=make, condition="measurement", reconstruct=None,
                          description={"operator": "random vertex mask, fraction drawn per sample (blind)",
                                       "missing_range": [low, high], "sigma_y": sigma})


def run(args: argparse.Namespace) -> int:
    """Run the sub-command; returns the exit status."""
    if args.measurements is not None or args.signals is not None:
        return _run_own_data(args)
    import torch

    from ..api import output_folder, resolve_device
    from ..benchmarking.pipeline import score_posterior, stage_flow, stage_measurements
    from ..benchmarking.workloads import profile_defaults
    from ..config import config_from_args
    from ..io import save_geometry
    from ..operators import Inpainting
    from ..priors.diffusion import DiffusionPrior

    args.workload = args.workload or "bunny-mnist"
    # the workload's own settings of the profile, as its benchmark script applies them
    config = config_from_args(args, args.shortcuts, defaults=profile_defaults(args.workload, args.profile))
    device = resolve_device(args.device)
    out = output_folder(args.out)
    workload, task = _workload_task(args, config)
    prior = DiffusionPrior.load(args.prior, geometry=workload.geometry, map_location=device)
    train, evals = stage_measurements(workload, task, config, out, folder=out)
    save_geometry(workload.geometry, out / "geometry.npz")
    posterior = stage_flow(workload, task, config, prior, train, out, device=device, progress=not args.no_progress,
                           folder=out)
    # a quick look at held-out measurements (the benchmark evaluates everything)
    name = "heldout" if "heldout" in evals else "paper"
    m = evals[name]
    x, y, op = m.x.to(device), m.y.to(device), m.operator.to(device)
    g = torch.Generator(device).manual_seed(config.seed + config.eval.seed_offset)
    scores, _ = score_posterior(posterior, x, y, op, n_posterior=config.eval.n_posterior,
                                batch_size=config.eval.batch_size, chunk=config.eval.chunk, generator=g,
                                image_shape=workload.image_shape,
                                data_range=workload.data_range, groups=m.groups,
                                observed=op.mask.expand(x.shape[0], -1) if isinstance(op, Inpainting) else None)
    report = {"evaluation": name, "measurements": int(x.shape[0]), "psnr_n1": scores["aps_n1"].psnr,
              "psnr_mean": scores["aps_n128"].psnr, "n_posterior": config.eval.n_posterior,
              "steps": posterior.metadata.get("train_steps"), "posterior": str(out / "posterior.pt")}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return 0
