"""Does training lower the objective it minimises? The reverse-KL bound of flow-ablation rows on
held-out measurements.

For every sampler -- the untrained start of a row (``new_flow``) or a trained row's
``<out>/<row>-s<seed>/posterior.pt`` -- the loss of :func:`~manifold_ps.flows.reverse_kl_loss`
is averaged over the first ``--measurements`` held-out measurements of the benchmark
(``<base-out>/<task>/measurements.pt``), one at a time, ``--draws`` flow draws each and ``--repeats`` passes,
with the ELBO prior term at ``--n-time`` time draws per sample (a steadier estimate than the one
time draw of training). Its terms are reported per dimension: ``loss = fidelity + prior +
entropy``, an upper bound on ``KL(q || p(. | y)) - log p(y)`` up to a constant shared by samplers
of the same model (``flow.likelihood``): lower is a better posterior under that model. Every
sampler sees the same measurements and the same random draws, so each row's difference to the
first row of its model is paired by measurement, with a 95% bootstrap interval over measurements.

    python benchmarks/flow_bound.py --base-out runs/bunny_v3 --ablation runs/abl_v3 \\
        --rows gaussian-step0 gaussian gaussian-score marginal-step0 marginal-score

writes ``<ablation>/flow_bound-<script>-<profile>.{json,md}`` (``--commit`` copies them to
``benchmarks/results/``).
"""

import argparse
import json
import shutil
import time
from pathlib import Path

from typing import Any

import numpy as np
import torch
from scipy.stats import bootstrap

import flow_ablation as fa
from manifold_ps.benchmarking.pipeline import new_flow
from manifold_ps.benchmarking.workloads import profile_defaults
from manifold_ps.config import add_config_arguments, apply_overrides, config_from_args
from manifold_ps.flows import AmortizedPosterior, reverse_kl_loss


def sampler(s: fa.Setting, row: str, seed: int, ablation: Path) -> AmortizedPosterior:
    """The row's sampler: built untrained, or loaded from the ablation's row folder."""
    spec = fa.ROWS[row]
    if not spec.trained:
        config = apply_overrides(s.config, {**spec.overrides, "seed": seed})
        return new_flow(s.workload, s.task, config, s.prior, s.train, s.base_out, device=s.device).eval()
    path = ablation / f"{row}-s{seed}" / "posterior.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run benchmarks/flow_ablation.py --rows {row} first")
    post = AmortizedPosterior.load(path, fingerprint=s.workload.geometry.fingerprint()).eval()
    return post.attach_prior(s.prior) if post.decode is not None else post


@torch.no_grad()
def bound(s: fa.Setting, post: AmortizedPosterior, *, measurements: int, draws: int, n_time: int, repeats: int,
          seed: int) -> dict[str, Any]:
    """Loss terms per dimension, averaged over the held-out measurements, and the loss of each
    measurement (``per_measurement``); one generator, consumed measurement by measurement in the
    same order for every sampler, so two samplers see the same draws of ``z``, times and noises."""
    k = min(measurements, s.held.y.shape[0])
    g = torch.Generator(s.device).manual_seed(seed)
    t_min = post.decode if post.decode is not None else s.config.flow.t_min
    per: list[dict[str, float]] = []
    for i in range(k):
        index = torch.tensor([i])
        y, op = s.held.y[index], s.held.operator.select(index)
        terms = [reverse_kl_loss(post, s.prior, op, y, n_z=draws, n_time=n_time, t_min=t_min, generator=g)[1]
                 for _ in range(repeats)]
        per.append({key: sum(t[key] for t in terms) / repeats for key in terms[0]})
    out: dict[str, Any] = {key: sum(p[key] for p in per) / k for key in per[0]}
    out["per_measurement"] = [p["loss"] for p in per]
    return out


def paired_interval(a: list[float], b: list[float], seed: int) -> tuple[float, float, float]:
    """Mean of ``b - a`` over measurements with its 95% bootstrap interval (``scipy.stats.bootstrap``)."""
    diff = np.asarray(b) - np.asarray(a)
    res = bootstrap((diff,), np.mean, confidence_level=0.95, n_resamples=2000,
                    random_state=np.random.default_rng(seed))
    return float(diff.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=fa.ABLATED, default="bunny-mnist")
    add_config_arguments(p)
    p.add_argument("--rows", nargs="+", choices=list(fa.ROWS), required=True)
    p.add_argument("--seed", type=int, default=0, help="the rows' seed")
    p.add_argument("--measurements", type=int, default=32)
    p.add_argument("--draws", type=int, default=4)
    p.add_argument("--n-time", type=int, default=16)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--base-out", type=Path, required=True, help="the benchmark's folder (prior, measurements)")
    p.add_argument("--ablation", type=Path, required=True, help="the flow ablation's folder (trained rows)")
    p.add_argument("--commit", type=Path, nargs="?", const=fa.RESULTS, default=None, metavar="DIR")
    args = p.parse_args(argv)
    config = config_from_args(args, defaults=profile_defaults(args.workload, args.profile))
    s = fa.setting(args.workload, config, args.base_out)
    stem = f"flow_bound-{args.workload.replace('-', '_')}-{config.profile}"
    rows: list[dict[str, Any]] = []
    for row in args.rows:
        tic = time.perf_counter()
        post = sampler(s, row, args.seed, args.ablation)
        terms = bound(s, post, measurements=args.measurements, draws=args.draws, n_time=args.n_time,
                      repeats=args.repeats, seed=config.seed)
        start = next((r for r in rows if r["likelihood"] == post.likelihood), None)  # first row of this model
        if start is not None:
            terms["vs"] = start["row"]
            terms["difference"], terms["difference_low"], terms["difference_high"] = paired_interval(
                start["per_measurement"], terms["per_measurement"], config.seed)
        rows.append({"row": row, "seed": args.seed, "likelihood": post.likelihood, **terms})
        print(f"[{time.strftime('%H:%M:%S')}] {row}: loss {terms['loss']:.4f} ({time.perf_counter() - tic:.0f} s)",
              flush=True)
    lines = [f"# Held-out reverse-KL bound of flow-ablation rows, {s.workload.name}", "",
             f"Loss of `reverse_kl_loss` per dimension on the first {args.measurements} held-out measurements, "
             f"{args.draws} draws each, {args.repeats} passes, ELBO prior term at {args.n_time} time draws; the "
             "same measurements and generator seed for every row. Lower is a better posterior under the row's "
             "model; values compare only within one `likelihood` (the fidelity's dropped constant differs). "
             "The difference is to the first row of the same likelihood, per measurement, with its 95% bootstrap "
             "interval over measurements.", "",
             "| row | likelihood | loss | difference [95% CI] | fidelity | prior | entropy |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        diff = (f"{r['difference']:+.4f} [{r['difference_low']:+.4f}, {r['difference_high']:+.4f}] vs {r['vs']}"
                if "vs" in r else "–")
        lines.append(f"| {r['row']} | {r['likelihood']} | {r['loss']:.4f} | {diff} | {r['fidelity']:.4f} | "
                     f"{r['prior']:.4f} | {r['entropy']:.4f} |")
    args.ablation.mkdir(parents=True, exist_ok=True)
    (args.ablation / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (args.ablation / f"{stem}.json").write_text(json.dumps(
        {"workload": s.workload.name, "measurements": args.measurements, "draws": args.draws, "n_time": args.n_time,
         "repeats": args.repeats, "rows": rows}, indent=1))
    print("\n".join(lines))
    if args.commit is not None:
        for suffix in (".md", ".json"):
            shutil.copy2(args.ablation / f"{stem}{suffix}", args.commit / f"{stem}{suffix}")


if __name__ == "__main__":
    main()
