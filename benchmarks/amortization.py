"""What amortization costs (issue 16, item 5): the benchmark's amortized flow against a flow fitted
to each measurement alone (:func:`~manifold_ps.flows.fit_single`, Feng et al.) at equal total compute.

The amortized flow of the benchmark run in ``--base-out`` (its ``<task>/posterior.pt``, trained
there if missing) took ``T`` seconds to train and then serves any number of measurements. Here
each of the first ``--measurements`` (``K``) held-out measurements gets its own flow, of the same
architecture but unconditional, on the same Gaussian-posterior base over ``u = x_{t_min}`` (exact
for that one measurement, so the per-measurement flow starts where the amortized one started),
decoded by the same prior, trained with the same loss at the same learning rate (or ``--lr``;
constant after a short warm-up, so that every point of its curve is a finished fit), for ``T / K`` seconds: the
same total compute as the amortized flow. Each fit is scored at ``--fractions`` of that budget
(the scoring time is not counted).

All samplers are scored on the same measurements, with the same number of draws and the same
functions as the benchmark (one draw, the mean of ``eval.n_posterior`` draws projected onto the
data range, 95% bootstrap intervals over the fields, coverage of central intervals, std on
missing and observed vertices): the amortized flow, its untrained start (the decoded Gaussian
posterior) and the per-measurement flows at each budget. The break-even count is
``T / t*``, with ``t*`` the per-measurement time at which the per-measurement flows' one draw
first reaches the amortized flow's: from that many measurements on, amortizing is cheaper for the
same quality (a bound when no budget reaches it).

    python benchmarks/amortization.py --base-out runs/bunny_mnist          # after the benchmark ran there
    python benchmarks/amortization.py --base-out runs/bunny_mnist --table-only --commit
    python benchmarks/amortization.py --profile smoke --measurements 2 --base-out /tmp/am/bench --out /tmp/am/out
    python benchmarks/amortization.py --workload image-restoration --task super-resolution --base-out runs/image_restoration

The report is ``<out>/<stem>.json``, ``<out>/<stem>.md`` and ``<out>/figures/<stem>.png``
(PSNR against per-measurement seconds), with ``<stem>`` = ``amortization-<script>-<profile>``
(``<script>-<task>`` for a task other than the workload's first); ``--commit`` copies them into ``benchmarks/results/`` with that layout.
"""

import argparse
import json
import math
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from manifold_ps.benchmarking.evaluate import SamplerOutput, run_sampler, score_estimate
from manifold_ps.benchmarking.pipeline import (Measured, gaussian_base, new_flow, score_arguments, stage_flow,
                                               stage_measurements, stage_prior)
from manifold_ps.benchmarking.workloads import WORKLOADS, profile_defaults
from manifold_ps.config import Config, add_config_arguments, config_from_args
from manifold_ps.flows import AmortizedPosterior, ConditionalRealNVP, fit_single

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
"""Where ``--commit`` copies the report."""

WORKLOADS_HERE = ("bunny-mnist", "era5-imputation", "image-restoration")
"""Workloads whose tasks have the Gaussian base this comparison needs (its first task unless
``--task`` names another; the image tasks' operators are shared by their measurements, the case the
dense base factorises)."""


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def report_stem(script: str, profile: str, task: str | None = None) -> str:
    """File name (without suffix) of the report, e.g. ``amortization-bunny_mnist-cpu``, or
    ``amortization-image_restoration-super_resolution-cpu`` for the task ``super-resolution``
    (``task`` is named only when it is not the workload's first)."""
    return f"amortization-{script}" + (f"-{task.replace('-', '_')}" if task else "") + f"-{profile}"


def scores(out: SamplerOutput, m: Measured, workload: Any) -> dict[str, dict[str, float]]:
    """One draw and the mean of the draws of ``out``, scored as the benchmark scores its flow."""
    kw = score_arguments(workload, m)
    one = score_estimate(out.first, m.x, seconds_per_sample=out.seconds_per_sample, nfe=out.nfe, **kw)
    mean = score_estimate(out.mean, m.x, seconds_per_sample=out.seconds_per_sample, nfe=out.nfe, samples=out.kept,
                          std=out.std, **kw)
    return {"one": one.to_dict(), "mean": mean.to_dict()}


def _concat(outs: list[SamplerOutput]) -> SamplerOutput:
    return SamplerOutput(first=torch.cat([o.first for o in outs]), mean=torch.cat([o.mean for o in outs]),
                         std=torch.cat([o.std for o in outs]), kept=torch.cat([o.kept for o in outs]),
                         seconds_per_sample=sum(o.seconds_per_sample for o in outs) / len(outs), nfe=outs[0].nfe,
                         n=outs[0].n)


def single_sampler(workload: Any, config: Config, prior: Any, seed: int) -> AmortizedPosterior:
    """The per-measurement sampler: the benchmark flow's architecture without a condition, on the
    Gaussian base of the prior's Gaussian, decoded at ``flow.t_min`` (untrained: the identity)."""
    flow_cfg = config.flow
    if prior.gaussian is None:
        raise ValueError("the per-measurement flow starts from the prior's Gaussian: this prior has none "
                         "(prior.parameterization='wiener' carries one)")
    _, evecs = workload.geometry.eigenbasis(flow_cfg.geometry_features + 1)
    torch.manual_seed(seed)
    flow = ConditionalRealNVP(workload.channels, prior.layout, 0, **flow_cfg.network_kwargs(),
                              geometry_features=evecs[:, 1:].to(torch.get_default_dtype()), seed=seed)
    # the denoised likelihood (this sampler draws no decoder error), in the flow's rank and precision
    base = gaussian_base(prior.gaussian, replace(flow_cfg, likelihood="denoised", decoder_noise=False))
    post = AmortizedPosterior(flow, condition="none", base=base, decode=flow_cfg.t_min,
                              normalisation=workload.normalisation, fingerprint=workload.geometry.fingerprint())
    return post.attach_prior(prior)


def fit_one(workload: Any, config: Config, prior: Any, m: Measured, i: int, *, seconds: float,
            fractions: list[float], n_z: int, lr: float, n_draws: int, seed: int) -> list[dict[str, Any]]:
    """Fit measurement ``i`` alone for ``seconds`` of training; its draws at each fraction of them."""
    y, op = m.y[i:i + 1], m.operator.select(torch.tensor([i]))
    post = single_sampler(workload, config, prior, seed)
    flow_cfg = config.flow.resolved()
    marks = sorted(fractions)
    points: list[dict[str, Any]] = []
    clock = {"start": time.perf_counter(), "paused": 0.0}

    def draw(model: AmortizedPosterior, step: int, spent: float) -> None:
        g = torch.Generator().manual_seed(seed + 1000 + i)  # as the start check draws the amortized one
        out = run_sampler(model.eval(), y, op, n=n_draws, batch_size=1, keep=n_draws, generator=g)
        model.train()
        points.append({"seconds": spent, "step": step, "out": out})

    draw(post, 0, 0.0)  # the untrained start, as a check: it must equal the amortized flow's start
    if seconds <= 0:
        return points

    def callback(trainer: Any, step: int, logs: dict[str, float]) -> bool:
        spent = time.perf_counter() - clock["start"] - clock["paused"]
        while marks and spent >= marks[0] * seconds:
            tic = time.perf_counter()
            draw(trainer.ema_model, step, spent)
            clock["paused"] += time.perf_counter() - tic
            marks.pop(0)
        return not marks

    fit_single(post, prior, y, op, n_z=n_z, max_steps=10**7, lr=lr, t_min=flow_cfg.t_min,
               n_time=flow_cfg.n_time, prior_term=flow_cfg.prior_term, entropy_gradient=flow_cfg.entropy_gradient,
               seed=seed + i, lr_schedule="constant", warmup_steps=10,
               ema_decay=flow_cfg.ema_decay, grad_clip=flow_cfg.grad_clip, spike_guard=flow_cfg.spike_guard,
               progress=False, callback=callback)
    return points


def _single_what(multiple: float, steps: float, seconds: float, k: int) -> str:
    """What a per-measurement row is: its time as a multiple of the equal-compute one, steps and total."""
    return (f"{multiple:g} x the equal-compute budget: {steps:.0f} steps on average, {seconds * k / 60:.1f} min "
            f"for the {k} measurements")


def _row(label: str, what: str, s: dict[str, dict[str, float]], **extra: Any) -> dict[str, Any]:
    return {"label": label, "what": what, "methods": s, **extra}


def run(args: argparse.Namespace, config: Config, out: Path) -> dict[str, Any]:
    workload = WORKLOADS[args.workload](config)
    task = workload.task(args.task)
    device = torch.device("cpu")
    base_out = args.base_out
    prior = stage_prior(workload, config, base_out, device=device, progress=False).eval()
    train, evals = stage_measurements(workload, task, config, base_out)
    held = evals["heldout"]
    k = min(args.measurements, held.x.shape[0])
    m = held.subset(torch.arange(k))
    if m.groups is not None and len(torch.unique(m.groups)) < 2:
        raise ValueError(f"the first {k} held-out measurements share one field: the intervals resample fields, "
                         "so --measurements must cover at least two")
    amortized = stage_flow(workload, task, config, prior, train, base_out, device=device, progress=False).eval()
    complete = json.loads((base_out / task.name / "complete").read_text())
    t_amortized = float(complete["seconds_last_invocation"])
    n = config.eval.n_posterior
    c = config.eval
    rows = []
    for label, sampler, what in (
            ("amortized", amortized, f"the benchmark's flow: {complete['steps']} steps in {t_amortized / 60:.1f} min "
                                     f"on {train.y.shape[0]} training measurements, then any number of measurements"),
            ("amortized, untrained", new_flow(workload, task, config, prior, train, base_out, device=device).eval(),
             "its start: the exact Gaussian posterior over u, decoded")):
        g = torch.Generator().manual_seed(config.seed + c.seed_offset)
        o = run_sampler(sampler, m.y, m.operator, n=n, batch_size=c.batch_size, chunk=c.chunk, keep=n, generator=g)
        rows.append(_row(label, what, scores(o, m, workload), seconds_per_measurement=t_amortized / k if label ==
                         "amortized" else 0.0))
        _log(f"{label}: one draw {rows[-1]['methods']['one']['psnr']:.2f} dB, mean {rows[-1]['methods']['mean']['psnr']:.2f}")
    seconds = t_amortized / k * args.budget
    lr = config.flow.lr if args.lr is None else args.lr
    fractions = sorted(args.fractions)
    per: dict[float, list[SamplerOutput]] = {f: [] for f in [0.0, *fractions]}
    steps: dict[float, list[int]] = {f: [] for f in fractions}
    spent: dict[float, list[float]] = {f: [] for f in fractions}
    for i in range(k):
        tic = time.perf_counter()
        points = fit_one(workload, config, prior, m, i, seconds=seconds, fractions=fractions, n_z=args.n_z,
                         lr=lr, n_draws=n, seed=config.seed)
        per[0.0].append(points[0]["out"])
        for f, p in zip(fractions, points[1:]):
            per[f].append(p["out"])
            steps[f].append(p["step"])
            spent[f].append(p["seconds"])
        _log(f"measurement {i + 1}/{k}: {points[-1]['step']} steps in {points[-1]['seconds']:.1f} s "
             f"({time.perf_counter() - tic:.0f} s with scoring)")
    start = scores(_concat(per[0.0]), m, workload)
    # fairness check: untrained, both samplers are the decoded Gaussian posterior, draw for draw
    untrained = new_flow(workload, task, config, prior, train, base_out, device=device).eval()
    start_difference = 0.0
    for i in range(k):
        g = torch.Generator().manual_seed(config.seed + 1000 + i)
        o = run_sampler(untrained, m.y[i:i + 1], m.operator.select(torch.tensor([i])), n=n, batch_size=1, keep=n,
                        generator=g)
        start_difference = max(start_difference, float((o.kept - per[0.0][i].kept).abs().max()))
    for f in fractions:
        mean_seconds = sum(spent[f]) / k
        rows.append(_row(f"per measurement, {mean_seconds:.1f} s each", _single_what(f * args.budget, sum(steps[f]) / k,
                                                                                    mean_seconds, k),
                         scores(_concat(per[f]), m, workload), seconds_per_measurement=mean_seconds, fraction=f,
                         steps=sum(steps[f]) / k))
        _log(f"per measurement at {f:g}: one draw {rows[-1]['methods']['one']['psnr']:.2f} dB")
    return {"workload": workload.name, "task": task.name, "profile": config.profile, "measurements": k,
            "n_posterior": n, "amortized_seconds": t_amortized, "amortized_steps": complete["steps"],
            "budget_seconds_per_measurement": seconds, "budget": args.budget, "n_z": args.n_z, "lr": lr,
            "start_check": start, "start_difference": start_difference, "rows": rows}


def break_even(doc: dict[str, Any]) -> dict[str, Any]:
    """From how many measurements amortizing is cheaper for the same one-draw PSNR (``doc``: the report)."""
    rows, t_amortized = doc["rows"], doc["amortized_seconds"]
    target = next(r for r in rows if r["label"] == "amortized")["methods"]["one"]["psnr"]
    start = next(r for r in rows if r["label"] == "amortized, untrained")["methods"]["one"]["psnr"]
    singles = sorted((r for r in rows if "fraction" in r), key=lambda r: r["seconds_per_measurement"])
    if start >= target:
        text = (f"none: the untrained start of both samplers (one draw {start:.2f} dB) is already at or above the "
                f"trained amortized flow ({target:.2f} dB), so the amortized flow's training does not pay for itself "
                "in one-draw PSNR")
        best = max(singles, key=lambda r: r["methods"]["one"]["psnr"], default=None)
        if best is not None and best["methods"]["one"]["psnr"] > start:
            one, mean = best["methods"]["one"]["psnr"], best["methods"]["mean"]["psnr"]
            amortized_mean = next(r for r in rows if r["label"] == "amortized")["methods"]["mean"]["psnr"]
            text += (f"; a flow fitted to each measurement does: {one:.2f} dB one draw and {mean:.2f} dB mean "
                     f"({one - target:+.2f} and {mean - amortized_mean:+.2f} dB against the amortized flow) after "
                     f"{best['seconds_per_measurement']:.1f} s each, so here amortizing buys time per measurement, "
                     "not quality")
        else:
            text += ", nor does a flow fitted to each measurement"
        return {"measurements": None, "bound": "none", "text": text}
    reached = next((r for r in singles if r["methods"]["one"]["psnr"] >= target), None)
    if reached is None:
        longest = singles[-1]["seconds_per_measurement"] if singles else float("nan")
        return {"measurements": t_amortized / longest if singles else None, "bound": "below",
                "text": f"no per-measurement budget up to {longest:.1f} s reached the amortized flow's one draw "
                        f"({target:.2f} dB): amortizing is cheaper from fewer than {t_amortized / longest:.1f} "
                        f"measurements on"}
    t = reached["seconds_per_measurement"]
    return {"measurements": t_amortized / t, "bound": "at most",
            "text": f"per-measurement flows reach the amortized flow's one draw ({target:.2f} dB) within {t:.1f} s "
                    f"each: amortizing is cheaper from at most {t_amortized / t:.1f} measurements on"}


def _cell(e: dict[str, float]) -> str:
    if "psnr_low" in e:
        return f"{e['psnr']:.2f} [{e['psnr_low']:.2f}, {e['psnr_high']:.2f}]"
    return f"{e['psnr']:.2f}"


def write_report(doc: dict[str, Any], out: Path, stem: str) -> None:
    """``<stem>.json``, ``<stem>.md`` and ``figures/<stem>.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    k, n = doc["measurements"], doc["n_posterior"]
    budget, equal = doc.get("budget", 1.0), doc["amortized_seconds"] / doc["measurements"]
    for r in doc["rows"]:  # a per-measurement row's time against the equal-compute one
        if "fraction" in r:
            r["what"] = _single_what(r["fraction"] * budget, r["steps"], r["seconds_per_measurement"], k)
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=1))
    lines = [f"# Amortized against per-measurement flows: {doc['workload']}, {doc['task']} ({doc['profile']} profile)",
             "",
             f"The first {k} held-out measurements of the benchmark, each sampler scored with {n} draws as the "
             f"benchmark scores its flow. The amortized flow trained for {doc['amortized_seconds'] / 60:.1f} min "
             f"({doc['amortized_steps']} steps); each per-measurement flow (same architecture, unconditional, the same "
             f"Gaussian-posterior base and decoder, the same loss, learning rate {doc['lr']:g} constant after warm-up, "
             f"{doc['n_z']} draws per step) had {doc['budget_seconds_per_measurement']:.1f} s"
             + (f", so that the {k} of them together cost what the amortized flow cost" if budget == 1 else
                f", {budget:g} x the equal-compute time ({equal:.1f} s, at which the {k} of them together cost what "
                "the amortized flow cost)")
             + ". PSNR in dB with 95% bootstrap intervals over the fields.", "",
             "| sampler | PSNR one draw | PSNR mean | cover 90% missing (all without a mask) | std missing / observed | s per measurement | what |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in doc["rows"]:
        one, mean = r["methods"]["one"], r["methods"]["mean"]
        ratio = f"{mean['std_missing']:.4f} / {mean['std_observed']:.4f}" if "std_missing" in mean else "-"
        cover = f"{mean['coverage90_missing']:.3f}" if "coverage90_missing" in mean else f"{mean.get('coverage90', math.nan):.3f}"
        lines.append(f"| {r['label']} | {_cell(one)} | {_cell(mean)} | {cover} | {ratio} | "
                     f"{r['seconds_per_measurement']:.1f} | {r['what']} |")
    start = doc["start_check"]["one"]["psnr"]
    untrained = next(r for r in doc["rows"] if r["label"] == "amortized, untrained")["methods"]["one"]["psnr"]
    lines += ["", f"**Break-even:** {doc['break_even']['text']}.", "",
              f"Check: before training, each per-measurement flow draws what the untrained amortized flow draws "
              f"from the same noise (largest difference {doc['start_difference']:.1e}; one draw {start:.2f} dB "
              f"against {untrained:.2f} dB above, with other noise draws).",
              "", f"![PSNR against seconds per measurement](figures/{stem}.png)", ""]
    (out / f"{stem}.md").write_text("\n".join(lines))
    _plot(doc, out / "figures" / f"{stem}.png")


def _plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    singles = [r for r in doc["rows"] if "fraction" in r]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, style in (("one", "o-"), ("mean", "s--")):
        ax.plot([r["seconds_per_measurement"] for r in singles], [r["methods"][key]["psnr"] for r in singles], style,
                label=f"per measurement, {'one draw' if key == 'one' else 'mean'}")
    for label, color in (("amortized", "tab:red"), ("amortized, untrained", "tab:gray")):
        r = next(q for q in doc["rows"] if q["label"] == label)
        for key, ls in (("one", "-"), ("mean", "--")):
            ax.axhline(r["methods"][key]["psnr"], color=color, ls=ls, lw=1,
                       label=f"{label}, {'one draw' if key == 'one' else 'mean'}")
    ax.axvline(doc["amortized_seconds"] / doc["measurements"], color="k", lw=0.8, ls=":", label="equal total compute")
    ax.set_xscale("log")
    ax.set_xlabel("training seconds per measurement")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"{doc['workload']}: amortized vs per measurement, {doc['measurements']} measurements", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def commit(out: Path, stem: str, target: Path) -> list[Path]:
    """Copy the report into ``target`` (``figures/`` beside it)."""
    written = []
    for name in (f"{stem}.json", f"{stem}.md", f"figures/{stem}.png"):
        dst = target / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / name, dst)
        written.append(dst)
    return written


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=WORKLOADS_HERE, default="bunny-mnist")
    p.add_argument("--task", default=None, help="the workload's task (default its first)")
    add_config_arguments(p)
    p.add_argument("--base-out", type=Path, default=None,
                   help="the benchmark's folder with the prior, measurements and amortized flow (default runs/<script>)")
    p.add_argument("--out", type=Path, default=None, help="default runs/amortization-<script>")
    p.add_argument("--measurements", type=int, default=16, help="held-out measurements fitted one by one")
    p.add_argument("--budget", type=float, default=1.0,
                   help="per-measurement budget as a multiple of the equal-compute one (amortized seconds / K)")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.125, 0.25, 0.5, 1.0],
                   help="fractions of the budget at which each fit is scored")
    p.add_argument("--n-z", type=int, default=16, help="flow draws per step of a per-measurement fit")
    p.add_argument("--lr", type=float, default=None, help="learning rate of the per-measurement fits (default flow.lr)")
    p.add_argument("--table-only", action="store_true", help="rewrite the report from the stored JSON")
    p.add_argument("--commit", type=Path, nargs="?", const=RESULTS, default=None, metavar="DIR",
                   help=f"copy the report into DIR (default {RESULTS.relative_to(ROOT)}/)")
    args = p.parse_args(argv)
    if args.measurements < 1 or args.budget <= 0 or any(not 0 < f for f in args.fractions):
        raise ValueError("--measurements >= 1, --budget > 0 and positive --fractions are needed")
    script = args.workload.replace("-", "_")
    config = config_from_args(args, defaults=profile_defaults(args.workload, args.profile))
    args.base_out = args.base_out or Path("runs") / script
    out = args.out or Path("runs") / f"amortization-{script}"
    workload = WORKLOADS[args.workload](config)
    task = workload.task(args.task)  # refused here, before anything trains
    stem = report_stem(script, config.profile, task.name if task is not workload.tasks[0] else None)
    if args.table_only:
        doc = json.loads((out / f"{stem}.json").read_text())
    else:
        doc = run(args, config, out)
    doc["break_even"] = break_even(doc)
    write_report(doc, out, stem)
    print((out / f"{stem}.md").read_text(), flush=True)
    if args.commit is not None:
        for path in commit(out, stem, args.commit):
            _log(f"wrote {path}")
    return doc


if __name__ == "__main__":
    main()
