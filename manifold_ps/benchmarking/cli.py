"""Command line shared by the scripts in ``benchmarks/`` (they only choose the workload).

The configuration comes from ``--profile``, ``--config FILE.toml`` and ``--set section.field=value``
(see :mod:`manifold_ps.config`), as in ``manifold-ps train-prior``; the flags in
:data:`SHORTCUTS` each set one field.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import Config, add_config_arguments, add_shortcuts, command_from_args, config_from_args
from .pipeline import run_workload
from .workloads import WORKLOADS, Workload, profile_defaults

__all__ = ["benchmark_main", "SHORTCUTS"]

SHORTCUTS: dict[str, str] = {
    "--seed": "seed",
    "--n-eval": "eval.n_eval",
    "--prior-train-steps|--prior-steps": "prior.train_steps",
    "--prior-minutes": "prior.minutes",
    "--flow-train-steps": "flow.train_steps",
    "--flow-minutes": "flow.minutes",
    "--flow-t-min": "flow.t_min",
    "--dps-nfe|--dps-steps": "eval.dps_nfe",
    "--baseline-eval": "eval.baseline_eval",
}
"""The benchmark scripts' convenience flags and the field each sets."""


def benchmark_main(name: str, build: Callable[[Config], Workload], argv: Sequence[str] | None = None,
                   description: str = "") -> dict[str, Any]:
    """Parse the benchmark options, build the workload and run it end to end.

    Args:
        name: Script name (the default output folder is ``runs/<name>``; with ``_`` read as ``-`` it
            is the workload whose :data:`~manifold_ps.benchmarking.workloads.PROFILE_DEFAULTS` apply).
        build: ``config -> Workload``.
        argv: Arguments (default: ``sys.argv[1:]``).
        description: Help text.

    Returns:
        The results document.
    """
    p = argparse.ArgumentParser(prog=f"{name}.py", description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--out", type=Path, default=Path("runs") / name, help="output folder (rerun to resume)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-figures", action="store_true")
    flags = add_shortcuts(p, SHORTCUTS)
    args = p.parse_args(argv)
    # the workload's own settings of this profile (PROFILE_DEFAULTS), which the file and --set override
    workload_name = name.replace("_", "-")
    defaults = profile_defaults(workload_name, args.profile) if workload_name in WORKLOADS else {}
    config = config_from_args(args, flags, defaults=defaults)
    workload = build(config)
    # what repeats this configuration (results.json adds the steps each stage stopped at, and an --out)
    command = command_from_args(["python", f"benchmarks/{name}.py"], args, flags)
    if args.device is not None:
        command += ["--device", str(args.device)]
    return run_workload(workload, config, args.out, device=args.device, progress=not args.no_progress,
                        figures=not args.no_figures, command=command)
