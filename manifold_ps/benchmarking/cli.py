"""Command line shared by the scripts in ``benchmarks/`` (they only choose the workload)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .pipeline import run_workload
from .profiles import PROFILES, Profile, get_profile
from .workloads import Workload

__all__ = ["benchmark_main"]


def benchmark_main(name: str, build: Callable[[Profile], Workload], argv: Sequence[str] | None = None,
                   description: str = "", profile_defaults: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Parse the benchmark options, build the workload and run it end to end.

    Args:
        name: Script name (the default output folder is ``runs/<name>``).
        build: ``profile -> Workload``.
        argv: Arguments (default: ``sys.argv[1:]``).
        description: Help text.
        profile_defaults: Per-profile field values of this workload (e.g. fewer measurements for
            the 1000-step baselines on the larger sphere at the ``cpu`` profile); the command-line
            options override them.

    Returns:
        The results document.
    """
    p = argparse.ArgumentParser(prog=f"{name}.py", description=description)
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu",
                   help="smoke (< 1 min, CI), cpu (default, ~30 min on 2 cores) or paper (GPU budgets)")
    p.add_argument("--out", type=Path, default=Path("runs") / name, help="output folder (rerun to resume)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--n-eval", type=int, default=None, help="measurements per evaluation set")
    p.add_argument("--prior-steps", type=int, default=None)
    p.add_argument("--prior-minutes", type=float, default=None, help="wall-clock cap of the prior training")
    p.add_argument("--flow-train-steps", type=int, default=None)
    p.add_argument("--flow-minutes", type=float, default=None, help="wall-clock cap of all flow trainings together (split over the tasks)")
    p.add_argument("--flow-t-min", type=float, default=None, help="lower time limit of the flow's ELBO")
    p.add_argument("--dps-steps", type=int, default=None)
    p.add_argument("--baseline-eval", type=int, default=None,
                   help="measurements per set for the iterative baselines (default: all of --n-eval)")
    args = p.parse_args(argv)
    defaults = dict((profile_defaults or {}).get(args.profile, {}))
    flags = dict(n_eval=args.n_eval, prior_steps=args.prior_steps, prior_minutes=args.prior_minutes,
                 flow_train_steps=args.flow_train_steps, flow_minutes=args.flow_minutes, flow_t_min=args.flow_t_min,
                 dps_steps=args.dps_steps,
                 baseline_eval=args.baseline_eval)
    defaults.update({k: v for k, v in flags.items() if v is not None})
    profile = get_profile(args.profile, **defaults)
    workload = build(profile)
    return run_workload(workload, profile, args.out, device=args.device, seed=args.seed,
                        progress=not args.no_progress, figures=not args.no_figures)
