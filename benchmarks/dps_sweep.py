"""Every baseline and the amortized flow on one set of held-out measurements, and DPS quality
against its number of steps (NFE) and its step size (the paper's figure 3 (a) and (b)).

Uses the prior of the workload's benchmark run (``runs/<script>/prior``; trained if missing)
and, when that run has finished it, its flow (``runs/<script>/<task>/posterior.pt``; never
trained here). The task is the workload's first (bunny: inpainting, sphere: imputation, images:
denoising). The measurements are the first ``--n`` held-out signals, simulated with a fixed seed.
The configuration is the benchmark's (``--profile``, ``--config``, ``--set`` as there). Each
finished entry is saved at once, so an interrupted sweep resumes where it stopped.

It ends with the spread of the draws (:func:`draw_spread`): ``--spread-k`` draws of ours, of the
exact Gaussian posterior and of the benchmark's DPS on the first ``--spread-n`` measurements,
whether they spread as far as their mean's error. A sampler of the posterior scores one draw about
3 dB below the mean of many; one that scores its draw close to its mean draws too narrowly.

    python benchmarks/dps_sweep.py --workload bunny-mnist --n 64
    python benchmarks/dps_sweep.py --workload era5-imputation --n 64
    python benchmarks/dps_sweep.py --workload image-restoration --n 64 --nfe --budgets --methods tweedie

Writes ``dps_sweep-<script>-<profile>.{json,md,png}`` into ``--out`` (default: the benchmark's
folder), named as the committed copies in ``benchmarks/results/`` are.
"""

import argparse
import json
import math
from dataclasses import replace
import time
from pathlib import Path
from typing import Any

import torch

from manifold_ps.baselines import DPS
from manifold_ps.benchmarking.evaluate import run_sampler, score_estimate
from manifold_ps.benchmarking.results import environment_versions
from manifold_ps.benchmarking.baselines import stage_tuning
from manifold_ps.benchmarking.pipeline import (build_baselines, score_posterior, stage_gaussian, stage_measurements,
                                               stage_prior, validation_description,
                                               validation_measurements)
from manifold_ps.benchmarking.workloads import WORKLOADS, profile_defaults
from manifold_ps.config import add_config_arguments, config_from_args
from manifold_ps.flows import AmortizedPosterior
from manifold_ps.metrics import paired_ratio, project

LABELS = {"aps_n1": "ours, N=1", "aps_n128": "ours, mean of N=128", "dps": "DPS", "mcg": "MCG",
          "gaussian": "Gaussian posterior, one exact draw",
          "reddiff": "RED-diff", "tweedie": "Tweedie / Noise2Score", "harmonic": "harmonic interpolation",
          "harmonic_tikhonov": "harmonic + Tikhonov"}
SPEED_REFERENCE_NFE = 1000
"""DPS's step count in the paper, the reference of the speed table."""


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _time(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def draw_spread(sampler: Any, x: torch.Tensor, y: torch.Tensor, operator: Any, *, k: int, batch_size: int,
                generator: torch.Generator, data_range: tuple[float, float] | None = None,
                image_shape: tuple[int, int] | None = None) -> dict[str, Any]:
    """Whether a sampler's draws spread as far as its error: ``k`` draws per measurement.

    For measurement ``i`` with draws ``d_1..d_k`` (projected onto ``data_range`` as scored), their
    mean ``m_i``, spread ``s_i^2 = sum_j ||d_j - m_i||^2 / (k - 1)`` and error ``e_i^2 = ||m_i -
    x_i||^2``, the dispersion ratio is ``(1 + 1/k) sum_i s_i^2 / sum_i e_i^2``. A sampler of the
    posterior the signals were drawn from has expected spread ``tr Cov(x | y)`` and expected error
    ``(1 + 1/k) tr Cov(x | y)``: its ratio is 1 up to sampling error. Below 1 the draws are too
    close together (their intervals too narrow; one draw scores close to the mean), above 1 too
    far apart. For such a sampler one draw's squared error is twice the posterior mean's (3 dB).

    Args:
        sampler: Any posterior sampler.
        x: Ground truth ``(B, C, V)``; y: measurements ``(B, ...)``; operator: their operator.
        k: Draws per measurement (``>= 2``).
        batch_size: Measurements per call.
        generator: Source of randomness.
        data_range: Project the draws onto this range first (as the benchmark scores them).
        image_shape: ``(H, W)`` for SSIM on grids.

    Returns:
        ``{"k", "psnr_one", "psnr_mean", "ratio", "ratio_low", "ratio_high", "seconds_per_sample",
        "nfe"}``: the PSNR of the first draw and of the mean of ``k``, and the ratio with its paired
        95% bootstrap interval.
    """
    if k < 2:
        raise ValueError(f"the spread of the draws needs k >= 2 draws, got {k}")
    out = run_sampler(sampler, y, operator, n=k, batch_size=batch_size, keep=k, generator=generator)
    draws = project(out.kept, data_range)
    mean = draws.mean(1)
    spread = draws.var(1).flatten(1).sum(1).double()
    error = (mean - x).flatten(1).square().sum(1).double()
    ratio, low, high = paired_ratio(spread, error)
    scale = 1.0 + 1.0 / k
    common = dict(seconds_per_sample=out.seconds_per_sample, nfe=out.nfe, image_shape=image_shape,
                  data_range=data_range)
    return {"k": k, "psnr_one": score_estimate(draws[:, 0], x, **common).psnr,
            "psnr_mean": score_estimate(mean, x, **common).psnr, "ratio": scale * ratio,
            "ratio_low": scale * low, "ratio_high": scale * high,
            "seconds_per_sample": out.seconds_per_sample, "nfe": out.nfe}


def report_stem(script: str, profile: str) -> str:
    """File name (without suffix) of the sweep's report, e.g. ``dps_sweep-bunny_mnist-cpu``."""
    return f"dps_sweep-{script}-{profile}"


def speed_table(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The amortized sampler's time per sample against DPS's, both measured in the report's run.

    Returns:
        ``{"aps_n1" | "aps_n128": {"seconds_per_sample", "vs_reference", "vs_benchmark"}}``: the
        ratios of DPS's time per sample at :data:`SPEED_REFERENCE_NFE` steps and at the
        benchmark's ``eval.dps_nfe`` to ours (absent where that DPS entry was not run).
    """
    nfe = str(report["config"]["eval"]["dps_nfe"])
    dps = {"vs_reference": report["dps_vs_nfe"].get(str(SPEED_REFERENCE_NFE)),
           "vs_benchmark": report["dps_vs_nfe"].get(nfe) or report["methods"].get("dps")}
    table: dict[str, dict[str, float]] = {}
    for key in ("aps_n1", "aps_n128"):
        ours = report["methods"].get(key)
        if ours is None:
            continue
        row = {"seconds_per_sample": ours["seconds_per_sample"]}
        for name, entry in dps.items():
            if entry is not None:
                row[name] = entry["seconds_per_sample"] / ours["seconds_per_sample"]
        table[key] = row
    return table


def write_report(report: dict[str, Any], out: Path, stem: str) -> None:
    """``<stem>.json`` (the report as is), ``<stem>.md`` (tables) and ``<stem>.png`` (the sweep).
    The sweeps are put in order of NFE and of step size first (a resumed sweep adds points last)."""
    report["dps_vs_nfe"] = dict(sorted(report["dps_vs_nfe"].items(), key=lambda kv: int(kv[0])))
    report["dps_vs_zeta"] = dict(sorted(report["dps_vs_zeta"].items(), key=lambda kv: float(kv[0])))
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    lines = [f"# Baselines and DPS sweep: {report['workload']} ({report['profile']} profile)", "",
             f"{report['measurements']} measurements of {report['dataset']}; "
             f"{', '.join(f'{k} {v}' for k, v in report['protocol'].items())}; device {report['device']}"
             + (f", {report['versions']['cpu']} ({report['versions']['cpu_capability']})"
                if report.get("versions") else "") + ".", "",
             "| method | PSNR (dB) | PSNR std | SSIM | NFE | time per sample |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in report["methods"].items():
        lines.append(f"| {LABELS.get(name, name)} | {_fmt(r['psnr'])} | {_fmt(r.get('psnr_std'))} | "
                     f"{_fmt(r.get('ssim'), 3)} | {r['nfe']} | {_time(r['seconds_per_sample'])} |")
    if report.get("tuning"):
        lines += ["", f"Baseline settings (DPS's and MCG's step size, RED-diff's, the Tikhonov weight) as the "
                      f"benchmark chose them on {report['tuning']}; never on these measurements."]
    speed = speed_table(report)
    if speed:
        lines += ["", "Speed, measured in this run on these measurements (same batches, same machine): time per "
                      "sample and how many times faster than DPS at the paper's "
                      f"{SPEED_REFERENCE_NFE} steps and at the benchmark's {report['config']['eval']['dps_nfe']}.", "",
                  "| sampler | time per sample | x faster than DPS, "
                  f"{SPEED_REFERENCE_NFE} NFE | x faster than DPS, {report['config']['eval']['dps_nfe']} NFE |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {LABELS[k]} | {_time(r['seconds_per_sample'])} | {_fmt(r.get('vs_reference'), 0)} | "
                  f"{_fmt(r.get('vs_benchmark'), 0)} |" for k, r in speed.items()]
    if report.get("spread"):
        first = next(iter(report["spread"].values()))
        lines += ["", f"Spread of the draws: {first['k']} draws on each of the first {first['measurements']} "
                      "measurements, PSNR of one draw and of their mean, and the dispersion ratio "
                      "(1 + 1/k) sum s^2 / sum e^2 of the draws' spread s^2 around their mean to the mean's squared "
                      "error e^2, with its paired 95% bootstrap interval. Draws from the posterior the signals "
                      "come from give 1, and one draw 3 dB below the mean of many; below 1 the draws are too "
                      "close together.", "",
                  f"| sampler | one draw (dB) | mean of {first['k']} (dB) | dispersion ratio [95% CI] | "
                  "time per sample |", "|---|---:|---:|---:|---:|"]
        names = {"aps": "ours", "gaussian": "Gaussian posterior (exact draws)", "dps": "DPS (benchmark settings)"}
        lines += [f"| {names.get(k, k)} | {_fmt(r['psnr_one'])} | {_fmt(r['psnr_mean'])} | "
                  f"{r['ratio']:.2f} [{r['ratio_low']:.2f}, {r['ratio_high']:.2f}] | {_time(r['seconds_per_sample'])} |"
                  for k, r in report["spread"].items()]
    if report["dps_vs_nfe"]:
        lines += ["", f"DPS against NFE (step budget zeta * steps = {report['zeta_budget']:g}):", "",
                  "| NFE | zeta | PSNR (dB) | time per sample |", "|---:|---:|---:|---:|"]
        lines += [f"| {k} | {r['zeta']:.3g} | {_fmt(r['psnr'])} | {_time(r['seconds_per_sample'])} |"
                  for k, r in report["dps_vs_nfe"].items()]
    if report["dps_vs_zeta"]:
        lines += ["", f"DPS against step size at {report['zeta_steps']} steps:", "",
                  "| zeta | zeta * steps | PSNR (dB) |", "|---:|---:|---:|"]
        lines += [f"| {float(k):.3g} | {float(k) * report['zeta_steps']:g} | {_fmt(r['psnr'])} |"
                  for k, r in report["dps_vs_zeta"].items()]
    if report["dps_vs_nfe"] or report["dps_vs_zeta"]:
        _plot(report, out / f"{stem}.png")
        lines += ["", f"![DPS PSNR against NFE and step size]({stem}.png)"]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    panels = [(axes[0], report["dps_vs_nfe"], "NFE (DPS steps)", int),
              (axes[1], report["dps_vs_zeta"], f"step size zeta at {report['zeta_steps']} steps", float)]
    refs = {k: report["methods"][k]["psnr"] for k in ("aps_n1", "aps_n128", "harmonic", "harmonic_tikhonov")
            if k in report["methods"]}
    for ax, sweep, xlabel, cast in panels:
        if sweep:
            xs = [cast(k) for k in sweep]
            ax.plot(xs, [r["psnr"] for r in sweep.values()], "o-", color="C3", label="DPS")
        for i, (k, v) in enumerate(refs.items()):
            ax.axhline(v, ls="--", color=("C0", "C1", "C2", "C4")[i], lw=1, label=LABELS[k])
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("PSNR (dB)")
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{report['workload']}: {report['measurements']} held-out measurements", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="bunny-mnist")
    add_config_arguments(p)
    p.add_argument("--n", type=int, default=64, help="held-out measurements")
    p.add_argument("--nfe", type=int, nargs="*", default=[10, 30, 100, 300, 1000],
                   help="DPS step counts at the default step budget (none: skip)")
    p.add_argument("--budgets", type=float, nargs="*", default=[25, 100, 250, 1000, 4000],
                   help="zeta * steps values scanned at --zeta-steps steps (none: skip)")
    p.add_argument("--zeta-steps", type=int, default=200)
    p.add_argument("--spread-k", type=int, default=8,
                   help="draws per measurement for the spread of the draws of ours, the Gaussian posterior and "
                        "the benchmark's DPS (0: skip)")
    p.add_argument("--spread-n", type=int, default=16, help="measurements (the first) for the spread of the draws")
    p.add_argument("--methods", nargs="*", default=None,
                   help="baselines to run (default: all that apply to the task)")
    p.add_argument("--base-out", type=Path, default=None, help="the benchmark's folder (default runs/<script>)")
    p.add_argument("--out", type=Path, default=None, help="where the report goes (default: --base-out)")
    p.add_argument("--fresh", action="store_true", help="ignore a previous report in --out")
    args = p.parse_args(argv)
    script = args.workload.replace("-", "_")
    base = args.base_out or Path("runs") / script
    out = args.out or base
    out.mkdir(parents=True, exist_ok=True)
    # the benchmark run's configuration, as it ran (its measurements, tuning and flow are reused):
    # --n only chooses how many of its held-out signals this sweep measures
    bench = config_from_args(args, defaults=profile_defaults(args.workload, args.profile))
    # held-out sets may measure each field twice: ask for enough fields to have --n measurements
    config = replace(bench, eval=replace(bench.eval, n_eval=2 * args.n))
    workload = WORKLOADS[args.workload](config)
    task = workload.tasks[0]
    device = torch.device("cpu")
    x = workload.eval_sets[0].x[: args.n]
    if x.shape[0] < args.n:
        raise ValueError(f"--n {args.n}: the held-out set of {workload.name} has only {x.shape[0]} signals")
    prior = stage_prior(workload, config, base, device=device, progress=False).eval()
    g = torch.Generator().manual_seed(123)
    op = task.make_operator(x.shape[0], g)
    y = op(x, generator=g)
    img = workload.image_shape
    zeta_budget = 250.0

    report: dict[str, Any] = {
        "workload": workload.name, "task": task.name, "profile": config.profile, "measurements": args.n,
        "protocol": task.description, "dataset": workload.eval_sets[0].dataset,
        "device": f"cpu ({torch.get_num_threads()} threads)", "zeta_budget": zeta_budget,
        "zeta_steps": args.zeta_steps, "config": config.resolved().to_dict(), "versions": environment_versions(),
        "methods": {}, "dps_vs_nfe": {}, "dps_vs_zeta": {}, "spread": {}}
    stem = report_stem(script, config.profile)
    path = out / f"{stem}.json"
    if path.is_file() and not args.fresh:
        old = json.loads(path.read_text())
        same = all(old.get(k) == report[k] for k in ("workload", "task", "profile", "measurements", "zeta_steps"))
        if same:
            for key in ("methods", "dps_vs_nfe", "dps_vs_zeta", "spread"):
                report[key] = old.get(key, {})
            print(f"resuming from {path}", flush=True)

    def evaluate(section: str, key: str, sampler: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        if key in report[section]:
            r = report[section][key]
        else:
            tic = time.strftime("%H:%M:%S")
            o = run_sampler(sampler, y, op, n=1, batch_size=min(config.eval.batch_size, args.n),
                            generator=torch.Generator().manual_seed(0))
            s = score_estimate(o.first, x, seconds_per_sample=o.seconds_per_sample, nfe=o.nfe, image_shape=img,
                               data_range=workload.data_range)
            r = {"psnr": s.psnr, "ssim": s.ssim, "seconds_per_sample": s.seconds_per_sample, "nfe": s.nfe,
                 "psnr_std": s.extra["psnr_std"], "psnr_raw": s.extra["psnr_raw"], **(extra or {})}
            report[section][key] = r
            write_report(report, out, stem)
            print(f"  [{tic}] {section:10s} {key:18s} nfe {r['nfe']:5d}  psnr {r['psnr']:6.2f}  "
                  f"{_time(r['seconds_per_sample'])} per sample", flush=True)
        return r

    # the amortized flow of the benchmark run, when it exists
    flow_file = base / task.name / "posterior.pt"
    posterior = None
    if (base / task.name / "complete").is_file():
        posterior = AmortizedPosterior.load(flow_file, fingerprint=workload.geometry.fingerprint()).eval()
    if posterior is not None and not {"aps_n1", "aps_n128"} <= report["methods"].keys():
        scores, _ = score_posterior(posterior, x, y, op, n_posterior=config.eval.n_posterior, batch_size=args.n,
                                    generator=torch.Generator().manual_seed(7), image_shape=img,
                                    data_range=workload.data_range)
        for key, s in scores.items():
            report["methods"][key] = {"psnr": s.psnr, "ssim": s.ssim, "seconds_per_sample": s.seconds_per_sample,
                                      "nfe": s.nfe, **s.extra}
            print(f"  flow {key}: psnr {s.psnr:.2f}  {_time(s.seconds_per_sample)} per sample", flush=True)
        write_report(report, out, stem)
    elif not flow_file.is_file():
        print(f"  no finished flow in {base / task.name}: the table has no 'ours' rows", flush=True)

    print(f"DPS against NFE (step budget zeta * steps = {zeta_budget:g}):", flush=True)
    for nfe in args.nfe:
        evaluate("dps_vs_nfe", str(nfe), DPS(prior, steps=nfe, zeta=zeta_budget / nfe), {"zeta": zeta_budget / nfe})
    print(f"DPS against step size at {args.zeta_steps} steps:", flush=True)
    for budget in args.budgets:
        zeta = budget / args.zeta_steps
        evaluate("dps_vs_zeta", f"{zeta:g}", DPS(prior, steps=args.zeta_steps, zeta=zeta), {"zeta": zeta})

    print("Baselines as configured in the benchmark:", flush=True)
    wanted = list(task.baselines) if args.methods is None else args.methods
    unknown = set(wanted) - set(task.baselines)
    if unknown:
        raise ValueError(f"--methods {sorted(unknown)} do not apply to {task.name}; choose from {task.baselines}")
    # every tunable setting chosen on the benchmark's validation measurements (loaded from its
    # tuning.json when the benchmark chose them for this prior), never on the measurements above
    bench_workload = WORKLOADS[args.workload](bench)
    train, _ = stage_measurements(bench_workload, bench_workload.tasks[0], bench, base)
    val = validation_measurements(train, bench)
    validation = validation_description(bench_workload, bench, val)
    tuned = stage_tuning(bench_workload, bench_workload.tasks[0], bench, prior, val.x, val.y, val.operator, base,
                         validation=validation)
    report["tuning"] = f"{val.x.shape[0]} validation measurements ({validation}; `{base / task.name / 'tuning.json'}`)"
    gaussian = stage_gaussian(workload, config, base, device=device) if "gaussian" in wanted else None
    samplers = build_baselines(workload, task, config, prior, tuned, gaussian)
    for name, sampler in samplers.items():
        if name.split("_")[0] not in wanted:
            continue
        swept = report["dps_vs_nfe"].get(str(sampler.steps)) if name == "dps" else None
        if swept is not None and abs(swept["zeta"] - sampler.zeta) < 1e-12:
            report["methods"]["dps"] = swept  # same sampler, same seed: not rerun
            continue
        evaluate("methods", name, sampler)

    if args.spread_k:
        n_spread = min(args.spread_n, args.n)
        print(f"Spread of {args.spread_k} draws on the first {n_spread} measurements:", flush=True)
        idx = torch.arange(n_spread)
        spread_samplers = {"aps": posterior, "gaussian": samplers.get("gaussian"), "dps": samplers.get("dps")}
        for name, sampler in spread_samplers.items():
            if sampler is None or name in report["spread"]:
                continue
            tic = time.strftime("%H:%M:%S")
            r = draw_spread(sampler, x[idx], y[idx], op.select(idx), k=args.spread_k,
                            batch_size=min(config.eval.batch_size, n_spread),
                            generator=torch.Generator().manual_seed(11), data_range=workload.data_range,
                            image_shape=img)
            report["spread"][name] = {**r, "measurements": n_spread}
            write_report(report, out, stem)
            print(f"  [{tic}] {name:10s} one draw {r['psnr_one']:6.2f}  mean of {r['k']} {r['psnr_mean']:6.2f}  "
                  f"dispersion ratio {r['ratio']:.2f} [{r['ratio_low']:.2f}, {r['ratio_high']:.2f}]", flush=True)
    write_report(report, out, stem)
    print((out / f"{stem}.md").read_text())
    return report


if __name__ == "__main__":
    main()
