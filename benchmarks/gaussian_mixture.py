"""How much does one Gaussian miss? Closed-form mixtures against the Wiener denoiser, per workload.

The learned prior starts from the Wiener denoiser of the Gaussian fitted to its training signals
and learns a correction (``prior.parameterization = "wiener"``). Where that correction learns
nothing, is there nothing to learn, or does the network fail to learn it? This script answers
without training anything: it fits mixtures of ``K`` Gaussians
(:class:`~manifold_ps.priors.GaussianMixture`: k-means clusters, their fractions and means, and
one pooled within-cluster covariance or, with ``--covariance per-component``, each cluster's
covariance shrunk toward the pooled one) to the same training signals, and scores their exact
posterior-mean denoisers on the prior-quality report's held-out signals and grid of ``t``, paired
with the Wiener denoiser of the benchmark's Gaussian (same signals, same noise), beside the exact
held-out NLL of each density at ``t_min``. Any ratio below 1 is structure between clusters that a
denoiser can learn from the training signals alone.

    python benchmarks/gaussian_mixture.py --workload era5-imputation --commit
    python benchmarks/gaussian_mixture.py --workload bunny-mnist --components 4 12 24 48 --commit

Reads the benchmark's Gaussian from ``--out`` (default ``runs/<script>``; fitted there with the
benchmark's settings when missing) and writes ``gaussian_mixture.{json,md}`` there; ``--commit``
copies them to ``benchmarks/results/gaussian_mixture-<script>-<profile>.*`` (``-<tag>`` appended with
``--tag``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the prior-quality report's held-out sets and grid
from prior_quality import GOAL_T_MAX, TIMES, denoising_errors, denoising_table, heldout_signals  # noqa: E402

from manifold_ps.benchmarking.baselines import fit_mixture, stage_gaussian  # noqa: E402
from manifold_ps.benchmarking.results import environment_versions  # noqa: E402
from manifold_ps.benchmarking.workloads import WORKLOADS, profile_defaults  # noqa: E402
from manifold_ps.config import add_config_arguments, config_from_args  # noqa: E402
from manifold_ps.metrics import bootstrap_interval, paired_difference  # noqa: E402
from manifold_ps.priors import GaussianMixture, GaussianPrior, bits_per_dim  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MEASURED = ("bunny-mnist", "era5-imputation")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def nll_bits(density: GaussianPrior | GaussianMixture, x: torch.Tensor, t_min: float) -> torch.Tensor:
    """Exact ``-log p_{t_min}(x)`` in bits per dimension: ``(N,)``."""
    t = torch.full((x.shape[0],), t_min, dtype=torch.float64)
    return bits_per_dim(density.marginal_log_prob(x.double(), t), x[0].numel())


def _ranks_sentence(mixtures: dict[str, Any]) -> str:
    """The directions kept per component covariance (absent from reports written before they were recorded)."""
    parts = []
    for k, info in mixtures.items():
        ranks = info.get("component_ranks")
        if ranks:
            lo, hi = min(ranks), max(ranks)
            parts.append(f"K={k} " + (f"{hi}" if lo == hi else f"{lo}-{hi}"))
    return ("Directions kept per component covariance: " + ", ".join(parts) + ". ") if parts else ""


def to_markdown(report: dict[str, Any]) -> str:
    ks = [str(k) for k in report["components"]]
    lines = [f"# Closed-form Gaussian mixtures against the Wiener denoiser: {report['workload']} "
             f"({report['profile']} profile)", "",
             f"Training signals: {report['train_signals']}. Gaussian: the benchmark's (rank {report['gaussian']['rank']}, "
             f"ridge {report['gaussian']['ridge']:g}). Mixtures: K components fitted by k-means (seed "
             f"{report['seed']}) and "
             + ("the pooled within-cluster covariance" if report.get("covariance", "shared") == "shared" else
                "each cluster's covariance shrunk toward the pooled one (weight "
                + ", ".join(f"K={k} {m['shrinkage']:g}" for k, m in report["mixtures"].items()) + ")")
             + ", the ridge" + ("" if report.get("covariance", "shared") == "shared" else " and the shrinkage")
             + " chosen like the Gaussian's on the last training signals; nothing is trained by gradient. "
             + _ranks_sentence(report["mixtures"])
             + f"Fit times: {', '.join(f'K={k} {s:.0f} s' for k, s in report['fit_seconds'].items())}.", ""]
    for name, entry in report["sets"].items():
        lines += [f"## {name}: {entry['signals']} held-out signals ({entry['dataset']})", "",
                  "MSE of each posterior-mean denoiser over the Wiener denoiser's, paired (same signals, "
                  "one noise draw per signal and t); 95% bootstrap intervals.", "",
                  "| t | sigma/alpha | MSE, Wiener | " + " | ".join(f"K={k} / Wiener" for k in ks) + " |",
                  "|---:|---:|---:|" + "---:|" * len(ks)]
        for i, row in enumerate(entry["rows"]):
            cells = [f"{row['ratio'][k]:.3f} [{row['ratio_low'][k]:.3f}, {row['ratio_high'][k]:.3f}]" for k in ks]
            lines.append(f"| {row['t']:.4g} | {row['sigma_over_alpha']:.3g} | {row['wiener_mse']:.3g} | "
                         + " | ".join(cells) + " |")
        s = entry["summary"]
        lines += ["", f"Mean ratio over the {s['points']} grid points with t <= {GOAL_T_MAX}: "
                  + ", ".join(f"K={k} **{s['mean_ratio'][k]:.3f}**" for k in ks)
                  + "; grid points with ratio <= 1: " + ", ".join(f"K={k} {s['at_most_1'][k]}/{len(entry['rows'])}"
                                                               for k in ks) + ".", ""]
        nll = entry["nll"]
        lines += [f"Held-out NLL, exact density at t = {report['nll_t_min']} (bits per dimension, lower is better; "
                  "paired difference to the Gaussian):", "",
                  "| density | NLL | Δ vs Gaussian |", "|---|---:|---:|",
                  f"| Gaussian | {nll['gaussian']['mean']:.4f} [{nll['gaussian']['low']:.4f}, {nll['gaussian']['high']:.4f}] | – |"]
        for k in ks:
            e = nll[k]
            lines.append(f"| K={k} | {e['mean']:.4f} [{e['low']:.4f}, {e['high']:.4f}] | "
                         f"{e['diff']:+.4f} [{e['diff_low']:+.4f}, {e['diff_high']:+.4f}] |")
        lines.append("")
    lines += [f"Command: `{report['command']}`. Device: cpu, {report['versions'].get('cpu', '')}. "
              f"Wall time {report['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=MEASURED, default="era5-imputation")
    add_config_arguments(p)
    p.add_argument("--components", type=int, nargs="+", default=[4, 12, 24, 48], help="mixture sizes K")
    p.add_argument("--covariance", choices=("shared", "per-component"), default="shared",
                   help="one covariance for every component, or one per component shrunk toward the pooled one")
    p.add_argument("--shrinkage", type=float, nargs="+", default=None,
                   help="candidate weights of the pooled covariance (per-component; chosen on validation; "
                        "default prior.mixture_shrinkage)")
    p.add_argument("--tag", default=None, help="append -TAG to the committed report's name (a report of its own)")
    p.add_argument("--n-heldout", type=int, default=256, help="held-out signals per set (as the prior-quality report)")
    p.add_argument("--nll-t-min", type=float, default=1e-3, help="the time of the densities' NLL")
    p.add_argument("--out", type=Path, default=None, help="the benchmark's folder (default runs/<script>)")
    p.add_argument("--commit", type=Path, nargs="?", const=RESULTS, default=None, metavar="DIR",
                   help=f"also copy the report to DIR (default {RESULTS}) as gaussian_mixture-<script>-<profile>.*")
    args = p.parse_args(argv)
    if any(k < 1 for k in args.components):
        p.error("--components must be >= 1")
    script = args.workload.replace("-", "_")
    config = config_from_args(args, defaults=profile_defaults(args.workload, args.profile))
    out = args.out or Path("runs") / script
    started = time.perf_counter()
    workload = WORKLOADS[args.workload](config)
    cpu = torch.device("cpu")
    gaussian = stage_gaussian(workload, config, out, device=cpu).eval()
    signals = workload.prior_train
    fit_seconds: dict[str, float] = {}
    mixtures: dict[str, GaussianMixture] = {}
    for k in args.components:
        tic = time.perf_counter()
        mixtures[str(k)] = fit_mixture(signals, config, components=k, covariance=args.covariance,
                                       shrinkage=None if args.shrinkage is None else tuple(args.shrinkage)).eval()
        fit_seconds[str(k)] = time.perf_counter() - tic
    sets: dict[str, Any] = {}
    for name, (dataset, x) in heldout_signals(workload, args.n_heldout).items():
        x = x.double()
        rows: list[dict[str, Any]] = []
        per_k = {}
        for k, mixture in mixtures.items():
            errors = denoising_errors(mixture, gaussian, x, TIMES, seed=config.seed)
            per_k[k] = denoising_table(errors, TIMES, mixture)
        for i, t in enumerate(TIMES.tolist()):
            first = next(iter(per_k.values()))["rows"][i]
            rows.append({"t": t, "sigma_over_alpha": first["sigma_over_alpha"], "wiener_mse": first["wiener_mse"],
                         "wiener_mse_low": first["wiener_mse_low"], "wiener_mse_high": first["wiener_mse_high"],
                         **{key: {k: per_k[k]["rows"][i][key] for k in per_k}
                            for key in ("ratio", "ratio_low", "ratio_high", "prior_mse")}})
        low_t = [r for r in rows if r["t"] <= GOAL_T_MAX + 1e-12]
        summary = {"points": len(low_t),
                   "mean_ratio": {k: sum(r["ratio"][k] for r in low_t) / len(low_t) for k in per_k},
                   "at_most_1": {k: sum(r["ratio"][k] <= 1.0 for r in rows) for k in per_k}}
        g_bits = nll_bits(gaussian, x, args.nll_t_min)
        mean, low, high = bootstrap_interval(g_bits)
        nll: dict[str, Any] = {"gaussian": {"mean": mean, "low": low, "high": high}}
        for k, mixture in mixtures.items():
            bits = nll_bits(mixture, x, args.nll_t_min)
            mean, low, high = bootstrap_interval(bits)
            diff, dlow, dhigh = paired_difference(bits, g_bits)
            nll[k] = {"mean": mean, "low": low, "high": high, "diff": diff, "diff_low": dlow, "diff_high": dhigh}
        sets[name] = {"dataset": dataset, "signals": int(x.shape[0]), "rows": rows, "summary": summary, "nll": nll}
        _log(f"'{name}': mean ratio over t <= {GOAL_T_MAX}: "
             + ", ".join(f"K={k} {v:.3f}" for k, v in summary["mean_ratio"].items()))
    report = {
        "workload": workload.name, "profile": config.profile, "train_signals": int(signals.shape[0]),
        "components": args.components, "covariance": args.covariance, "seed": config.seed, "nll_t_min": args.nll_t_min,
        "gaussian": {"rank": gaussian.rank, "ridge": float(gaussian.fit_info.get("ridge", 0.0))},
        "mixtures": {k: {**m.fit_info, "component_ranks": [c.rank for c in m.covariances]}
                     for k, m in mixtures.items()}, "fit_seconds": fit_seconds,
        "times": TIMES.tolist(), "sets": sets, "seconds": time.perf_counter() - started,
        "command": "python benchmarks/gaussian_mixture.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "versions": environment_versions(),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "gaussian_mixture.json").write_text(json.dumps(report, indent=2, default=float))
    md = to_markdown(report)
    (out / "gaussian_mixture.md").write_text(md)
    print(md, flush=True)
    if args.commit is not None:
        args.commit.mkdir(parents=True, exist_ok=True)
        for ext in ("json", "md"):
            target = args.commit / (f"gaussian_mixture-{script}-{config.profile}" + (f"-{args.tag}" if args.tag else "")
                                    + f".{ext}")
            shutil.copyfile(out / f"gaussian_mixture.{ext}", target)
            _log(f"committed {target}")
    return report


if __name__ == "__main__":
    main()
