"""Ablation of the amortized flow's training (issue 8): one row per lever, on bunny-MNIST
inpainting or sphere temperature imputation.

Every row distils the *same* prior (``runs/<script>/prior``, trained by the benchmark if
missing) into a fresh flow under the same wall-clock budget, on the benchmark's own training
measurements, and is scored on its held-out measurements (held-out protocol) against harmonic
interpolation (and its Tikhonov-smoothed variant, weight tuned on truth). Rows resume from
``--out/<row>-s<seed>`` like the benchmarks; a finished row is only re-scored.

    python benchmarks/flow_ablation.py                                  # every row, seed 0
    python benchmarks/flow_ablation.py --rows tmin-0.01 --seeds 0 1 2   # the spread over seeds
    python benchmarks/flow_ablation.py --rows tmin-0.01 --minutes 15 --curve-every 100
    python benchmarks/flow_ablation.py --workload era5-imputation --rows tmin-0.02-anneal tmin-0.005-anneal \\
        --minutes 6.7 --train-steps 380 --dps-measurements 8

``--curve-every k`` scores the EMA flow every ``k`` steps (32 samples per measurement; the
scoring time is excluded from the training minutes) and records PSNR against training time.
Results go to ``--out/ablation.json`` and ``--out/ablation.md`` (one row per lever and seed).
"""

import os

# Idle OpenMP threads spin by default; on a shared CPU that made training ~3x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from manifold_ps.baselines import DPS, GaussianPosterior, HarmonicInterpolation
from manifold_ps.benchmarking.evaluate import run_sampler, score_estimate
from manifold_ps.benchmarking.pipeline import stage_flow, stage_gaussian, stage_measurements, stage_prior, tune_smoothing
from manifold_ps.benchmarking.workloads import WORKLOADS
from manifold_ps.config import (Config, add_config_arguments, apply_overrides, config_from_args, from_legacy_profile,
                                get_profile)

ABLATED = ("bunny-mnist", "era5-imputation")
"""The workloads this script runs on (their first task is ablated)."""

ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "tmin-0.03": ("ELBO cutoff t_min = 0.03 (sigma 0.11: the first CPU profile); 3000-step schedule cut by the cap",
                  {"flow.t_min": 0.03, "flow.train_steps": 3000}),
    "tmin-0.01": ("ELBO cutoff t_min = 0.01 (sigma 0.045); 3000-step schedule cut by the cap",
                  {"flow.t_min": 0.01, "flow.train_steps": 3000}),
    "tmin-0.003": ("ELBO cutoff t_min = 0.003 (sigma 0.017); 3000-step schedule cut by the cap",
                   {"flow.t_min": 0.003, "flow.train_steps": 3000}),
    "tmin-0.03-anneal": ("t_min = 0.03, cosine schedule sized to end within the budget (360 steps)",
                         {"flow.t_min": 0.03, "flow.train_steps": 360}),
    "tmin-0.01-anneal": ("t_min = 0.01, cosine schedule sized to end within the budget (360 steps)",
                         {"flow.t_min": 0.01, "flow.train_steps": 360}),
    "tmin-0.02-anneal": ("t_min = 0.02 (sigma 0.077), cosine schedule sized to the budget (450 steps)",
                         {"flow.t_min": 0.02, "flow.train_steps": 450}),
    "tmin-0.005-anneal": ("t_min = 0.005 (sigma 0.025), cosine schedule sized to the budget (450 steps)",
                          {"flow.t_min": 0.005, "flow.train_steps": 450}),
    "tmin-0.002-anneal": ("t_min = 0.002 (sigma 0.013), cosine schedule sized to the budget (450 steps)",
                          {"flow.t_min": 0.002, "flow.train_steps": 450}),
    # further levers on top of the kept configuration (t_min 0.02, 450 annealed steps)
    "ntime2": ("tmin-0.02-anneal with two ELBO time draws per sample",
               {"flow.t_min": 0.02, "flow.train_steps": 450, "flow.n_time": 2}),
    "nz4": ("tmin-0.02-anneal with four flow draws per measurement (batch 8)",
            {"flow.t_min": 0.02, "flow.train_steps": 450, "flow.n_z": 4, "flow.batch_size": 8}),
    "wide": ("tmin-0.02-anneal with coupling width 64, patch 8",
             {"flow.t_min": 0.02, "flow.train_steps": 450, "flow.hidden": 64, "flow.patch": 8}),
}
"""Row name -> (what it changes, ``section.field`` overrides on top of the configuration: the cpu profile
unless ``--profile`` / ``--config`` / ``--set`` say otherwise)."""


def _score(posterior, y, op, x, n: int, seed: int, data_range: tuple[float, float] | None = None) -> dict[str, float]:
    g = torch.Generator().manual_seed(seed)
    one = run_sampler(posterior, y, op, n=1, batch_size=64, generator=g)
    many = run_sampler(posterior, y, op, n=n, batch_size=64, keep=n, generator=g)
    r1 = score_estimate(one.first, x, seconds_per_sample=one.seconds_per_sample, nfe=1, data_range=data_range)
    rn = score_estimate(many.mean, x, seconds_per_sample=many.seconds_per_sample, nfe=1, samples=many.kept,
                        data_range=data_range)
    return {"psnr_n1": r1.psnr, "psnr_mean": rn.psnr, "coverage90": rn.extra.get("coverage90", float("nan"))}


def run_row(name: str, seed: int, minutes: float, curve_every: int, base_out: Path, out: Path,
            workload_name: str = "bunny-mnist", train_steps: int | None = None, base: Config | None = None
            ) -> dict[str, Any]:
    description, overrides = ROWS[name]
    if train_steps is not None:
        overrides = {**overrides, "flow.train_steps": train_steps}
        description = f"{description.split(',')[0].split(' (')[0]} ({train_steps}-step schedule)"
    config = apply_overrides(base or get_profile("cpu"), {"flow.minutes": minutes, **overrides})
    workload = WORKLOADS[workload_name](config)
    device = torch.device("cpu")
    prior = stage_prior(workload, config, base_out, device=device, progress=False)
    task = workload.tasks[0]
    train, evals = stage_measurements(workload, task, config, base_out)
    held = evals["heldout"]
    folder = out / f"{name}-s{seed}"
    curve: list[dict[str, float]] = []
    curve_path = folder / "curve.json"
    if curve_path.is_file():
        curve = json.loads(curve_path.read_text())

    offset = curve[-1]["minutes"] if curve else 0.0
    clock = {"start": time.monotonic(), "paused": 0.0}

    def observer(trainer, step: int, logs) -> float:
        if curve_every <= 0 or step % curve_every:
            return 0.0
        tic = time.monotonic()
        model = trainer.ema_model.eval()
        point = _score(model, held.y, held.operator, held.x, 32, seed, workload.data_range)
        minutes = offset + (tic - clock["start"] - clock["paused"]) / 60
        curve.append({"step": step, "minutes": minutes, **point})
        folder.mkdir(parents=True, exist_ok=True)
        curve_path.write_text(json.dumps(curve, indent=1))
        print(f"    step {step:5d}  {minutes:5.1f} min  N=1 {point['psnr_n1']:.2f} dB  mean {point['psnr_mean']:.2f} dB",
              flush=True)
        spent = time.monotonic() - tic
        clock["paused"] += spent
        return spent

    tic = time.perf_counter()
    posterior = stage_flow(workload, task, apply_overrides(config, {"seed": seed}), prior, train, folder,
                           device=device, progress=False, observer=observer)
    wall = time.perf_counter() - tic
    done = json.loads((folder / task.name / "complete").read_text())
    scores = _score(posterior, held.y, held.operator, held.x, config.eval.n_posterior, seed, workload.data_range)
    return {"row": name, "description": description, "overrides": overrides, "seed": seed,
            "train_minutes": done["seconds_last_invocation"] / 60, "train_steps": done["steps"],
            "skipped_steps": done.get("skipped", 0), "wall_minutes_this_call": wall / 60, **scores, "curve": curve}


def references(base_out: Path, out: Path, n_dps: int, workload_name: str = "bunny-mnist",
               config: Config | None = None) -> dict[str, Any]:
    """The Gaussian posterior (mean and one exact draw) and harmonic interpolation (plain and
    Tikhonov-smoothed) on every held-out measurement and DPS (the configuration's NFE) on the
    first ``n_dps`` of them, with the same prior, cached in ``out``.
    DPS is taken from the benchmark's ``results.json`` in ``base_out`` when it ran on exactly
    these measurements."""
    cache = out / "references.json"
    config = config or get_profile("cpu")
    if cache.is_file():
        ref = json.loads(cache.read_text())
        if (ref.get("dps_measurements") == n_dps and ref.get("workload", "bunny-mnist") == workload_name
                and "gaussian_mean" in ref):
            return ref
    workload = WORKLOADS[workload_name](config)
    _, evals = stage_measurements(workload, workload.tasks[0], config, base_out)
    held = evals["heldout"]
    dr = workload.data_range

    def psnr_of(est: torch.Tensor, x: torch.Tensor) -> float:
        return score_estimate(est, x, seconds_per_sample=0.0, nfe=0, data_range=dr).psnr

    harmonic = HarmonicInterpolation(workload.geometry)
    est = harmonic.sample(held.y, held.operator, 1)[:, 0]
    ref: dict[str, Any] = {"workload": workload_name, "harmonic": psnr_of(est, held.x),
                           "measurements": int(held.x.shape[0]), "dps_measurements": n_dps}
    gaussian = GaussianPosterior(stage_gaussian(workload, config, base_out, device=torch.device("cpu")))
    mean, _ = gaussian.posterior_mean_std(held.y, held.operator)
    draw = gaussian.sample(held.y, held.operator, 1, generator=torch.Generator().manual_seed(0))[:, 0]
    ref.update(gaussian_mean=psnr_of(mean, held.x), gaussian_draw=psnr_of(draw, held.x))
    smoothing = tune_smoothing(workload, held.x, held.y, held.operator)
    if smoothing > 0:
        est = HarmonicInterpolation(workload.geometry, smoothing=smoothing).sample(held.y, held.operator, 1)[:, 0]
        ref.update(tikhonov=psnr_of(est, held.x), tikhonov_weight=smoothing)
    if n_dps > 0:
        y, op, x = held.y[:n_dps], held.operator.select(torch.arange(n_dps)), held.x[:n_dps]
        bench = base_out / "results.json"
        stored = None
        if bench.is_file():  # the benchmark ran DPS on these measurements with this prior
            for e in json.loads(bench.read_text()).get("evaluations", []):
                q = e["protocol"]
                if q.get("evaluation") == "heldout" and q.get("baseline_measurements") == n_dps and "dps" in e["methods"]:
                    stored = e["methods"]["dps"]
        if stored is not None:
            ref.update(dps=stored["psnr"], dps_seconds_per_sample=stored["seconds_per_sample"], dps_nfe=stored["nfe"],
                       dps_source=str(bench))
        else:
            prior = stage_prior(workload, config, base_out, device=torch.device("cpu"), progress=False).eval()
            dps = DPS(prior, steps=config.eval.dps_nfe, zeta=config.eval.dps_zeta)
            o = run_sampler(dps, y, op, n=1, batch_size=n_dps, generator=torch.Generator().manual_seed(0))
            ref.update(dps=psnr_of(o.first, x), dps_seconds_per_sample=o.seconds_per_sample, dps_nfe=o.nfe)
        est = harmonic.sample(y, op, 1)[:, 0]
        ref["harmonic_on_dps_subset"] = psnr_of(est, x)
    cache.write_text(json.dumps(ref, indent=1))
    return ref


def plot_curves(results: list[dict[str, Any]], ref: dict[str, Any], path: Path) -> bool:
    """PSNR of the flow against training minutes, DPS and harmonic as horizontal lines."""
    curves = [r for r in results if r["curve"]]
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for r in curves:
        t = [c["minutes"] for c in r["curve"]]
        line, = ax.plot(t, [c["psnr_mean"] for c in r["curve"]], label=f"{r['row']} s{r['seed']}: mean of 32")
        ax.plot(t, [c["psnr_n1"] for c in r["curve"]], ls="--", color=line.get_color(), label=f"{r['row']} s{r['seed']}: N = 1")
    ax.axhline(ref["harmonic"], color="k", ls=":", label=f"harmonic {ref['harmonic']:.1f} dB")
    if "gaussian_mean" in ref:
        ax.axhline(ref["gaussian_mean"], color="tab:green", ls="-", lw=1,
                   label=f"Gaussian posterior mean {ref['gaussian_mean']:.1f} dB")
        ax.axhline(ref["gaussian_draw"], color="tab:green", ls="--", lw=1,
                   label=f"Gaussian posterior draw {ref['gaussian_draw']:.1f} dB")
    if "dps" in ref:
        ax.axhline(ref["dps"], color="tab:red", ls="-.",
                   label=f"DPS {ref['dps_nfe']} NFE {ref['dps']:.1f} dB ({ref['dps_measurements']} meas.)")
    ax.set_xlabel("flow training time (minutes, 2-core CPU)")
    ax.set_ylabel("held-out PSNR (dB)")
    ax.set_title(f"Amortized flow on {ref.get('workload', 'bunny-mnist')} against training time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


KEPT = "tmin-0.02-anneal"
"""The row whose settings became the ``cpu`` profile's flow defaults (at twice the minutes)."""


def benchmark_row(base_out: Path) -> dict[str, Any] | None:
    """The held-out scores of the benchmark run in ``base_out`` on its first task (the profile's
    flow configuration and budget), or ``None`` if it has not run. ``steps`` / ``minutes`` are
    what the flow actually trained (from its ``complete`` marker) when known."""
    path = base_out / "results.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    for e in data.get("evaluations") or [data]:
        if e["protocol"].get("evaluation") == "heldout":
            cfg = e["config"] if "flow" in e["config"] else from_legacy_profile(e["config"]["profile"])
            row = {"psnr_n1": e["methods"]["aps_n1"]["psnr"], "psnr_mean": e["methods"]["aps_n128"]["psnr"],
                   "coverage90": e["methods"]["aps_n128"].get("coverage90", float("nan")),
                   "t_min": cfg["flow"]["t_min"], "schedule": cfg["flow"]["train_steps"],
                   "steps": cfg["flow"]["train_steps"], "minutes": cfg["flow"]["minutes"],
                   "seed": e["config"].get("seed", 0),
                   "script": path.parent.name}
            done = base_out / e["protocol"].get("task", "") / "complete"
            if e["protocol"].get("task") and done.is_file():
                info = json.loads(done.read_text())
                row.update(steps=info["steps"], minutes=info["seconds_last_invocation"] / 60)
            return row
    return None


def write_table(results: list[dict[str, Any]], ref: dict[str, Any], out: Path,
                bench: dict[str, Any] | None = None) -> None:
    by_row: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_row.setdefault(r["row"], []).append(r)
    lines = [f"# Flow ablation, {ref.get('workload', 'bunny-mnist')} (cpu profile, held-out, "
             f"{ref['measurements']} measurements)", "",
             f"Harmonic interpolation on the same measurements: **{ref['harmonic']:.2f} dB**"
             + (f"; Tikhonov-smoothed (weight {ref['tikhonov_weight']:g}, tuned on truth): **{ref['tikhonov']:.2f} dB**."
                if "tikhonov" in ref else "."),
             f"Gaussian posterior (Gaussian fitted to the prior's training signals): mean **{ref['gaussian_mean']:.2f} dB**, "
             f"one exact draw **{ref['gaussian_draw']:.2f} dB**."]
    if "dps" in ref:
        lines.append(f"DPS ({ref['dps_nfe']} NFE, same prior) on the first {ref['dps_measurements']} of them: "
                     f"**{ref['dps']:.2f} dB**, {ref['dps_seconds_per_sample']:.2f} s per sample "
                     f"(harmonic on that subset: {ref['harmonic_on_dps_subset']:.2f} dB)"
                     + (f", from the benchmark run `{ref['dps_source']}`." if "dps_source" in ref else "."))
    lines += ["",
             "| row | what changes | seeds | PSNR N=1 (dB) | PSNR mean N=128 (dB) | coverage 90% | train min | steps |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]

    def fmt(values: list[float], digits: int = 2) -> str:
        if len(values) == 1:
            return f"{values[0]:.{digits}f}"
        return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"

    for name, rs in by_row.items():
        lines.append(f"| {name} | {rs[0]['description']} | {','.join(str(r['seed']) for r in rs)} | "
                     f"{fmt([r['psnr_n1'] for r in rs])} | {fmt([r['psnr_mean'] for r in rs])} | "
                     f"{fmt([r['coverage90'] for r in rs], 3)} | {fmt([r['train_minutes'] for r in rs], 1)} | "
                     f"{fmt([r['train_steps'] for r in rs], 0)} |")
    if bench is not None:
        lines.append(f"| cpu profile | the profile's flow (t_min {bench['t_min']}, {bench['schedule']}-step "
                     f"schedule, its share of the minutes): `benchmarks/{bench['script']}.py` | {bench['seed']} | "
                     f"{bench['psnr_n1']:.2f} | {bench['psnr_mean']:.2f} | {bench['coverage90']:.3f} | "
                     f"{bench['minutes']:.1f} | {bench['steps']} |")
    if ref.get("workload", "bunny-mnist") == "bunny-mnist":
        lines += ["", f"Kept: **{KEPT}** (its settings, with the schedule doubled for 10 minutes, are the `cpu` "
                  "profile's flow defaults). Rows differ from the first CPU profile only in the listed settings."]
    else:
        lines += ["", "Rows differ from the `cpu` profile only in the listed settings."]
    if plot_curves(results, ref, out / "ablation_curve.png"):
        lines += ["", "![PSNR against training time](ablation_curve.png)"]
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    (out / "ablation.json").write_text(json.dumps({"references": ref, "rows": results}, indent=1))
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=ABLATED, default="bunny-mnist")
    add_config_arguments(p)
    p.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=list(ROWS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--minutes", type=float, default=5.0, help="wall-clock training budget of each row")
    p.add_argument("--curve-every", type=int, default=0, help="score the flow every k steps (0: never)")
    p.add_argument("--train-steps", type=int, default=None,
                   help="schedule length of every row (default: the row's own, sized for bunny-MNIST)")
    p.add_argument("--base-out", type=Path, default=None,
                   help="the benchmark's folder with the prior (default runs/<script>)")
    p.add_argument("--out", type=Path, default=None,
                   help="default runs/flow_ablation (bunny-mnist), runs/flow_ablation-<script> otherwise")
    p.add_argument("--dps-measurements", type=int, default=16, help="held-out measurements DPS is run on (0: none)")
    p.add_argument("--table-only", action="store_true", help="rewrite the table and plot from ablation.json")
    args = p.parse_args(argv)
    script = args.workload.replace("-", "_")
    config = config_from_args(args)
    args.base_out = args.base_out or Path("runs") / script
    if args.out is None:
        args.out = Path("runs") / ("flow_ablation" if args.workload == "bunny-mnist" else f"flow_ablation-{script}")
    args.out.mkdir(parents=True, exist_ok=True)
    previous: list[dict[str, Any]] = []
    if (args.out / "ablation.json").is_file():
        previous = json.loads((args.out / "ablation.json").read_text())["rows"]
    ref = references(args.base_out, args.out, args.dps_measurements, args.workload, config)
    if args.table_only:
        write_table(previous, ref, args.out, benchmark_row(args.base_out))
        return
    for name in args.rows:
        for seed in args.seeds:
            print(f"[{time.strftime('%H:%M:%S')}] row {name}, seed {seed}", flush=True)
            r = run_row(name, seed, args.minutes, args.curve_every, args.base_out, args.out, args.workload,
                        args.train_steps, config)
            previous = [q for q in previous if (q["row"], q["seed"]) != (name, seed)] + [r]
            print(f"    N=1 {r['psnr_n1']:.2f} dB, mean {r['psnr_mean']:.2f} dB, coverage {r['coverage90']:.3f}, "
                  f"{r['train_steps']} steps in {r['train_minutes']:.1f} min", flush=True)
            write_table(previous, ref, args.out, benchmark_row(args.base_out))


if __name__ == "__main__":
    main()
