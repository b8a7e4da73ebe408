"""Prior-quality report: does the learned diffusion prior know more than the Gaussian it starts from?

Per workload, on signals the prior never saw (bunny: MNIST test digits; sphere: the held-out CMIP6
fields and the 24 real ERA5 snapshots):

1. **Denoising.** The mean squared error of the prior's Tweedie denoiser and of the Wiener
   denoiser of the Gaussian on a fixed 12-point log grid of ``t`` in [0.005, 0.7], one seeded
   noise draw per signal and ``t`` (the same for both), with 95% bootstrap intervals over signals,
   the paired ratio prior / Wiener, and the error of the noisy input / alpha for reference.
2. **Likelihood.** Held-out NLL in bits per dimension from the probability-flow ODE
   (:func:`manifold_ps.priors.ode_log_likelihood`) beside the Gaussian's exact NLL of the same
   signals. The ODE identifies a signal with ``x_{t_min}`` (no dequantisation) and ends at the
   SDE's ``N(0, I)``, so the Gaussian's number is its exact marginal log-density at ``t_min``
   evaluated at the signal itself. The same ODE run on the Gaussian measures the solver's error,
   and the paired difference prior - Gaussian (same ODE) cancels most of it.
3. **Samples** of the prior beside exact samples of the Gaussian and real held-out signals, on
   one colour scale.
4. **DPS** with the learned prior against the same DPS with the step-0 prior (the Gaussian alone;
   for a ``"mixture"`` prior the mixture alone, and DPS with the Gaussian alone beside them),
   each with its step size and ``clip_denoised`` chosen on validation measurements by the
   benchmark's own tuning (:func:`~manifold_ps.benchmarking.baselines.stage_tuning`), and the
   exact Gaussian posterior (one draw and the mean), on the held-out measurements of the
   workload's first task, scored as the benchmark scores them.

The Gaussian is the step-0 prior: a ``"wiener"`` prior's own (``prior.gaussian``, its exact
skip), otherwise the Gaussian the benchmark fits to the prior's training signals
(``out/gaussian``). A ``"mixture"`` prior's step 0 is its :class:`~manifold_ps.priors.GaussianMixture`:
the report adds its denoising ratio, its exact NLL and its DPS, and keeps the prior's own Gaussian
as the yardstick. The prior is the benchmark's, loaded from the same ``--out`` folder (trained
there first when missing), with the same configuration options.

    python benchmarks/prior_quality.py --workload bunny-mnist             # cpu profile, runs/bunny_mnist
    python benchmarks/prior_quality.py --workload era5-imputation --commit
    python benchmarks/prior_quality.py --profile smoke --set prior.parameterization=wiener --out runs/pq
    python benchmarks/prior_quality.py --workload era5-imputation --set prior.parameterization=mixture --tag mixture

Writes ``prior_quality.json``, ``prior_quality.md`` and
``figures/prior_quality-<script>-<profile>-{denoising,samples}.png`` into ``--out``. ``--commit``
copies them to ``benchmarks/results/prior_quality-<script>-<profile>.{json,md}`` and
``benchmarks/results/figures/`` (the documentation's prior-quality page shows those); ``--tag T``
names them ``prior_quality-<script>-<profile>-T`` instead.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from manifold_ps.baselines import GaussianPosterior
from manifold_ps.benchmarking.evaluate import add_paired_differences, run_sampler, score_estimate
from manifold_ps.benchmarking.pipeline import (build_baselines, prior_record, stage_gaussian, stage_measurements,
                                               stage_prior, stage_tuning, validation_description,
                                               validation_measurements)
from manifold_ps.benchmarking.results import environment_versions
from manifold_ps.benchmarking.workloads import WORKLOADS, Workload, profile_defaults
from manifold_ps.config import Config, add_config_arguments, add_shortcuts, config_from_args
from manifold_ps.metrics import bootstrap_interval, paired_difference, paired_ratio
from manifold_ps.priors import GaussianMixture, GaussianPrior, ScorePrior, bits_per_dim
from manifold_ps.training import load_checkpoint, state_digest

MEASURED = ("bunny-mnist", "era5-imputation")
"""The workloads whose priors this script measures."""

RESULTS = Path(__file__).resolve().parent / "results"
"""Where ``--commit`` copies the report by default."""

TIMES = torch.logspace(math.log10(0.005), math.log10(0.7), 12, dtype=torch.float64)
"""The fixed grid of diffusion times of the denoising curves."""

GOAL_RATIO = 0.85
"""The goal of issue 15: the prior's MSE at most this times the Wiener denoiser's (mean over t <= GOAL_T_MAX)."""

GOAL_T_MAX = 0.3
"""Largest grid time of that mean."""

SHORTCUTS = {"--seed": "seed", "--dps-nfe|--dps-steps": "eval.dps_nfe"}
"""The configuration fields with a flag of their own here (as in the benchmark scripts)."""


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Step0Prior(ScorePrior):
    """A closed-form prior's exact denoiser alone: the Gaussian, or the mixture of a ``"mixture"`` prior.

    Evaluated in the density's dtype (float64) and returned in the caller's, as a ``"wiener"`` or
    ``"mixture"`` prior evaluates its skip, so that DPS runs it exactly as it runs the learned prior.
    """

    def __init__(self, density: GaussianPrior | GaussianMixture) -> None:
        super().__init__(density.sde, density.channels, density.num_vertices)
        self.density = density

    def denoise(self, x: Tensor, t: Tensor) -> Tensor:
        dtype = self.density.dtype
        return self.density.denoise(x.to(dtype), self._check_t(x, t).to(dtype)).to(x.dtype)


# -- the held-out signals --------------------------------------------------------------------------------
def heldout_signals(workload: Workload, n: int) -> dict[str, tuple[str, Tensor]]:
    """Clean signals the prior never saw, by set: ``name -> (description, (N, C, V))``.

    Bunny: the first ``n`` MNIST test digits (the prior trains on the training digits). Other
    workloads: each evaluation set's distinct fields (a field measured with several masks once),
    at most ``n``.
    """
    if workload.name == "bunny-mnist":
        return {"test-digits": ("MNIST test digits on the bunny (the prior trains on the training digits)",
                                workload.flow_train[:n])}
    sets = {}
    for ev in workload.eval_sets:
        x = ev.x
        if ev.groups is not None:  # consecutive copies of one field: keep the first of each
            first = torch.ones(ev.groups.shape[0], dtype=torch.bool)
            first[1:] = ev.groups[1:] != ev.groups[:-1]
            x = x[first]
        sets[ev.name] = (ev.dataset, x[:n])
    return sets


# -- 1. denoising --------------------------------------------------------------------------------------
@torch.no_grad()
def denoising_errors(prior: ScorePrior, gaussian: GaussianPrior, x: Tensor, times: Tensor, *, seed: int,
                     batch: int = 64, step0: ScorePrior | None = None) -> dict[str, Tensor]:
    """Per-signal MSE of the prior's and the Gaussian's denoisers, and of the noisy input / alpha.

    ``x_t = alpha x + sigma eps`` with one noise ``eps`` per signal and time, drawn from a
    generator seeded with ``seed`` (CPU, so the draw does not depend on the device); all
    denoisers see the same ``x_t`` (the Gaussian's in float64). ``step0`` (e.g. the mixture of a
    ``"mixture"`` prior, as a :class:`Step0Prior`) is scored too.

    Returns:
        ``{"prior", "wiener", "noisy"[, "step0"]}`` each ``(T, N)`` float64 on the CPU.
    """
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((times.shape[0], *x.shape), generator=g, dtype=x.dtype)
    keys = ("prior", "wiener", "noisy") + (("step0",) if step0 is not None else ())
    errors = {k: torch.empty(times.shape[0], x.shape[0], dtype=torch.float64) for k in keys}

    def mse(estimate: Tensor, truth: Tensor) -> Tensor:
        return (estimate.double() - truth.double()).square().flatten(1).mean(-1).cpu()

    for i, t in enumerate(times.tolist()):
        t64 = torch.tensor(t, dtype=torch.float64)
        alpha, sigma = float(prior.sde.alpha(t64)), float(prior.sde.std(t64))
        for start in range(0, x.shape[0], batch):
            x0 = x[start:start + batch]
            xt = alpha * x0 + sigma * noise[i, start:start + batch].to(x0.device)
            tb = torch.full((x0.shape[0],), t, dtype=x0.dtype, device=x0.device)
            rows = slice(start, start + x0.shape[0])
            errors["prior"][i, rows] = mse(prior.denoise(xt, tb), x0)
            errors["wiener"][i, rows] = mse(gaussian.denoise(xt.to(gaussian.mean.dtype), tb.to(gaussian.mean.dtype)), x0)
            errors["noisy"][i, rows] = mse(xt.double() / alpha, x0)
            if step0 is not None:
                errors["step0"][i, rows] = mse(step0.denoise(xt, tb), x0)
    return errors


def _interval(values: Tensor, name: str) -> dict[str, float]:
    mean, low, high = bootstrap_interval(values)
    return {name: mean, f"{name}_low": low, f"{name}_high": high}


def denoising_table(errors: dict[str, Tensor], times: Tensor, prior: ScorePrior) -> dict[str, Any]:
    """Rows of the denoising curves (means with 95% bootstrap intervals, the paired ratio) and
    the numbers of the goal."""
    rows = []
    for i, t in enumerate(times.tolist()):
        t64 = torch.tensor(t, dtype=torch.float64)
        ratio, low, high = paired_ratio(errors["prior"][i], errors["wiener"][i])
        rows.append({"t": t, "sigma_over_alpha": float(prior.sde.std(t64) / prior.sde.alpha(t64)),
                     **_interval(errors["prior"][i], "prior_mse"), **_interval(errors["wiener"][i], "wiener_mse"),
                     "ratio": ratio, "ratio_low": low, "ratio_high": high,
                     **_interval(errors["noisy"][i], "noisy_mse")})
        if "step0" in errors:
            ratio, low, high = paired_ratio(errors["step0"][i], errors["wiener"][i])
            rows[-1].update(**_interval(errors["step0"][i], "step0_mse"), step0_ratio=ratio, step0_ratio_low=low,
                            step0_ratio_high=high)
    low_t = [r for r in rows if r["t"] <= GOAL_T_MAX + 1e-12]
    summary = {
        "mean_ratio_t_le_0.3": sum(r["ratio"] for r in low_t) / len(low_t), "points_t_le_0.3": len(low_t),
        "goal_mean_ratio": GOAL_RATIO, "grid_points": len(rows),
        "points_ratio_at_most_1": sum(r["ratio"] <= 1.0 for r in rows),
        "points_within_wiener_interval_or_below": sum(r["prior_mse"] <= r["wiener_mse_high"] for r in rows),
    }
    if "step0" in errors:
        summary["step0_mean_ratio_t_le_0.3"] = sum(r["step0_ratio"] for r in low_t) / len(low_t)
    return {"rows": rows, "summary": summary}


# -- 2. likelihood ---------------------------------------------------------------------------------------
def heldout_nll(prior: ScorePrior, gaussian: GaussianPrior, x: Tensor, *, ode: dict[str, Any], seed: int,
                batch: int = 32, gaussian_ode: bool = True,
                mixture: GaussianMixture | None = None) -> dict[str, Tensor]:
    """Per-signal NLL in bits per dimension: the prior's by the ODE, the Gaussian's exactly (its
    marginal at the ODE's ``t_min``, at the signal itself, as the ODE starts there) and, with
    ``gaussian_ode``, the Gaussian's by the same ODE.

    Args:
        prior: The learned prior.
        gaussian: The Gaussian (float64).
        x: Clean signals ``(N, C, V)``.
        ode: Keyword arguments of :func:`~manifold_ps.priors.ode_log_likelihood` (with ``t_min``).
        seed: Seeds the trace probes (one generator per prior).
        batch: Signals per solve.
        gaussian_ode: Also run the ODE on the Gaussian.
        mixture: A ``"mixture"`` prior's step 0, whose exact NLL is added like the Gaussian's.

    Returns:
        ``{"prior_ode", "gaussian_exact"[, "gaussian_ode"][, "step0_exact"]}`` each ``(N,)``
        float64 on the CPU.
    """
    d = prior.num_dims
    dtype = gaussian.mean.dtype
    gens = {k: torch.Generator(x.device).manual_seed(seed) for k in ("prior", "gaussian")}
    out: dict[str, list[Tensor]] = {"prior_ode": [], "gaussian_exact": [], **({"gaussian_ode": []} if gaussian_ode else {}),
                                    **({"step0_exact": []} if mixture is not None else {})}
    for chunk in x.split(batch):
        out["prior_ode"].append(prior.ode_log_likelihood(chunk, generator=gens["prior"], **ode).double())
        c64 = chunk.to(dtype)
        t = torch.full((chunk.shape[0],), float(ode["t_min"]), dtype=dtype, device=chunk.device)
        out["gaussian_exact"].append(gaussian.marginal_log_prob(c64, t))
        if gaussian_ode:
            out["gaussian_ode"].append(gaussian.ode_log_likelihood(c64, generator=gens["gaussian"], **ode))
        if mixture is not None:
            out["step0_exact"].append(mixture.marginal_log_prob(c64, t))
    return {k: bits_per_dim(torch.cat(v).detach(), d).cpu() for k, v in out.items()}


def nll_table(bpd: dict[str, Tensor]) -> dict[str, Any]:
    """Means with 95% bootstrap intervals and standard errors, and the paired differences."""
    table: dict[str, Any] = {}
    for name, v in bpd.items():
        mean, low, high = bootstrap_interval(v)
        table[name] = {"mean": mean, "low": low, "high": high, "se": float(v.std() / v.numel() ** 0.5)}
    pairs = [("prior_ode", "gaussian_exact")]
    if "gaussian_ode" in bpd:
        pairs += [("prior_ode", "gaussian_ode"), ("gaussian_ode", "gaussian_exact")]
    if "step0_exact" in bpd:
        pairs += [("step0_exact", "gaussian_exact"), ("prior_ode", "step0_exact")]
    for a, b in pairs:
        mean, low, high = paired_difference(bpd[a], bpd[b])
        table[f"{a}_minus_{b}"] = {"mean": mean, "low": low, "high": high}
    return table


# -- 4. DPS ----------------------------------------------------------------------------------------------
def dps_comparison(workload: Workload, config: Config, out: Path, priors: dict[str, ScorePrior],
                   gaussian: GaussianPrior, *, n_measurements: int, device: torch.device) -> dict[str, Any]:
    """DPS with each prior (settings chosen on validation measurements) and the exact Gaussian
    posterior on the first ``n_measurements`` held-out measurements of every evaluation set of
    the workload's first task.

    Each prior's tuning is :func:`~manifold_ps.benchmarking.baselines.stage_tuning` of a task
    whose only baseline is DPS, stored in ``out/prior_quality/tuning/<name>-<state hash>``.
    """
    task = workload.tasks[0]
    train, evals = stage_measurements(workload, task, config, out)
    val = validation_measurements(train, config)
    validation = validation_description(workload, config, val)
    dps_task = replace(task, baselines=("dps",))
    samplers: dict[str, Any] = {}
    tuning: dict[str, Any] = {}
    tic = time.perf_counter()
    for name, p in priors.items():
        tuned: dict[str, Any] = {}
        if config.eval.tune_measurements > 0 and val.x.shape[0] > 0:
            folder = out / "prior_quality" / "tuning" / f"{name}-{state_digest(p)}"
            tuned = stage_tuning(workload, dps_task, config, p, val.x.to(device), val.y.to(device),
                                 val.operator.to(device), folder, validation=validation)
        samplers[name] = build_baselines(workload, dps_task, config, p, tuned)["dps"]
        tuning[name] = {"zeta": samplers[name].zeta, "clip_denoised": samplers[name].clip_denoised,
                        "grid": tuned.get("dps", {}).get("grid", [])}
    tuning_s = time.perf_counter() - tic
    exact = GaussianPosterior(gaussian)
    descriptions = {ev.name: ev.dataset for ev in workload.eval_sets}
    sets: dict[str, Any] = {}
    for set_name, m in evals.items():
        if set_name == "paper":  # the flow's own training measurements: not held out
            continue
        m = m.subset(torch.arange(min(n_measurements, m.x.shape[0])))
        if m.groups is not None and m.groups.unique().numel() < 2:
            raise ValueError(f"--n-measurements {n_measurements}: '{set_name}' needs measurements of at least 2 "
                             "fields for an interval")
        x, y, op = m.x.to(device), m.y.to(device), m.operator.to(device)
        score = dict(image_shape=workload.image_shape, data_range=workload.data_range, groups=m.groups)
        methods = {}
        for name, sampler in samplers.items():
            _log(f"  {name} on {x.shape[0]} '{set_name}' measurements")
            g = torch.Generator(device).manual_seed(config.seed + config.eval.seed_offset)  # the same noise for each
            o = run_sampler(sampler, y, op, n=1, batch_size=config.eval.batch_size, generator=g)
            methods[name] = score_estimate(o.first, x, seconds_per_sample=o.seconds_per_sample, nfe=o.nfe, **score)
        g = torch.Generator(gaussian.mean.device).manual_seed(config.seed + config.eval.seed_offset)
        o = run_sampler(exact, y, op, n=1, batch_size=config.eval.batch_size, generator=g)
        methods["gaussian_draw"] = score_estimate(o.first, x, seconds_per_sample=o.seconds_per_sample, nfe=0, **score)
        means, seconds = [], 0.0
        for start in range(0, y.shape[0], config.eval.batch_size):
            idx = torch.arange(start, min(start + config.eval.batch_size, y.shape[0]))
            means.append(exact.posterior_mean_std(y[idx.to(y.device)], op.select(idx))[0])
            seconds += exact.last_seconds
        methods["gaussian_mean"] = score_estimate(torch.cat(means), x, seconds_per_sample=seconds / y.shape[0], nfe=0,
                                                  **score)
        refs = ("dps_step0", "gaussian_draw") + (("dps_gaussian",) if "dps_gaussian" in methods else ())
        add_paired_differences(methods, references=refs, groups=m.groups)
        sets[set_name] = {"dataset": descriptions.get(set_name, set_name), "measurements": int(x.shape[0]),
                          **({"fields": int(m.groups.unique().numel())} if m.groups is not None else {}),
                          "methods": {k: v.to_dict() for k, v in methods.items()}}
    return {"task": task.name, **task.description, "dps_nfe": config.eval.dps_nfe,
            "scoring": ("estimates projected onto " + str(list(workload.data_range)) if workload.data_range is not None
                        else "unprojected (the data range is only nominal)") + "; 95% bootstrap intervals",
            "validation": validation if any(v["grid"] for v in tuning.values()) else None,
            "tuning": tuning, "tuning_s": tuning_s, "sets": sets}


# -- figures ---------------------------------------------------------------------------------------------
def denoising_figure(curves: dict[str, Any], title: str, path: Path) -> None:
    """Log-log MSE against t (prior, Wiener, noisy input / alpha, with interval bands) above the
    ratio prior / Wiener (with the goal line), one column per set."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.4 * len(curves), 6.0))
    for j, (name, c) in enumerate(curves.items()):
        rows = c["rows"]
        t = [r["t"] for r in rows]
        top = fig.add_subplot(2, len(curves), j + 1)
        curves_drawn = [("prior_mse", "prior's denoiser", "C3"), ("wiener_mse", "Wiener (Gaussian)", "C0"),
                        ("noisy_mse", "noisy input / alpha", "0.5")]
        if "step0_mse" in rows[0]:
            curves_drawn.insert(1, ("step0_mse", "step 0 (the mixture)", "C1"))
        for key, label, color in curves_drawn:
            top.plot(t, [r[key] for r in rows], "o-" if key != "noisy_mse" else "--", color=color, ms=3, label=label)
            top.fill_between(t, [r[f"{key}_low"] for r in rows], [r[f"{key}_high"] for r in rows], color=color,
                             alpha=0.25, lw=0)
        top.set_xscale("log")
        top.set_yscale("log")
        top.set_ylabel("MSE")
        top.set_title(f"{name} ({c['signals']} signals)", fontsize=9)
        top.grid(alpha=0.3, which="both")
        top.legend(fontsize=7)
        bottom = fig.add_subplot(2, len(curves), len(curves) + j + 1, sharex=top)
        ratios = [("ratio", "prior / Wiener", "C3")] + ([("step0_ratio", "mixture / Wiener", "C1")]
                                                        if "step0_ratio" in rows[0] else [])
        for key, label, color in ratios:
            bottom.plot(t, [r[key] for r in rows], "o-", color=color, ms=3, label=label)
            bottom.fill_between(t, [r[f"{key}_low"] for r in rows], [r[f"{key}_high"] for r in rows], color=color,
                                alpha=0.25, lw=0)
        bottom.axhline(1.0, color="k", lw=1)
        bottom.axhline(GOAL_RATIO, color="C2", ls="--", lw=1, label=f"goal {GOAL_RATIO}")
        bottom.set_yscale("log")
        bottom.set_xlabel("t")
        bottom.set_ylabel("MSE ratio")
        bottom.grid(alpha=0.3, which="both")
        bottom.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def samples_figure(workload: Workload, rows: list[tuple[str, Tensor]], title: str, path: Path) -> None:
    """One row per source (real, Gaussian, prior), one column per signal, one colour scale (the
    data range where guaranteed, else that of the real signals)."""
    from matplotlib.figure import Figure

    from manifold_ps.viz import plot_image, plot_mesh_signal, plot_sphere_map

    real = rows[0][1]
    lo, hi = workload.data_range or (float(real.min()), float(real.max()))
    ncol = max(r[1].shape[0] for r in rows)
    geo = workload.geometry
    projection: Any = None
    if workload.kind == "mesh":
        projection = "3d"
    elif workload.kind == "sphere":
        try:
            import cartopy.crs as ccrs

            projection = ccrs.PlateCarree(central_longitude=180.0)
        except ImportError:
            projection = None
    size = {"mesh": (2.2, 2.4), "sphere": (3.0, 1.8), "image": (1.8, 1.9)}[workload.kind]
    fig = Figure(figsize=(size[0] * ncol, size[1] * len(rows) + 0.5))
    for i, (label, signals) in enumerate(rows):
        for j in range(signals.shape[0]):
            ax = fig.add_subplot(len(rows), ncol, i * ncol + j + 1, projection=projection)
            values = signals[j, 0].detach().cpu().float()
            if workload.kind == "mesh":
                plot_mesh_signal(geo.positions, geo.faces, values, ax=ax, vmin=lo, vmax=hi)
            elif workload.kind == "sphere":
                plot_sphere_map(values, geo.latitudes, geo.longitudes, ax=ax, vmin=lo, vmax=hi)
            else:
                plot_image(values, shape=workload.image_shape, ax=ax, vmin=lo, vmax=hi)
            if j == 0:
                ax.set_title(label, fontsize=8, loc="left")
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.92, wspace=0.02, hspace=0.12)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


# -- the report ------------------------------------------------------------------------------------------
def _ci(entry: dict[str, Any], key: str, fmt: str = "{:.3g}") -> str:
    text = fmt.format(entry[key])
    if f"{key}_low" in entry:
        text += f" [{fmt.format(entry[key + '_low'])}, {fmt.format(entry[key + '_high'])}]"
    return text


def _ci_dict(d: dict[str, float], fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(d['mean'])} [{fmt.format(d['low'])}, {fmt.format(d['high'])}]"


def _seconds(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


DPS_LABELS = {"dps": "DPS, learned prior", "dps_step0": "DPS, step-0 prior (the Gaussian alone)",
              "dps_gaussian": "DPS, the Gaussian alone",
              "gaussian_draw": "Gaussian posterior, one exact draw", "gaussian_mean": "Gaussian posterior mean"}
"""Row names of the DPS table (``dps_step0`` is the mixture of a ``"mixture"`` prior, and the fitted
Gaussian when the prior has no skip)."""


def to_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown (the subset ``docs/_results.py`` renders)."""
    p, gs = report["prior"], report["gaussian"]
    tag = report.get("options", {}).get("tag")
    lines = [f"# Prior quality: {report['workload']} ({report['profile']} profile" + (f", {tag}" if tag else "") + ")", "",
             f"Prior: {p['network']} with `{p['parameterization']}` parameterisation, {p['parameters'] / 1e6:.2f}M "
             f"parameters, trained for {p.get('trained_steps', p['train_steps'])} of {p['train_steps']} steps"
             + (f" in {p['seconds_last_invocation'] / 60:.1f} min" if "seconds_last_invocation" in p else "")
             + f". Gaussian: rank {gs['rank']}, ridge {gs['ridge']:g}; "
             f"{gs['role']}. Device: {report['device']}.", ""]

    lines += ["## Denoising error on held-out signals", "",
              f"MSE per signal of `D(alpha x + sigma eps, t)` against `x`, one noise draw per signal and t (seed "
              f"{report['denoising_seed']}), the same for both denoisers; 95% bootstrap intervals over signals, the "
              "ratio is the ratio of the mean errors with a paired interval.", ""]
    for name, c in report["denoising"].items():
        s = c["summary"]
        mixed = "step0_mse" in c["rows"][0]
        lines += [f"**{name}**: {c['signals']} signals of {c['dataset']}. Mean ratio over the "
                  f"{s['points_t_le_0.3']} grid points with t <= {GOAL_T_MAX}: **{s['mean_ratio_t_le_0.3']:.3f}** "
                  f"(goal <= {s['goal_mean_ratio']})"
                  + (f", its step 0 (the mixture) {s['step0_mean_ratio_t_le_0.3']:.3f}" if mixed else "")
                  + f"; prior at or below the Wiener denoiser's interval at "
                  f"{s['points_within_wiener_interval_or_below']} of {s['grid_points']} points, ratio <= 1 at "
                  f"{s['points_ratio_at_most_1']}.", "",
                  "| t | sigma/alpha | MSE, prior | MSE, Wiener | ratio prior / Wiener | "
                  + ("ratio mixture / Wiener | " if mixed else "") + "MSE, noisy input / alpha |",
                  "|---:|---:|---:|---:|---:|" + ("---:|" if mixed else "") + "---:|"]
        lines += [f"| {r['t']:.4g} | {r['sigma_over_alpha']:.3g} | {_ci(r, 'prior_mse')} | {_ci(r, 'wiener_mse')} "
                  f"| {_ci(r, 'ratio', '{:.3f}')} | " + (f"{_ci(r, 'step0_ratio', '{:.3f}')} | " if mixed else "")
                  + f"{r['noisy_mse']:.3g} |" for r in c["rows"]]
        lines.append("")
    lines += [f"![denoising error against t]({report['figures']['denoising']})", ""]

    ode = report["nll_settings"]
    lines += ["## Held-out NLL (bits per dimension)", "",
              f"The prior's by the probability-flow ODE ({ode['solver']}, "
              + (f"{ode['steps']} steps" if ode["solver"] != "rk45" else f"rtol {ode['rtol']:g}, atol {ode['atol']:g}")
              + f", {ode['n_probes']} {ode['hutchinson']} trace probe(s), from t_min = {ode['t_min']:g}, ending at "
              "N(0, I)); the Gaussian's exactly, as the density of its marginal at t_min at the signal itself (what the "
              "ODE computes for an exact score); and the Gaussian's by the same ODE, whose difference to the exact value "
              "is the solver's error. Lower is better; 95% bootstrap intervals, paired for the differences.", "",
              "| set | signals | prior (ODE) | Gaussian, exact | Gaussian (same ODE) | prior - Gaussian exact "
              "| prior - Gaussian (same ODE) |", "|---|---:|---:|---:|---:|---:|---:|"]
    mixtures = []
    for name, n in report["nll"].items():
        t = n["bits_per_dim"]
        ode_g = t.get("gaussian_ode")
        lines.append(f"| {name} | {n['signals']} | {_ci_dict(t['prior_ode'])} | {_ci_dict(t['gaussian_exact'])} "
                     f"| {_ci_dict(ode_g) if ode_g else '–'} | {_ci_dict(t['prior_ode_minus_gaussian_exact'], '{:+.3f}')} "
                     f"| {_ci_dict(t['prior_ode_minus_gaussian_ode'], '{:+.3f}') if ode_g else '–'} |")
        if "step0_exact" in t:
            mixtures.append(f"| {name} | {_ci_dict(t['step0_exact'])} | "
                            f"{_ci_dict(t['step0_exact_minus_gaussian_exact'], '{:+.4f}')} | "
                            f"{_ci_dict(t['prior_ode_minus_step0_exact'], '{:+.3f}')} |")
    lines.append("")
    if mixtures:
        lines += ["The step-0 prior (the mixture), exactly at t_min like the Gaussian:", "",
                  "| set | mixture, exact | mixture - Gaussian exact | prior (ODE) - mixture exact |",
                  "|---|---:|---:|---:|", *mixtures, ""]

    smp = report["samples"]
    lines += ["## Samples", "",
              f"Held-out signals, exact samples of the Gaussian and samples of the prior ({smp['steps']} ancestral "
              f"steps, {_seconds(smp['seconds_per_prior_sample'])} per sample), on one colour scale.", "",
              f"![held-out signals, Gaussian samples, prior samples]({report['figures']['samples']})", ""]

    dps = report["dps"]
    labels = dict(DPS_LABELS)
    if p["parameterization"] == "mixture":
        labels["dps_step0"] = "DPS, step-0 prior (the mixture alone)"
    elif not gs["is_step0"]:
        labels["dps_step0"] = "DPS, the fitted Gaussian as prior (not this prior's step 0)"
    lines += ["## DPS: learned prior against the step-0 prior", "",
              f"Task `{dps['task']}` ({dps.get('operator', '')}, missing fraction {dps.get('missing_fraction', '–')}, "
              f"sigma_y {dps.get('sigma_y', '–')}), {dps['dps_nfe']} DPS steps; step size and clip_denoised of each "
              "prior chosen on validation measurements ("
              + (dps["validation"] or "none: no tuning, the samplers' defaults")
              + f"); {dps['scoring']}.", ""]
    for set_name, s in dps["sets"].items():
        refs = ["dps_step0", "gaussian_draw"] + (["dps_gaussian"] if "dps_gaussian" in s["methods"] else [])
        lines += [f"**{set_name}**: {s['measurements']} measurements of {s['dataset']}"
                  + (f" ({s['fields']} fields)" if "fields" in s else "") + ".", "",
                  "| method | PSNR (dB) [95% CI] | raw PSNR | Δ vs DPS step-0 [95% CI] | Δ vs one Gaussian draw [95% CI] "
                  + ("| Δ vs DPS, Gaussian alone [95% CI] " if len(refs) > 2 else "")
                  + "| settings | s / sample | NFE |", "|---|---:|---:|---:|---:|" + ("---:|" if len(refs) > 2 else "")
                  + "---|---:|---:|"]
        for name, r in s["methods"].items():
            tuned = dps["tuning"].get(name)
            setting = "" if not tuned else f"zeta {tuned['zeta']:.3g}" + (", clip_denoised" if tuned["clip_denoised"] else "")
            diffs = [_ci(r, f"diff_{ref}", "{:+.2f}") if f"diff_{ref}" in r else "–" for ref in refs]
            lines.append(f"| {labels.get(name, name)} | {_ci(r, 'psnr', '{:.2f}')} | {r['psnr_raw']:.2f} | "
                         + " | ".join(diffs) + f" | {setting} | {_seconds(r['seconds_per_sample'])} | {r['nfe']} |")
        lines.append("")
    tm = report["timings_s"]
    lines += ["Wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in tm.items()) + "."]
    return "\n".join(lines) + "\n"


def commit(out: Path, stem: str, target: Path) -> list[Path]:
    """Copy the report in ``out`` to ``target/<stem>.{json,md}`` and its figures to ``target/figures``."""
    written = []
    target.mkdir(parents=True, exist_ok=True)
    for suffix in (".json", ".md"):
        written.append(Path(shutil.copyfile(out / f"prior_quality{suffix}", target / f"{stem}{suffix}")))
    for fig in sorted((out / "figures").glob(f"{stem}-*.png")):
        (target / "figures").mkdir(exist_ok=True)
        written.append(Path(shutil.copyfile(fig, target / "figures" / fig.name)))
    return written


def _training_record(folder: Path) -> dict[str, Any]:
    """Steps the prior in ``folder`` was trained for (its checkpoint's; a time cap may stop it
    before ``prior.train_steps``) and the seconds of its last training invocation."""
    record: dict[str, Any] = {}
    if (folder / "checkpoint.pt").is_file():
        record["trained_steps"] = int(load_checkpoint(folder / "checkpoint.pt", map_location="cpu")["step"])
    if (folder / "complete").is_file():
        record.update(json.loads((folder / "complete").read_text()))
    return record


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=MEASURED, default="bunny-mnist")
    add_config_arguments(p)
    flags = add_shortcuts(p, SHORTCUTS)
    p.add_argument("--out", type=Path, default=None, help="the benchmark's folder, with its prior (default runs/<script>)")
    p.add_argument("--n-heldout", type=int, default=256, help="held-out signals per set for the denoising curves")
    p.add_argument("--nll-signals", type=int, default=64, help="held-out signals per set for the NLL")
    p.add_argument("--nll-solver", choices=("heun", "euler", "rk4", "rk45"), default="heun")
    p.add_argument("--nll-steps", type=int, default=64, help="steps of a fixed-step ODE solver")
    p.add_argument("--nll-rtol", type=float, default=1e-5, help="tolerances of rk45")
    p.add_argument("--nll-atol", type=float, default=1e-5)
    p.add_argument("--nll-probes", type=int, default=1, help="Hutchinson probes per evaluation")
    p.add_argument("--nll-t-min", type=float, default=1e-3, help="where the ODE starts (the DSM training's smallest t)")
    p.add_argument("--no-gaussian-ode", action="store_true", help="skip the ODE run on the Gaussian (solver check)")
    p.add_argument("--samples", type=int, default=6, help="signals per row of the samples figure")
    p.add_argument("--sample-steps", type=int, default=200, help="ancestral steps of the prior's samples")
    p.add_argument("--n-measurements", type=int, default=None,
                   help="held-out measurements per set for DPS (default eval.n_eval; the first ones of the stored set)")
    p.add_argument("--seed-offset", type=int, default=0, help="added to the noise seeds of the denoising curves and NLL")
    p.add_argument("--commit", type=Path, nargs="?", const=RESULTS, default=None, metavar="DIR",
                   help=f"also copy the report to DIR (default {RESULTS}) as prior_quality-<script>-<profile>.*")
    p.add_argument("--tag", default=None,
                   help="append -TAG to the report's name (a report of its own, e.g. for another parameterisation)")
    p.add_argument("--device", default=None)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    script = args.workload.replace("-", "_")
    config = config_from_args(args, flags, defaults=profile_defaults(args.workload, args.profile))
    out = args.out or Path("runs") / script
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    stem = f"prior_quality-{script}-{config.profile}" + (f"-{args.tag}" if args.tag else "")
    workload = WORKLOADS[args.workload](config)
    timings: dict[str, float] = {}

    tic = time.perf_counter()
    prior = stage_prior(workload, config, out, device=device, progress=not args.no_progress).eval()
    mixture = prior.mixture if prior.parameterization == "mixture" else None
    step0 = Step0Prior(mixture).eval() if mixture is not None else None
    if mixture is not None:
        assert prior.gaussian is not None
        info = mixture.fit_info
        gaussian = prior.gaussian
        role = (f"the mixture prior's own Gaussian (fitted to its training signals); its step 0 is the mixture's "
                f"exact denoiser ({info.get('components')} components, {info.get('covariance')} covariance"
                + (f", shrinkage {info['shrinkage']:g}" if "shrinkage" in info else "") + ")")
    elif prior.gaussian is not None:
        gaussian, role = prior.gaussian, "the wiener prior's own skip, i.e. the prior at training step 0"
    else:
        gaussian = stage_gaussian(workload, config, out, device=device)
        role = (f"fitted to the prior's training signals (the prior is `{prior.parameterization}`, not `wiener`: "
                "this Gaussian is not its step 0)")
    gaussian = gaussian.eval()
    timings["prior_and_gaussian"] = time.perf_counter() - tic
    sets = heldout_signals(workload, args.n_heldout)
    seed = config.seed + args.seed_offset

    tic = time.perf_counter()
    denoising = {}
    for name, (dataset, x) in sets.items():
        errors = denoising_errors(prior, gaussian, x.to(device), TIMES, seed=seed, step0=step0)
        denoising[name] = {"dataset": dataset, "signals": int(x.shape[0]), **denoising_table(errors, TIMES, prior)}
        s = denoising[name]["summary"]
        _log(f"denoising '{name}': mean MSE ratio prior / Wiener over t <= {GOAL_T_MAX}: "
             f"{s['mean_ratio_t_le_0.3']:.3f}")
    timings["denoising"] = time.perf_counter() - tic
    _log(f"part 1 (denoising curves): {timings['denoising']:.0f} s")

    tic = time.perf_counter()
    ode = {"solver": args.nll_solver, "steps": args.nll_steps, "rtol": args.nll_rtol, "atol": args.nll_atol,
           "n_probes": args.nll_probes, "hutchinson": "rademacher", "t_min": args.nll_t_min}
    nll = {}
    for name, (dataset, x) in sets.items():
        x = x[: args.nll_signals].to(device)
        bpd = heldout_nll(prior, gaussian, x, ode=ode, seed=seed + 1, gaussian_ode=not args.no_gaussian_ode,
                          mixture=mixture)
        nll[name] = {"dataset": dataset, "signals": int(x.shape[0]), "bits_per_dim": nll_table(bpd)}
        t = nll[name]["bits_per_dim"]
        _log(f"NLL '{name}': prior {t['prior_ode']['mean']:.4f}, Gaussian {t['gaussian_exact']['mean']:.4f} bits/dim")
    timings["nll"] = time.perf_counter() - tic
    _log(f"part 2 (held-out NLL): {timings['nll']:.0f} s")

    tic = time.perf_counter()
    first_name, (_, first_x) = next(iter(sets.items()))
    real = first_x[: args.samples]
    g = torch.Generator(device).manual_seed(seed + 2)
    sample_tic = time.perf_counter()
    prior_samples = prior.sample(args.samples, steps=args.sample_steps, method="ddpm", generator=g, device=device)
    per_sample = (time.perf_counter() - sample_tic) / args.samples
    gauss_samples = gaussian.sample_data(args.samples,
                                         generator=torch.Generator(gaussian.mean.device).manual_seed(seed + 3))
    figures = {"denoising": f"figures/{stem}-denoising.png", "samples": f"figures/{stem}-samples.png"}
    rows = [(f"held-out ({first_name})", real), ("Gaussian, exact samples", gauss_samples)]
    if mixture is not None:
        rows.append(("mixture (step 0), exact samples",
                     mixture.sample_data(args.samples, generator=torch.Generator(device).manual_seed(seed + 4))))
    samples_figure(workload, rows + [(f"prior, {args.sample_steps} ancestral steps", prior_samples)],
                   f"{workload.name}: held-out signals, Gaussian samples, "
                   + ("mixture samples, " if mixture is not None else "") + "prior samples", out / figures["samples"])
    denoising_figure(denoising, f"{workload.name} ({config.profile}): denoising error on held-out signals",
                     out / figures["denoising"])
    timings["samples"] = time.perf_counter() - tic
    _log(f"part 3 (samples and figures): {timings['samples']:.0f} s")

    tic = time.perf_counter()
    priors: dict[str, ScorePrior] = {"dps": prior, "dps_step0": step0 if step0 is not None else Step0Prior(gaussian)}
    if step0 is not None:
        priors["dps_gaussian"] = Step0Prior(gaussian)
    dps = dps_comparison(workload, config, out, priors, gaussian,
                         n_measurements=args.n_measurements or config.eval.n_eval, device=device)
    timings["dps"] = time.perf_counter() - tic
    _log(f"part 4 (DPS, {dps['tuning_s']:.0f} s of it validation tuning): {timings['dps']:.0f} s")

    report = {
        "workload": workload.name, "profile": config.profile, "device": _device_name(device),
        "prior": {"network": type(prior.network).__name__, "parameterization": prior.parameterization,
                  "parameters": sum(q.numel() for q in prior.parameters()), "train_steps": config.prior.train_steps,
                  "folder": str(out / "prior"), **_training_record(out / "prior")},
        **({"mixture": mixture.fit_info} if mixture is not None else {}),
        "gaussian": {"role": role, "is_step0": prior.parameterization == "wiener", "rank": gaussian.rank,
                     "ridge": float(gaussian.fit_info.get("ridge", 0.0)), "fit_info": gaussian.fit_info},
        "times": TIMES.tolist(), "denoising_seed": seed, "denoising": denoising,
        "nll_settings": ode, "nll_seed": seed + 1, "nll": nll,
        "samples": {"steps": args.sample_steps, "seconds_per_prior_sample": per_sample, "count": args.samples},
        "dps": dps, "figures": figures, "timings_s": timings,
        "config": {**config.resolved().to_dict(), "prior_record": prior_record(workload, config)},
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "versions": environment_versions(),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "prior_quality.json").write_text(json.dumps(report, indent=2, default=float))
    md = to_markdown(report)
    (out / "prior_quality.md").write_text(md)
    print(md, flush=True)
    _log(f"report in {out / 'prior_quality.md'} and {out / 'prior_quality.json'}")
    if args.commit is not None:
        for path in commit(out, stem, args.commit):
            _log(f"committed {path}")
    return report


if __name__ == "__main__":
    main()
