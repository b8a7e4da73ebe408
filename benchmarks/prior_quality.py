"""Quality of the diffusion priors: training throughput, held-out ELBO in bits/dim against the
same signals with shuffled vertices (a real prior must prefer real signals by a wide margin),
and a figure of prior samples.

Trains (or loads, from the benchmark's output folder, so it shares the prior with
``bunny_mnist.py`` / ``era5_imputation.py``) the prior of each workload.

    python benchmarks/prior_quality.py --workload bunny-mnist [--profile cpu]
    python benchmarks/prior_quality.py --workload era5-imputation
"""

from __future__ import annotations

import os

# Idle OpenMP threads spin by default; on a shared CPU that made training ~3x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import time
from pathlib import Path

import torch

from manifold_ps.benchmarking.pipeline import prior_record, stage_prior
from manifold_ps.benchmarking.results import environment_versions
from manifold_ps.benchmarking.workloads import WORKLOADS
from manifold_ps.config import add_config_arguments, config_from_args
from manifold_ps.priors import bits_per_dim
from manifold_ps.viz import plot_mesh_signal, plot_sphere_map

MEASURED = ("bunny-mnist", "era5-imputation")
"""The workloads whose priors this script measures."""


def throughput(prior, data: torch.Tensor, batch: int, steps: int = 10) -> float:
    """Training samples per second of the prior's DSM step (AdamW, one thread setting as is)."""
    import copy

    clone = copy.deepcopy(prior).train().requires_grad_(True)  # the trained prior is left untouched
    opt = torch.optim.AdamW(clone.parameters(), lr=1e-5)
    g = torch.Generator(data.device).manual_seed(0)
    x = data[:batch]
    for i in range(steps + 1):
        if i == 1:
            tic = time.perf_counter()
        loss = clone.dsm_loss(x, g).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - tic)


@torch.no_grad()
def heldout_bits(prior, x: torch.Tensor, *, n_time: int, t_min: float, seed: int) -> tuple[float, float]:
    """Mean and standard error of the ELBO in bits/dim over held-out signals."""
    g = torch.Generator(x.device).manual_seed(seed)
    vals = []
    for chunk in x.split(32):
        vals.append(bits_per_dim(prior.elbo(chunk, n_time=n_time, t_min=t_min, generator=g), prior.num_dims))
    v = torch.cat(vals).double()
    return float(v.mean()), float(v.std() / v.numel() ** 0.5)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=MEASURED, default="bunny-mnist")
    add_config_arguments(p)
    p.add_argument("--out", type=Path, default=None, help="default: runs/<workload script>")
    p.add_argument("--n-heldout", type=int, default=256)
    p.add_argument("--n-time", type=int, default=16, help="time draws per signal in the ELBO")
    p.add_argument("--t-min", type=float, default=1e-3)
    p.add_argument("--samples", type=int, default=6)
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    script = args.workload.replace("-", "_")
    config = config_from_args(args)
    out = args.out or Path("runs") / script
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    workload = WORKLOADS[args.workload](config)
    prior = stage_prior(workload, config, out, device=device, progress=not args.no_progress).eval()

    held = workload.eval_sets[0].x[: args.n_heldout].to(device)
    if held.shape[0] < args.n_heldout:
        held = torch.cat([held, workload.flow_train[: args.n_heldout - held.shape[0]].to(device)])
    g = torch.Generator().manual_seed(1)
    shuffled = torch.stack([s[:, torch.randperm(s.shape[-1], generator=g).to(device)] for s in held])
    real_bpd, real_se = heldout_bits(prior, held, n_time=args.n_time, t_min=args.t_min, seed=2)
    shuf_bpd, shuf_se = heldout_bits(prior, shuffled, n_time=args.n_time, t_min=args.t_min, seed=2)
    rate = throughput(prior, workload.prior_train.to(device), config.prior.batch_size)

    tic = time.perf_counter()
    samples = prior.sample(args.samples, steps=200, method="ddpm", generator=torch.Generator(device).manual_seed(3),
                           device=device).clamp(-0.5, 1.5).cpu()
    sample_s = (time.perf_counter() - tic) / args.samples
    from matplotlib.figure import Figure

    geo = workload.geometry
    kind = workload.kind
    fig = Figure(figsize=(2.4 * args.samples, 2.6 if kind == "mesh" else 1.6))
    for i in range(args.samples):
        ax = fig.add_subplot(1, args.samples, i + 1, projection="3d" if kind == "mesh" else None)
        if kind == "mesh":
            plot_mesh_signal(geo.positions, geo.faces, samples[i, 0], ax=ax, vmin=0, vmax=1)
        else:
            ax.remove()
            import cartopy.crs as ccrs

            ax = fig.add_subplot(1, args.samples, i + 1, projection=ccrs.PlateCarree(central_longitude=180.0))
            plot_sphere_map(samples[i, 0], geo.latitudes, geo.longitudes, ax=ax, vmin=0.2, vmax=0.9)
    fig.suptitle(f"{args.workload}: prior samples (200 ancestral steps)", fontsize=10)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "prior_samples.png", dpi=80)

    report = {
        "workload": args.workload, "profile": config.profile, "device": str(device),
        "prior_parameters": sum(q.numel() for q in prior.parameters()),
        "network": type(prior.network).__name__,
        "train_samples_per_s": rate,
        "heldout_signals": int(held.shape[0]), "elbo_t_min": args.t_min, "elbo_time_draws": args.n_time,
        "heldout_bits_per_dim": real_bpd, "heldout_bits_per_dim_se": real_se,
        "shuffled_bits_per_dim": shuf_bpd, "shuffled_bits_per_dim_se": shuf_se,
        "seconds_per_prior_sample_200_steps": sample_s,
        "config": prior_record(workload, config),
        "versions": environment_versions(),
    }
    (out / "prior_quality.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
