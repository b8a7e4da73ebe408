"""Which denoiser network learns what the Gaussian misses, at equal CPU minutes.

Each network is the correction of a ``"wiener"`` prior on the same fitted Gaussian (the benchmark's
``out/gaussian``, see ``--base-out``) and trains for the same wall-clock minutes with the same loop
(AdamW, 100-step warm-up, gradient clip 1, EMA 0.999, times uniform in log(sigma / alpha) on
[1e-3, 1]); the EMA
weights are scored on held-out signals by their denoising error relative to the Wiener denoiser on
the 12-point log grid of t in [0.005, 0.7] that ``prior_quality.py`` uses (one seeded noise draw
per signal and t, the same for every network).

    python benchmarks/prior_networks.py --workload bunny-mnist --minutes 5 \\
        --networks graph:hidden=32,depth=2 unet mlp:hidden=1024,depth=3 --batch 16 16 64

Rows resume from ``--out/<network>.json``; the table goes to ``--out/prior_networks.{json,md}``.
"""

from __future__ import annotations

import os

# Idle OpenMP threads spin by default; on a shared CPU that made training ~3x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from manifold_ps.benchmarking.baselines import stage_gaussian
from manifold_ps.benchmarking.workloads import WORKLOADS
from manifold_ps.config import add_config_arguments, config_from_args
from manifold_ps.priors import build_prior

GRID = torch.logspace(math.log10(0.005), math.log10(0.7), 12)
"""The times of the denoising comparison (as in ``prior_quality.py``)."""


def parse_network(spec: str) -> tuple[str, dict[str, Any]]:
    """``"graph:hidden=32,depth=2"`` -> ``("graph", {"hidden": 32, "depth": 2})``."""
    name, _, rest = spec.partition(":")
    kwargs = {k: int(v) if v.lstrip("-").isdigit() else float(v) for k, v in
              (item.split("=") for item in rest.split(",") if item)}
    return name, kwargs


def train_and_score(workload, gaussian, spec: str, batch: int, minutes: float, lr: float, held: torch.Tensor,
                    seed: int) -> dict[str, Any]:
    """Train one network's correction for ``minutes`` and score its EMA denoiser on ``held``."""
    name, kwargs = parse_network(spec)
    torch.manual_seed(seed)
    prior = build_prior(workload.geometry, channels=workload.channels, preset="cpu", network=name,  # type: ignore[arg-type]
                        parameterization="wiener", gaussian=gaussian, **kwargs)
    ema = copy.deepcopy(prior).requires_grad_(False)
    opt = torch.optim.AdamW(prior.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed + 1)
    x = workload.prior_train
    tic, step = time.perf_counter(), 0
    while time.perf_counter() - tic < 60 * minutes:
        index = torch.randint(0, x.shape[0], (batch,), generator=gen)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100)
        loss = prior.dsm_loss(x[index], gen).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(0.999, (1 + step) / (10 + step))
            for pe, pp in zip(ema.parameters(), prior.parameters()):
                pe.lerp_(pp, 1 - decay)
        step += 1
    seconds = time.perf_counter() - tic
    noise_gen = torch.Generator().manual_seed(123)
    rows = []
    with torch.no_grad():
        for t in GRID:
            tt = torch.full((held.shape[0],), float(t))
            noise = torch.randn(held.shape, generator=noise_gen)
            xt = ema.sde.alpha(tt)[:, None, None] * held + ema.sde.std(tt)[:, None, None] * noise
            learned = torch.cat([ema.denoise(c, ct) for c, ct in zip(xt.split(64), tt.split(64))])
            wiener = gaussian.denoise(xt.double(), tt.double()).float()
            mse, mse_w = (learned - held).square().mean(), (wiener - held).square().mean()
            rows.append({"t": float(t), "mse": float(mse), "mse_wiener": float(mse_w), "ratio": float(mse / mse_w)})
    small = [r["ratio"] for r in rows if r["t"] <= 0.3]
    return {"network": spec, "batch": batch, "minutes": minutes, "steps": step, "seconds": seconds,
            "parameters": sum(p.numel() for p in prior.parameters()), "grid": rows,
            "mean_ratio_t_le_0.3": sum(small) / len(small), "max_ratio": max(r["ratio"] for r in rows)}


def write_table(rows: list[dict[str, Any]], out: Path, workload: str, threads: int) -> None:
    lines = [f"# Denoiser networks at equal CPU minutes, {workload}", "",
             f"Correction of a `wiener` prior on the same Gaussian; {threads} thread(s); held-out signals. "
             "Denoising MSE relative to the Wiener denoiser (below 1: the network learned something).", "",
             "| network | batch | parameters | minutes | steps | mean ratio, t <= 0.3 | ratio at t = 0.005 | max ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['network']} | {r['batch']} | {r['parameters'] / 1e6:.2f}M | {r['minutes']:g} | {r['steps']} | "
                     f"{r['mean_ratio_t_le_0.3']:.3f} | {r['grid'][0]['ratio']:.3f} | {r['max_ratio']:.3f} |")
    (out / "prior_networks.md").write_text("\n".join(lines) + "\n")
    (out / "prior_networks.json").write_text(json.dumps({"workload": workload, "threads": threads, "rows": rows},
                                                        indent=1))
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=("bunny-mnist", "era5-imputation"), default="bunny-mnist")
    add_config_arguments(p)
    p.add_argument("--networks", nargs="+", default=["graph:hidden=32,depth=2", "unet", "mlp:hidden=1024,depth=3"])
    p.add_argument("--batch", type=int, nargs="+", default=[16, 16, 64], help="batch size of each network")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--heldout", type=int, default=256)
    p.add_argument("--base-out", type=Path, default=None,
                   help="the benchmark's folder whose out/gaussian is used (default runs/<script>)")
    p.add_argument("--out", type=Path, default=None, help="default runs/prior_networks-<script>")
    args = p.parse_args(argv)
    if len(args.batch) != len(args.networks):
        p.error("give one --batch per network")
    config = config_from_args(args)
    script = args.workload.replace("-", "_")
    out = args.out or Path("runs") / f"prior_networks-{script}"
    out.mkdir(parents=True, exist_ok=True)
    workload = WORKLOADS[args.workload](config)
    gaussian = stage_gaussian(workload, config, args.base_out or Path("runs") / script, device=torch.device("cpu"))
    held = workload.flow_train[: args.heldout] if args.workload == "bunny-mnist" else workload.eval_sets[0].x
    rows = []
    for spec, batch in zip(args.networks, args.batch):
        path = out / (spec.replace(":", "_").replace(",", "_").replace("=", "") + ".json")
        if path.is_file():
            rows.append(json.loads(path.read_text()))
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {spec}, batch {batch}, {args.minutes:g} min", flush=True)
        row = train_and_score(workload, gaussian, spec, batch, args.minutes, args.lr, held.float(), config.seed)
        path.write_text(json.dumps(row, indent=1))
        rows.append(row)
    write_table(rows, out, args.workload, torch.get_num_threads())


if __name__ == "__main__":
    main()
