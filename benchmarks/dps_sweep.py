"""DPS quality against its number of steps (NFE) and its step size, as in the paper's figure 3,
with the other baselines on the same measurements for reference.

Uses the prior of the workload's benchmark run (``runs/<script>/prior``; trained if missing) and
held-out measurements simulated with a fixed seed.

    python benchmarks/dps_sweep.py --workload bunny-mnist --n 16
"""

import os

# Idle OpenMP threads spin by default; on a shared CPU that made training ~3x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
from pathlib import Path

import torch

from manifold_ps.baselines import DPS, MCG, HarmonicInterpolation, REDDiff
from manifold_ps.benchmarking.evaluate import run_sampler, score_estimate
from manifold_ps.benchmarking.pipeline import stage_prior
from manifold_ps.benchmarking.profiles import get_profile
from manifold_ps.benchmarking.workloads import bunny_mnist, sphere_temperature

BUILDERS = {"bunny-mnist": (bunny_mnist, "bunny_mnist"), "era5-imputation": (sphere_temperature, "era5_imputation")}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=sorted(BUILDERS), default="bunny-mnist")
    p.add_argument("--n", type=int, default=16, help="held-out measurements")
    p.add_argument("--nfe", type=int, nargs="+", default=[10, 30, 100, 300, 1000])
    p.add_argument("--budgets", type=float, nargs="+", default=[25, 100, 250, 1000, 4000],
                   help="zeta * steps values scanned at --zeta-steps steps")
    p.add_argument("--zeta-steps", type=int, default=200)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    build, script = BUILDERS[args.workload]
    profile = get_profile("cpu", n_eval=args.n)
    out = args.out or Path("runs") / script
    workload = build(profile)
    device = torch.device("cpu")
    prior = stage_prior(workload, profile, out, device=device, seed=0, progress=False).eval()
    task = workload.tasks[0]
    g = torch.Generator().manual_seed(123)
    x = workload.eval_sets[0].x[: args.n]
    op = task.make_operator(x.shape[0], g)
    y = op(x, generator=g)
    img = workload.image_shape

    def evaluate(sampler) -> dict:
        o = run_sampler(sampler, y, op, n=1, batch_size=args.n, generator=torch.Generator().manual_seed(0))
        r = score_estimate(o.first, x, seconds_per_sample=o.seconds_per_sample, nfe=o.nfe, image_shape=img)
        print(f"  {type(sampler).__name__:22s} nfe {r.nfe:5d}  psnr {r.psnr:6.2f}  {r.seconds_per_sample:.3f} s/sample",
              flush=True)
        return {"psnr": r.psnr, "ssim": r.ssim, "seconds_per_sample": r.seconds_per_sample, "nfe": r.nfe}

    report: dict = {"workload": workload.name, "measurements": args.n, "protocol": task.description,
                    "dataset": workload.eval_sets[0].dataset, "dps_vs_nfe": {}, "dps_vs_zeta": {}, "baselines": {}}
    print("DPS against NFE (default step budget zeta * steps = 250):")
    for nfe in args.nfe:
        report["dps_vs_nfe"][nfe] = evaluate(DPS(prior, steps=nfe))
    print(f"DPS against step size at {args.zeta_steps} steps:")
    for budget in args.budgets:
        zeta = budget / args.zeta_steps
        report["dps_vs_zeta"][zeta] = evaluate(DPS(prior, steps=args.zeta_steps, zeta=zeta))
    print("Other baselines:")
    for name, sampler in {"mcg": MCG(prior, steps=1000), "reddiff": REDDiff(prior),
                          "harmonic": HarmonicInterpolation(workload.geometry)}.items():
        report["baselines"][name] = evaluate(sampler)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dps_sweep.json").write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
