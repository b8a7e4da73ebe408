"""Ablation of the one-step sampler (issue 16): one row per lever, on bunny-MNIST inpainting,
sphere temperature imputation or an image restoration task, every row scored exactly as the
benchmark scores its flow.

Every row distils the same prior (``<base-out>/prior``, the benchmark's, trained if missing) into
a fresh flow on the benchmark's training measurements, under the same wall-clock budget
(``--minutes``) with a cosine schedule of ``--train-steps`` steps (a slower row is cut by the
cap: its steps say where). It is scored on the benchmark's held-out measurements
(``<base-out>/<task>/measurements.pt``), or with ``--scored-on validation`` on the validation
measurements the baselines are tuned on (flow-training measurements whose clean signals no method
sees; there a setting of the flow is chosen, so that the held-out measurements stay unseen, and
DPS is scored where its step size was chosen), by
:func:`~manifold_ps.benchmarking.pipeline.score_posterior` with the benchmark's keywords: one draw
and the mean of ``eval.n_posterior`` draws (projected onto the data range where one is guaranteed,
95% bootstrap intervals), the posterior std on missing and observed vertices, and the coverage of
central intervals (50/80/90/95%, all and missing vertices).
The same table holds, on the same measurements: the exact Gaussian posterior (mean and one draw),
harmonic interpolation, Tikhonov with its weight chosen on validation measurements (the
benchmark's ``tuning.json`` when present), DPS (from the benchmark's ``results.json`` when it ran
on these measurements, else run here on the first ``--dps-measurements``) and the benchmark's own
flow. The rows (:data:`ROWS`; ``--rows`` picks some):

- ``paper``: the paper's method, the flow's output is the sample (fill base, no decoding);
- ``decode``: the same base, the output decoded by the prior's denoiser at t_min;
- ``gaussian-step0``: the Gaussian posterior over ``u = x_{t_min}`` as base, decoded, untrained;
- ``gaussian``: that sampler trained; ``gaussian-noise``: plus the decoder noise;
- ``gaussian-tmin0.005`` / ``gaussian-tmin0.05``: the t_min trade (``gaussian-tmin0.005-step0``:
  untrained at 0.005, the sphere benchmark's start; ``gaussian-noise-tmin0.005-step0`` and
  ``marginal-noise-tmin0.005-step0``: that start with the decoder's error drawn, regardless of
  ``y`` or given it); ``gaussian-ntime4``: four
  ELBO time draws per sample; ``gaussian-score``: the prior term's exact gradient (the prior's
  score at t_min) in place of the ELBO (``gaussian-score-tmin0.005``: at t_min 0.005, the sphere
  benchmark's flow); ``gaussian-score-path``: that, with the path part of the entropy term's
  gradient only; ``gaussian-score-lr4e-3`` / ``gaussian-score-lr8e-3`` / ``gaussian-score-lr1.6e-2``:
  ``gaussian-score`` at another peak learning rate; ``gaussian-score-wide``: coupling networks twice
  as wide (``flow.hidden`` 64); ``gaussian-score-wide-encoder``: a condition encoder twice as wide
  with twice the context channels (``flow.encoder_hidden`` 64, ``flow.context_channels`` 32);
- ``marginal-step0`` / ``marginal-noise-step0`` / ``marginal`` / ``marginal-noise`` /
  ``marginal-score``: the decoder's error integrated out of the likelihood under the Gaussian's
  law (``flow.likelihood = "marginal"``), on the exact posterior over ``u`` of that model, draws
  ``E[x | u, y]`` or (``-noise``) ``x`` drawn given ``u`` and ``y``; untrained and trained;
  ``marginal-noise-tmin0.005``: the sphere benchmark's flow, trained;
- ``mixture-noise-tmin0.005-step0`` / ``mixture-noise-tmin0.005``: that flow with its input drawn
  from the exact posterior over ``u`` of the prior's Gaussian mixture (``flow.base = "mixture"``,
  :class:`~manifold_ps.flows.MixtureBase`; a ``"mixture"`` prior only), untrained and trained;
  ``mixture-denoised-tmin0.005-step0`` / ``mixture-denoised-tmin0.005``: the same start under the
  likelihood of ``y`` given ``D(u)``, which gives the decoder's error no law of its own.

A trained row is also paired with the untrained row it starts from (:attr:`Row.start`, same
seed): the table gives its PSNR gain, measurement by measurement with the same draws of the
base, with a paired bootstrap interval (or the spread of the seeds' gains).

Rows resume from ``<out>/<row>-s<seed>`` (a finished row is only re-scored), and the report is
rewritten after each row:

    python benchmarks/flow_ablation.py                                   # bunny-MNIST, every row, seed 0
    python benchmarks/flow_ablation.py --workload era5-imputation        # the sphere
    python benchmarks/flow_ablation.py --workload image-restoration --task super-resolution --rows gaussian-step0 gaussian
    python benchmarks/flow_ablation.py --rows gaussian --seeds 0 1 2     # the spread over seeds
    python benchmarks/flow_ablation.py --rows gaussian-step0 gaussian-score --seeds 0 1 2 --tag seeds  # a separate report
    python benchmarks/flow_ablation.py --rows gaussian --curve-every 50  # PSNR against training minutes
    python benchmarks/flow_ablation.py --rows gaussian-score --set flow.lr=4e-3 --tag lr4e-3 --scored-on validation
    python benchmarks/flow_ablation.py --table-only --commit             # rewrite the report, copy it
    python benchmarks/flow_ablation.py --profile smoke --minutes 0.05 --rows paper gaussian-step0 gaussian \\
        --dps-measurements 2 --base-out /tmp/abl/bench --out /tmp/abl/out     # end to end in a minute

``--curve-every k`` scores the EMA flow every ``k`` steps (32 draws per measurement; the scoring
time is not counted in the training minutes) and plots PSNR against training time.

The report is ``<out>/<stem>.json`` (rows and references with every score), ``<out>/<stem>.md``
(the table), ``<out>/figures/<stem>-calibration.png`` (nominal against empirical coverage of
every row and the Gaussian posterior) and, with curves, ``<out>/<stem>.png``, where ``<stem>`` is
``flow_ablation-<script>-<profile>`` (``-<tag>`` appended with ``--tag``, a report of its own;
``<script>-<task>`` for a task other than the workload's first, e.g.
``flow_ablation-image_restoration-super_resolution-cpu``; ``-validation`` before the tag with
``--scored-on validation``).
``--commit`` copies them into ``benchmarks/results/`` (or a given folder) with that layout, which
the documentation's results page renders, calibration plot included.
"""

import argparse
import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from manifold_ps.benchmarking import calibration_curves
from manifold_ps.benchmarking.evaluate import run_sampler, score_estimate
from manifold_ps.benchmarking.pipeline import (CLOSED_FORM, Measured, build_baselines, flow_record, new_flow, score_arguments,
                                               score_gaussian, score_posterior, stage_flow, stage_gaussian,
                                               stage_measurements, stage_prior, tune_smoothing,
                                               validation_measurements)
from manifold_ps.benchmarking.workloads import WORKLOADS, Task, Workload, profile_defaults
from manifold_ps.config import (Config, add_config_arguments, apply_overrides, config_from_args, from_legacy_profile,
                                read_config, write_config)
from manifold_ps.flows import AmortizedPosterior
from manifold_ps.metrics import paired_difference
from manifold_ps.training import state_digest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
"""Where ``--commit`` copies the report (the committed results the docs render)."""

ABLATED = ("bunny-mnist", "era5-imputation", "image-restoration")
"""The workloads this script runs on (their first task unless ``--task`` names another)."""

REFERENCES_VERSION = 3
"""Bumped when the cached ``references.json`` no longer fits the table."""


@dataclass(frozen=True)
class Row:
    """One lever: what it changes (for the table) and its ``section.field`` overrides on top of
    the configuration (``--profile`` / ``--config`` / ``--set``); ``trained=False`` scores the
    sampler as :func:`~manifold_ps.benchmarking.pipeline.new_flow` builds it, before any step;
    ``start`` names the untrained row a trained one starts from (the table pairs them, seed by seed)."""

    description: str
    overrides: dict[str, Any] = field(default_factory=dict)
    trained: bool = True
    start: str | None = None


_PAPER = {"flow.base": "fill", "flow.decode": False, "flow.decoder_noise": False, "flow.t_min": 0.02,
          "flow.n_time": 1, "flow.prior_term": "elbo", "flow.entropy_gradient": "total", "flow.likelihood": "denoised"}
_GAUSSIAN = {**_PAPER, "flow.base": "gaussian", "flow.decode": True}
_MARGINAL = {**_GAUSSIAN, "flow.likelihood": "marginal"}
_SPHERE = {**_MARGINAL, "flow.t_min": 0.005, "flow.decoder_noise": True}  # the sphere benchmark's flow
_MIXTURE = {**_SPHERE, "flow.base": "mixture"}

ROWS: dict[str, Row] = {
    "paper": Row("the paper's method: the flow's output is the sample, around the task's fill; ELBO of a clean "
                 "signal, t_min 0.02", _PAPER),
    "decode": Row("fill base, the output `u` decoded by the prior's denoiser `D(u, t_min)`; ELBO of the t_min "
                  "marginal, t_min 0.02", {**_PAPER, "flow.decode": True}),
    "gaussian-step0": Row("base: the exact Gaussian posterior over `u = x_{t_min}`, decoded; **untrained** "
                          "(the sampler's own starting point), t_min 0.02", _GAUSSIAN, trained=False),
    "gaussian": Row("Gaussian-posterior base, decoded, trained; t_min 0.02", _GAUSSIAN, start="gaussian-step0"),
    "gaussian-noise": Row("gaussian, plus decoder noise (the Gaussian's denoising error at t_min)",
                          {**_GAUSSIAN, "flow.decoder_noise": True}),
    "gaussian-tmin0.005": Row("gaussian at t_min 0.005 (less contraction, a noisier ELBO)",
                              {**_GAUSSIAN, "flow.t_min": 0.005}, start="gaussian-tmin0.005-step0"),
    "gaussian-tmin0.005-step0": Row("gaussian-step0 at t_min 0.005 (the sphere benchmark's t_min); **untrained**",
                                    {**_GAUSSIAN, "flow.t_min": 0.005}, trained=False),
    "gaussian-noise-tmin0.005-step0": Row("gaussian-tmin0.005-step0 plus decoder noise (the Gaussian's denoising "
                                          "error at t_min, drawn regardless of `y`); **untrained**",
                                          {**_GAUSSIAN, "flow.t_min": 0.005, "flow.decoder_noise": True},
                                          trained=False),
    "marginal-noise-tmin0.005-step0": Row("marginal-noise-step0 at t_min 0.005: on a Gaussian teacher exactly its "
                                          "posterior; **untrained**",
                                          {**_MARGINAL, "flow.t_min": 0.005, "flow.decoder_noise": True},
                                          trained=False),
    "gaussian-tmin0.05": Row("gaussian at t_min 0.05 (a steadier ELBO, draws contracted toward the mean)",
                             {**_GAUSSIAN, "flow.t_min": 0.05}),
    "gaussian-ntime4": Row("gaussian with four ELBO time draws per sample (`flow.n_time = 4`)",
                           {**_GAUSSIAN, "flow.n_time": 4}, start="gaussian-step0"),
    "gaussian-score": Row("gaussian, the prior term's exact gradient in place of the ELBO: the prior's score at "
                          "t_min, from the decoder pass (`flow.prior_term = score`)",
                          {**_GAUSSIAN, "flow.prior_term": "score"}, start="gaussian-step0"),
    "gaussian-score-tmin0.005": Row("gaussian-score at t_min 0.005 (the sphere benchmark's flow)",
                                    {**_GAUSSIAN, "flow.prior_term": "score", "flow.t_min": 0.005},
                                    start="gaussian-tmin0.005-step0"),
    "gaussian-score-path": Row("gaussian-score, with only the path part of the entropy term's gradient "
                               "(`flow.entropy_gradient = path`): each draw's gradient vanishes where the sampler "
                               "equals the target", {**_GAUSSIAN, "flow.prior_term": "score",
                                                     "flow.entropy_gradient": "path"},
                               start="gaussian-step0"),
    **{f"gaussian-score-lr{lr}": Row(f"gaussian-score at peak learning rate {lr} (the rows above take the "
                                     "profile's)", {**_GAUSSIAN, "flow.prior_term": "score", "flow.lr": float(lr)},
                                     start="gaussian-step0") for lr in ("4e-3", "8e-3", "1.6e-2")},
    "gaussian-score-wide": Row("gaussian-score with coupling networks twice as wide (`flow.hidden = 64`; the "
                               "other rows take the profile's)", {**_GAUSSIAN, "flow.prior_term": "score",
                                                                  "flow.hidden": 64}, start="gaussian-step0"),
    "gaussian-score-wide-encoder": Row("gaussian-score with a condition encoder twice as wide, with twice the "
                                       "context channels (`flow.encoder_hidden = 64`, `flow.context_channels = 32`)",
                                       {**_GAUSSIAN, "flow.prior_term": "score", "flow.encoder_hidden": 64,
                                        "flow.context_channels": 32}, start="gaussian-step0"),
    "marginal-step0": Row("the decoder's error integrated out of the likelihood under the Gaussian's law "
                          "(`flow.likelihood = marginal`): base the exact posterior over `u` of that model, draws "
                          "`E[x | u, y]`; **untrained**", {**_MARGINAL}, trained=False),
    "marginal-noise-step0": Row("marginal-step0 with the decoder's error drawn given `y` (`flow.decoder_noise`): "
                                "on a Gaussian teacher exactly its posterior; **untrained**",
                                {**_MARGINAL, "flow.decoder_noise": True}, trained=False),
    "marginal": Row("marginal likelihood and base, trained (ELBO prior term)", _MARGINAL, start="marginal-step0"),
    "marginal-noise": Row("marginal, trained, draws with the decoder's error given `y`",
                          {**_MARGINAL, "flow.decoder_noise": True}, start="marginal-noise-step0"),
    "marginal-score": Row("marginal, trained with the prior's score at t_min in place of the ELBO",
                          {**_MARGINAL, "flow.prior_term": "score"}, start="marginal-step0"),
    "marginal-noise-tmin0.005": Row("marginal-noise at t_min 0.005, trained: the sphere benchmark's flow",
                                    _SPHERE, start="marginal-noise-tmin0.005-step0"),
    "mixture-noise-tmin0.005-step0": Row("marginal-noise-tmin0.005-step0 with the flow's input drawn from the exact "
                                         "posterior over `u` of the prior's Gaussian mixture (`flow.base = mixture`; "
                                         "a mixture prior only); **untrained**", _MIXTURE, trained=False),
    "mixture-noise-tmin0.005": Row("mixture-noise-tmin0.005-step0, trained", _MIXTURE,
                                   start="mixture-noise-tmin0.005-step0"),
    "mixture-denoised-tmin0.005-step0": Row("the mixture start with the likelihood of `y` given `D(u)` (no error law; "
                                            "the components' bases of that model, no decoder noise), t_min 0.005; "
                                            "**untrained**", {**_MIXTURE, "flow.likelihood": "denoised",
                                                              "flow.decoder_noise": False}, trained=False),
    "mixture-denoised-tmin0.005": Row("mixture-denoised-tmin0.005-step0, trained",
                                      {**_MIXTURE, "flow.likelihood": "denoised", "flow.decoder_noise": False},
                                      start="mixture-denoised-tmin0.005-step0"),
}
"""Row name -> :class:`Row`. Every row sets each lever, so a change of the profile's flow defaults
changes no row."""


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def report_stem(script: str, profile: str, tag: str | None = None, task: str | None = None,
                scored_on: str = "heldout") -> str:
    """File name (without suffix) of the report, e.g. ``flow_ablation-bunny_mnist-cpu``,
    ``flow_ablation-bunny_mnist-cpu-seeds`` with the tag ``seeds``,
    ``flow_ablation-image_restoration-super_resolution-cpu`` for the task ``super-resolution``
    (``task`` is named only when it is not the workload's first), or
    ``flow_ablation-bunny_mnist-cpu-validation-seeds`` scored on the validation measurements."""
    where = script + (f"-{task.replace('-', '_')}" if task else "")
    return (f"flow_ablation-{where}-{profile}" + ("-validation" if scored_on == "validation" else "")
            + (f"-{tag}" if tag else ""))


@dataclass
class Setting:
    """What every row shares: the workload, the ablated task, the prior and the measurements
    (``held``: the ones the rows are scored on, held-out or validation as ``scored_on`` says)."""

    workload: Workload
    task: Task
    config: Config
    prior: Any
    train: Measured
    held: Measured
    base_out: Path
    device: torch.device
    scored_on: str = "heldout"


SCORED_ON = {"heldout": "held-out", "validation": "validation"}
"""The measurement sets a report can be scored on, and the word its table uses for them."""


def setting(workload: str | Workload, config: Config, base_out: Path, task: str | None = None,
            scored_on: str = "heldout") -> Setting:
    """Load (or make) the benchmark's prior and the measurements of ``task`` (default the
    workload's first) in ``base_out`` (``workload``: its name, or the workload built from ``config``); the rows are scored on its held-out measurements, or on
    its validation measurements (:func:`validation_measurements`) for ``scored_on="validation"``.

    Raises:
        ValueError: for a task the workload does not have, listing its tasks, or another ``scored_on``.
    """
    if scored_on not in SCORED_ON:
        raise ValueError(f"scored_on must be one of {sorted(SCORED_ON)}, got {scored_on!r}")
    workload = WORKLOADS[workload](config) if isinstance(workload, str) else workload
    task_ = workload.task(task)  # refused before the prior trains
    device = torch.device("cpu")
    prior = stage_prior(workload, config, base_out, device=device, progress=False).eval()
    train, evals = stage_measurements(workload, task_, config, base_out)
    scored = evals["heldout"] if scored_on == "heldout" else validation_measurements(train, config)
    return Setting(workload, task_, config, prior, train, scored, base_out, device, scored_on)


def score_flow(s: Setting, posterior: AmortizedPosterior, seed: int, n_posterior: int | None = None
               ) -> dict[str, dict[str, float]]:
    """``aps_n1`` and ``aps_n128`` of ``posterior`` on the held-out measurements, as the benchmark
    run with seed ``seed`` scores its flow (same function, keywords and generator), each with the
    PSNR of every measurement (``per_measurement``, for the paired differences of the table)."""
    c = s.config.eval
    g = torch.Generator(s.device).manual_seed(seed + c.seed_offset)
    scores, _ = score_posterior(posterior, s.held.x, s.held.y, s.held.operator,
                                n_posterior=c.n_posterior if n_posterior is None else n_posterior,
                                batch_size=c.batch_size, chunk=c.chunk, generator=g,
                                **score_arguments(s.workload, s.held))
    return {k: {**v.to_dict(), "per_measurement": [float(p) for p in v.per_measurement]} for k, v in scores.items()}


def _untrained(s: Setting, config: Config, folder: Path) -> AmortizedPosterior:
    """The sampler before training, saved in ``folder`` like a trained row's (and built again when
    the stored one was made with other settings: nothing is lost)."""
    done = folder / "posterior.pt"
    record = json.loads(json.dumps(flow_record(s.workload, s.task, config)))
    if done.is_file() and read_config(folder / "config.json") == record:
        posterior = AmortizedPosterior.load(done, fingerprint=s.workload.geometry.fingerprint())
        if posterior.decode is not None:
            posterior.attach_prior(s.prior)
        return posterior.eval()
    posterior = new_flow(s.workload, s.task, config, s.prior, s.train, s.base_out, device=s.device).eval()
    folder.mkdir(parents=True, exist_ok=True)
    write_config(folder / "config.json", record)
    posterior.metadata["train_steps"] = 0
    posterior.save(done)
    (folder / "complete").write_text(json.dumps({"seconds_last_invocation": 0.0, "steps": 0, "skipped": 0}))
    return posterior


def run_row(s: Setting, name: str, seed: int, *, minutes: float, train_steps: int, out: Path,
            curve_every: int = 0) -> dict[str, Any]:
    """Train (or resume, or load) one row's flow in ``out/<name>-s<seed>`` and score it."""
    row = ROWS[name]
    overrides = {**row.overrides, "flow.minutes": minutes, "flow.train_steps": train_steps} if row.trained \
        else dict(row.overrides)
    config = apply_overrides(s.config, {**overrides, "seed": seed})
    folder = out / f"{name}-s{seed}"
    curve_path = folder / "curve.json"
    curve: list[dict[str, float]] = json.loads(curve_path.read_text()) if curve_path.is_file() else []
    offset = curve[-1]["minutes"] if curve else 0.0
    clock = {"start": time.monotonic(), "paused": 0.0}

    def observer(trainer: Any, step: int, logs: dict[str, float]) -> float:
        if curve_every <= 0 or step % curve_every:
            return 0.0
        tic = time.monotonic()
        draws = min(32, s.config.eval.n_posterior)
        scores = score_flow(s, trainer.ema_model.eval(), seed, n_posterior=draws)
        point = {"step": step, "minutes": offset + (tic - clock["start"] - clock["paused"]) / 60, "draws": draws,
                 **_summary(scores)}
        curve.append(point)
        folder.mkdir(parents=True, exist_ok=True)
        curve_path.write_text(json.dumps(curve, indent=1))
        print(f"    step {step:5d}  {point['minutes']:5.1f} min  N=1 {point['psnr_n1']:.2f} dB  "
              f"mean {point['psnr_mean']:.2f} dB", flush=True)
        spent = time.monotonic() - tic
        clock["paused"] += spent
        return spent

    complete = folder / "complete"
    before = complete.stat().st_mtime_ns if complete.is_file() else None
    if row.trained:
        posterior = stage_flow(s.workload, s.task, config, s.prior, s.train, s.base_out, device=s.device,
                               progress=False, observer=observer, folder=folder).eval()
    else:
        posterior = _untrained(s, config, folder)
    done = json.loads(complete.read_text())
    timing = folder / "row.json"  # training time without the curve's scoring, written when it trains
    if before is None or complete.stat().st_mtime_ns != before:
        timing.write_text(json.dumps({"train_minutes": max(0.0, done["seconds_last_invocation"] - clock["paused"])
                                      / 60}))
    train_minutes = json.loads(timing.read_text())["train_minutes"] if timing.is_file() else float("nan")
    return {"row": name, "description": row.description, "overrides": overrides, "seed": seed,
            "train_minutes": train_minutes, "train_steps": done["steps"], "schedule": train_steps if row.trained else 0,
            "skipped_steps": done.get("skipped", 0), "methods": score_flow(s, posterior, seed), "curve": curve}


def _summary(methods: dict[str, dict[str, float]]) -> dict[str, float]:
    """The table's numbers of one scored sampler (``aps_n1`` / ``aps_n128``)."""
    one, mean = methods["aps_n1"], methods["aps_n128"]
    out = {"psnr_n1": one["psnr"], "psnr_mean": mean["psnr"]}
    for key in ("coverage90", "coverage90_missing", "std_missing", "std_observed"):
        if key in mean:
            out[key] = mean[key]
    if "std_missing" in out and "std_observed" in out:
        out["std_ratio"] = out["std_missing"] / out["std_observed"]
    return out


# -- references ----------------------------------------------------------------------------------------
def _tuned_settings(s: Setting) -> tuple[dict[str, Any], str]:
    """Baseline settings chosen on validation measurements: the benchmark's ``tuning.json`` when
    it was made for these measurements and grids (DPS's step size only when also for this prior
    and step count), else the Tikhonov weight tuned here on the same validation measurements (the
    iterative baselines then keep their defaults; a task without Tikhonov tunes nothing here)."""
    val = validation_measurements(s.train, s.config)
    smoothings = list(s.config.eval.tune_smoothings)
    tikhonov = "harmonic" in s.task.baselines  # the Tikhonov variant comes with harmonic interpolation
    path = s.base_out / s.task.name / "tuning.json"
    if path.is_file():
        doc = json.loads(path.read_text())
        request = doc.get("request", {})
        if ((not tikhonov or "harmonic_tikhonov" in doc) and request.get("smoothings") == smoothings
                and request.get("measurements") == int(val.x.shape[0]) and request.get("seed") == s.config.seed):
            tuned = {"harmonic_tikhonov": doc["harmonic_tikhonov"]} if tikhonov else {}
            if ("dps" in doc and request.get("dps_steps") == s.config.eval.dps_nfe
                    and request.get("prior") == state_digest(s.prior)):  # DPS's step size: tuned for this prior
                tuned["dps"] = doc["dps"]
            return tuned, f"chosen on {val.x.shape[0]} validation measurements (`{path}`)"
    if not tikhonov:
        return {}, "none: no matching `tuning.json`"
    weight = tune_smoothing(s.workload, val.x, val.y, val.operator, tuple(smoothings))
    return ({"harmonic_tikhonov": {"chosen": {"smoothing": weight}}},
            f"chosen here on {val.x.shape[0]} validation measurements (flow-training measurements "
            f"{s.config.eval.n_eval}-{s.config.eval.n_eval + val.x.shape[0] - 1}, never evaluated)")


def _benchmark_dps(s: Setting) -> tuple[dict[str, float], int, str] | None:
    """The benchmark's DPS entry when its ``results.json`` scored it on these held-out measurements."""
    path = s.base_out / "results.json"
    if s.scored_on != "heldout" or not path.is_file():
        return None
    doc = json.loads(path.read_text())
    for e in doc.get("evaluations") or [doc]:
        p = e["protocol"]
        if (p.get("evaluation") == "heldout" and p.get("task") == s.task.name and "dps" in e["methods"]
                and p.get("measurements") == int(s.held.x.shape[0]) and e.get("profile") == s.config.profile):
            return e["methods"]["dps"], int(p.get("baseline_measurements", p["measurements"])), str(path)
    return None


def references(s: Setting, out: Path, n_dps: int) -> dict[str, Any]:
    """The reference methods on the held-out measurements, scored as the benchmark scores them:
    the exact Gaussian posterior (``gaussian_draw``, ``gaussian_mean``; for a ``"mixture"`` prior also
    its mixture's, ``mixture_draw``, ``mixture_mean``), harmonic interpolation,
    Tikhonov (weight chosen on validation measurements) and DPS (the benchmark's when it ran on
    these measurements, else run here on the first ``n_dps``). Cached in ``out/references.json``."""
    stored = _benchmark_dps(s)
    key = {"version": REFERENCES_VERSION, "workload": s.workload.name, "task": s.task.name,
           "profile": s.config.profile, "seed": s.config.seed, "prior": state_digest(s.prior),
           "measurements": int(s.held.x.shape[0]),
           "n_posterior": s.config.eval.n_posterior,
           "dps": {"source": stored[2]} if stored is not None else {"measurements": n_dps},
           **({} if s.scored_on == "heldout" else {"scored_on": s.scored_on})}
    cache = out / "references.json"
    if cache.is_file():
        ref = json.loads(cache.read_text())
        if ref.get("key") == key:
            return ref
    _log(f"references on {s.held.x.shape[0]} {SCORED_ON[s.scored_on]} measurements")
    tuned, tuned_note = _tuned_settings(s)
    gaussian = stage_gaussian(s.workload, s.config, s.base_out, device=s.device)
    samplers = build_baselines(s.workload, s.task, s.config, s.prior, tuned, gaussian)
    c = s.config.eval
    x, y, op = s.held.x, s.held.y, s.held.operator
    score = score_arguments(s.workload, s.held)
    g = torch.Generator(s.device).manual_seed(s.config.seed + c.seed_offset)
    methods: dict[str, dict[str, float]] = {}
    notes: dict[str, str] = {}
    for name in CLOSED_FORM:  # the Gaussian posterior, and a mixture prior's own
        if name in samplers:
            found, _ = score_gaussian(samplers[name], x, y, op, n_posterior=c.n_posterior, batch_size=c.batch_size,
                                      generator=g, name=name, **score)
            methods.update({k: v.to_dict() for k, v in found.items()})
    for name in ("harmonic", "harmonic_tikhonov"):
        if name in samplers:
            o = run_sampler(samplers[name], y, op, n=1, batch_size=c.batch_size, generator=g)
            methods[name] = score_estimate(o.first, x, seconds_per_sample=o.seconds_per_sample, nfe=o.nfe,
                                           **score).to_dict()
    if "harmonic_tikhonov" in tuned:
        weight = tuned["harmonic_tikhonov"]["chosen"]["smoothing"]
        notes["harmonic_tikhonov"] = f"weight {weight:g} {tuned_note}" + (
            ": plain harmonic interpolation" if weight == 0 else "")
    if stored is not None:
        methods["dps"], k, source = stored
        notes["dps"] = f"{methods['dps']['nfe']} NFE, from the benchmark run `{source}`"
    elif n_dps > 0 and "dps" in samplers:
        k = min(n_dps, int(x.shape[0]))
        sub = torch.arange(k)
        _log(f"  dps on {k} measurements")
        o = run_sampler(samplers["dps"], y[sub], op.select(sub), n=1, batch_size=c.batch_size, generator=g)
        groups = None if s.held.groups is None else s.held.groups[:k]
        one_field = groups is not None and groups.unique().numel() < 2
        sub_score = dict(score, groups=None if one_field else groups,
                         observed=None if score["observed"] is None else score["observed"][:k])
        methods["dps"] = score_estimate(o.first, x[sub], seconds_per_sample=o.seconds_per_sample, nfe=o.nfe,
                                        **sub_score).to_dict()
        if one_field:  # masks of one field: no interval over fields
            for bound in ("psnr_low", "psnr_high", "psnr_raw_low", "psnr_raw_high"):
                methods["dps"].pop(bound, None)
        chosen = tuned.get("dps", {}).get("chosen")
        notes["dps"] = (f"{o.nfe} NFE, run here" + (f" with the step size {tuned_note}: {chosen}" if chosen
                                                     else " with its default step size"))
    else:
        k = 0
    if k:
        notes["dps"] += ", on all the measurements" if k == x.shape[0] else f", on the first {k} measurements"
    ref = {"key": key, "methods": methods, "notes": notes, "dps_measurements": k,
           "gaussian": gaussian.fit_info.get("ridge"), "tuning": tuned}
    out.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(ref, indent=1))
    return ref


def benchmark_row(s: Setting) -> dict[str, Any] | None:
    """The benchmark run's own flow in ``base_out`` on these held-out measurements (``None`` when
    it has not run, or ran on other measurements): its ``aps_n1`` / ``aps_n128`` scores, flow
    settings, and the steps and minutes it trained (from its ``complete`` marker when known)."""
    path = s.base_out / "results.json"
    if s.scored_on != "heldout" or not path.is_file():
        return None
    data = json.loads(path.read_text())
    for e in data.get("evaluations") or [data]:
        p = e["protocol"]
        if (p.get("evaluation") != "heldout" or p.get("task", s.task.name) != s.task.name
                or p.get("measurements") != int(s.held.x.shape[0])):
            continue
        cfg = e["config"] if "flow" in e["config"] else from_legacy_profile(e["config"]["profile"])
        flow = cfg["flow"]
        row = {"row": "benchmark run", "seed": e["config"].get("seed", 0),
               "script": s.workload.name.replace("-", "_"),
               "methods": {k: e["methods"][k] for k in ("aps_n1", "aps_n128")}, "flow": flow,
               "schedule": flow["train_steps"], "train_steps": flow["train_steps"],
               "train_minutes": flow.get("minutes") or float("nan")}
        done = s.base_out / s.task.name / "complete"
        if done.is_file():
            info = json.loads(done.read_text())
            row.update(train_steps=info["steps"], train_minutes=info["seconds_last_invocation"] / 60)
        return row
    return None


# -- the report ----------------------------------------------------------------------------------------
def _cell(values: list[float], digits: int = 2) -> str:
    values = [v for v in values if v == v]  # without NaN
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _psnr_cell(entries: list[dict[str, float]]) -> str:
    """PSNR with its 95% interval (one run), or mean ± sd over seeds."""
    if len(entries) == 1 and "psnr_low" in entries[0]:
        e = entries[0]
        return f"{e['psnr']:.2f} [{e['psnr_low']:.2f}, {e['psnr_high']:.2f}]"
    return _cell([e["psnr"] for e in entries])


def _pair(entries: list[dict[str, float]] | None, a: str, b: str, digits: int) -> str:
    """``a / b`` of the entries (``b`` left out where none has it)."""
    if not entries or not any(a in e for e in entries):
        return "–"
    cells = [_cell([e.get(k, float("nan")) for e in entries], digits) for k in (a, b) if any(k in e for e in entries)]
    return " / ".join(cells)


def _std_cell(entries: list[dict[str, float]] | None) -> str:
    """The mean posterior std on missing / observed vertices, or over all vertices (``(all)``) where
    the operator masks none."""
    if entries and not any("std_missing" in e for e in entries) and all("std_mean" in e for e in entries):
        return _cell([e["std_mean"] for e in entries], 3) + " (all)"
    return _pair(entries, "std_missing", "std_observed", 3)


def _ratio(entries: list[dict[str, float]] | None) -> str:
    return _cell([e["std_missing"] / e["std_observed"] for e in entries or []
                  if "std_missing" in e and "std_observed" in e])


def _table_row(label: str, what: str, seeds: str, ones: list[dict[str, float]] | None,
               means: list[dict[str, float]] | None, minutes: str, steps: str, cover: str | None = None,
               paired: str = "–") -> str:
    """One line of the table: ``ones`` score the one-draw column, ``means`` the rest."""
    cells = [label, what, seeds, _psnr_cell(ones) if ones else "–", _psnr_cell(means) if means else "–",
             _std_cell(means), _ratio(means),
             _pair(means, "coverage90", "coverage90_missing", 2) if cover is None else cover, paired, minutes, steps]
    return "| " + " | ".join(cells) + " |"


def _paired_cell(rows: list[dict[str, Any]], starts: dict[int, dict[str, Any]], groups: list[int] | None) -> str:
    """PSNR of trained ``rows`` minus that of their untrained start (``starts``: seed -> row), one
    draw / mean, each on the same measurements with the same draws of the base: the mean
    difference with its paired 95% bootstrap interval (one seed; resampling ``groups`` together),
    or mean ± sd of the per-seed differences. ``–`` where no seed has both rows scored."""
    diffs: dict[str, list[tuple[float, float, float]]] = {"aps_n1": [], "aps_n128": []}
    for r in rows:
        start = starts.get(r["seed"])
        if start is None:
            continue
        for key, found in diffs.items():
            a, b = r["methods"][key].get("per_measurement"), start["methods"][key].get("per_measurement")
            if a is None or b is None or len(a) != len(b):
                break
            found.append(paired_difference(torch.tensor(a), torch.tensor(b),
                                           groups=None if groups is None else torch.tensor(groups)))
    if not diffs["aps_n1"] or len(diffs["aps_n1"]) != len(diffs["aps_n128"]):
        return "–"
    if len(diffs["aps_n1"]) == 1:
        return " / ".join(f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]" for m, lo, hi in (d[0] for d in diffs.values()))
    return " / ".join(f"{statistics.mean(m for m, _, _ in d):+.2f} ± {statistics.stdev(m for m, _, _ in d):.2f}"
                      for d in diffs.values())


def _mean_entry(entries: list[dict[str, float]]) -> dict[str, float]:
    """The mean over seeds of every number of a method's entries (for the calibration plot)."""
    keys = set.intersection(*(set(e) for e in entries))
    return {k: statistics.mean(float(e[k]) for e in entries) for k in keys if isinstance(entries[0][k], (int, float))}


def _budget(r: dict[str, Any]) -> str:
    return f"{r['overrides']['flow.minutes']:g} minutes of training (a {r['schedule']}-step cosine schedule)"


def write_report(results: list[dict[str, Any]], ref: dict[str, Any], bench: dict[str, Any] | None, out: Path,
                 stem: str, *, workload: str, task: str, profile: str, n_posterior: int, tag: str | None = None,
                 groups: list[int] | None = None) -> None:
    """``<stem>.json``, ``<stem>.md``, ``figures/<stem>-calibration.png`` and, with curves,
    ``<stem>.png`` in ``out`` (a ``tag`` is named in the title; ``groups``: the held-out
    measurements' groups, resampled together in the paired intervals)."""
    by_row: dict[str, list[dict[str, Any]]] = {}
    for r in sorted(results, key=lambda r: (list(ROWS).index(r["row"]), r["seed"])):
        by_row.setdefault(r["row"], []).append(r)
    m = ref["methods"]
    measurements = f"{ref['key']['measurements']} {SCORED_ON[ref['key'].get('scored_on', 'heldout')]}"
    budgets = {_budget(r) for r in results if r["schedule"]}
    shared = next(iter(budgets)) if len(budgets) == 1 else None
    lines = [
        f"# Flow ablation: {workload}, {task} ({profile} profile, {measurements} measurements"
        + (f"; {tag}" if tag else "") + ")", "",
        "Every row distils the same prior into a fresh flow on the benchmark's training measurements within "
        + (f"{shared}, cut by the cap where a row is slower," if shared else "the budget its row states")
        + " and is scored as the benchmark scores its flow (`score_posterior`): one draw, and the mean of "
        f"{n_posterior} draws, with 95% bootstrap intervals (mean ± sd over seeds when there are several); the mean "
        f"posterior std of the draws on missing / observed vertices (on all, where the operator masks none) and "
        "their ratio; the coverage of the draws' "
        "central 90% intervals over all / missing vertices; for a trained row, its PSNR minus that of the untrained "
        "sampler it starts from, measurement by measurement with the same draws of the base (paired 95% bootstrap "
        "interval, or mean ± sd of the seeds' differences). The references below the rows are scored on the same "
        "measurements in the same run.", "",
        f"| row | what changes | seeds | PSNR one draw (dB) | PSNR mean of {n_posterior} (dB) | std missing / observed "
        "| ratio | cover 90% all / missing | Δ vs untrained start: one draw / mean (dB) | train min | steps |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rs in by_row.items():
        what = rs[0]["description"]
        if shared is None and rs[0]["schedule"]:
            what += f"; {' / '.join(sorted({_budget(r) for r in rs}))}"
        start = ROWS[name].start
        paired = _paired_cell(rs, {r["seed"]: r for r in by_row.get(start, [])}, groups) if start else "–"
        lines.append(_table_row(name, what, ",".join(str(r["seed"]) for r in rs),
                                [r["methods"]["aps_n1"] for r in rs], [r["methods"]["aps_n128"] for r in rs],
                                _cell([r["train_minutes"] for r in rs], 1), _cell([r["train_steps"] for r in rs], 0),
                                paired=paired))
    if bench is not None:
        f = bench["flow"]
        what = (f"the benchmark's flow, `benchmarks/{bench['script']}.py`: base {f.get('base', 'fill')}, decode "
                f"{str(f.get('decode', False)).lower()}, t_min {f['t_min']:g}, {bench['schedule']}-step schedule"
                + (f" at lr {f['lr']:g}" if "lr" in f else ""))
        lines.append(_table_row(bench["row"], what, str(bench["seed"]), [bench["methods"]["aps_n1"]],
                                [bench["methods"]["aps_n128"]], _cell([bench["train_minutes"]], 1),
                                str(bench["train_steps"])))
    if "gaussian_mean" in m:
        g = m["gaussian_mean"]
        exact = (f" (exact intervals {g['coverage90_exact']:.2f}"
                 + (f" / {g['coverage90_exact_missing']:.2f}" if "coverage90_exact_missing" in g else "") + ")"
                 if "coverage90_exact" in g else "")
        lines.append(_table_row("ref: Gaussian posterior", "exact posterior of the Gaussian fitted to the prior's "
                                "training signals: one exact draw, the closed-form mean and std", "–",
                                [m["gaussian_draw"]], [g], "–", "–",
                                _pair([g], "coverage90", "coverage90_missing", 2) + exact))
    if "mixture_mean" in m:
        g = m["mixture_mean"]
        lines.append(_table_row("ref: mixture posterior", "exact posterior of the prior's Gaussian mixture (its "
                                "step 0): one exact draw, the closed-form mean and std", "–",
                                [m["mixture_draw"]], [g], "–", "–", _pair([g], "coverage90", "coverage90_missing", 2)))
    if "harmonic" in m:
        lines.append(_table_row("ref: harmonic", "harmonic interpolation (one deterministic estimate)", "–",
                                [m["harmonic"]], None, "–", "–"))
    if "harmonic_tikhonov" in m:
        lines.append(_table_row("ref: Tikhonov", f"harmonic + Tikhonov, {ref['notes']['harmonic_tikhonov']}", "–",
                                [m["harmonic_tikhonov"]], None, "–", "–"))
    if "dps" in m:
        lines.append(_table_row("ref: DPS", f"DPS with the same prior, one draw: {ref['notes']['dps']}", "–",
                                [m["dps"]], None, "–", "–"))
    notes = []
    if "harmonic_tikhonov" not in m and "harmonic_tikhonov" in ref["notes"]:
        notes.append(f"Tikhonov: {ref['notes']['harmonic_tikhonov']}.")
    if "dps" in m:
        notes.append(f"DPS takes {m['dps']['seconds_per_sample']:.2f} s per sample.")
    lines += ["", " ".join(["Rows differ only in the listed settings (every row sets each of them).", *notes])]
    calibration = out / "figures" / f"{stem}-calibration.png"
    if _plot_calibration(by_row, ref, bench, calibration, title=f"{workload}: flow ablation, {measurements} "
                         f"measurements, {n_posterior} draws"):
        lines += ["", f"Calibration of every row (nominal against empirical coverage at 50/80/90/95%): "
                  f"`figures/{stem}-calibration.png`."]
    curve = out / f"{stem}.png"
    if _plot_curves(results, ref, curve, workload):
        lines += ["", f"![PSNR against training time]({stem}.png)"]
    elif curve.is_file():
        curve.unlink()
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    (out / f"{stem}.json").write_text(json.dumps({"workload": workload, "task": task, "profile": profile,
                                                  "n_posterior": n_posterior, "groups": groups, "references": ref,
                                                  "benchmark": bench, "rows": results}, indent=1))


def _plot_calibration(by_row: dict[str, list[dict[str, Any]]], ref: dict[str, Any], bench: dict[str, Any] | None,
                      path: Path, *, title: str) -> bool:
    """Nominal against empirical coverage of every row (mean over seeds), the benchmark's flow and
    the Gaussian posterior (its draws and its exact intervals), over all and missing vertices."""
    from manifold_ps.viz import calibration_figure

    entries = {name: _mean_entry([r["methods"]["aps_n128"] for r in rs]) for name, rs in by_row.items()}
    if bench is not None:
        entries["benchmark run"] = bench["methods"]["aps_n128"]
    if "gaussian_mean" in ref["methods"]:
        entries["Gaussian posterior"] = ref["methods"]["gaussian_mean"]
    if "mixture_mean" in ref["methods"]:
        entries["mixture posterior"] = ref["methods"]["mixture_mean"]
    panels = {"all vertices": calibration_curves(entries)}
    missing = calibration_curves(entries, missing=True)
    if missing:
        panels["missing vertices"] = missing
    if not any(panels.values()):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    calibration_figure(panels, title=title).savefig(path, dpi=90)
    return True


def _plot_curves(results: list[dict[str, Any]], ref: dict[str, Any], path: Path, workload: str) -> bool:
    """PSNR of the flow against training minutes; the references as horizontal lines."""
    curves = [r for r in results if r["curve"]]
    if not curves:
        return False
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    for r in curves:
        t = [c["minutes"] for c in r["curve"]]
        line, = ax.plot(t, [c["psnr_mean"] for c in r["curve"]], label=f"{r['row']} s{r['seed']}: mean of {r['curve'][-1].get('draws', 32)}")
        ax.plot(t, [c["psnr_n1"] for c in r["curve"]], ls="--", color=line.get_color(),
                label=f"{r['row']} s{r['seed']}: one draw")
    m = ref["methods"]
    for key, label, style in (("harmonic", "harmonic", dict(color="k", ls=":")),
                              ("gaussian_mean", "Gaussian posterior mean", dict(color="tab:green", ls="-", lw=1)),
                              ("gaussian_draw", "Gaussian posterior draw", dict(color="tab:green", ls="--", lw=1)),
                              ("dps", f"DPS ({ref['dps_measurements']} meas.)", dict(color="tab:red", ls="-."))):
        if key in m:
            ax.axhline(m[key]["psnr"], label=f"{label} {m[key]['psnr']:.1f} dB", **style)
    ax.set_xlabel("flow training time (minutes)")
    ax.set_ylabel(f"{SCORED_ON[ref['key'].get('scored_on', 'heldout')]} PSNR (dB)")
    ax.set_title(f"One-step sampler on {workload} against training time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def commit(out: Path, stem: str, target: Path) -> list[Path]:
    """Copy the report into ``target`` (``benchmarks/results/``) with the layout the docs render:
    ``<stem>.{json,md}``, ``<stem>.png`` when the table shows it (a stale one is removed) and
    ``figures/<stem>-calibration.png``. Returns the files written."""
    written = []
    for rel in (f"{stem}.json", f"{stem}.md", f"{stem}.png", f"figures/{stem}-calibration.png"):
        src, dst = out / rel, target / rel
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            written.append(dst)
        elif dst.is_file():
            dst.unlink()
    return written


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", choices=ABLATED, default="bunny-mnist")
    p.add_argument("--task", default=None, help="the workload's task to ablate (default its first)")
    p.add_argument("--scored-on", choices=list(SCORED_ON), default="heldout",
                   help="the measurements the rows are scored on: held-out, or the validation measurements "
                        "(where a flow setting is chosen)")
    add_config_arguments(p)
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--minutes", type=float, default=5.0, help="wall-clock training budget of each row")
    p.add_argument("--train-steps", type=int, default=450,
                   help="cosine schedule of every row (450: the paper row's steps in 5 minutes on 2 cores)")
    p.add_argument("--curve-every", type=int, default=0, help="score the flow every k steps (0: never)")
    p.add_argument("--base-out", type=Path, default=None,
                   help="the benchmark's folder with the prior and measurements (default runs/<script>)")
    p.add_argument("--out", type=Path, default=None, help="default runs/flow_ablation-<script>")
    p.add_argument("--dps-measurements", type=int, default=16,
                   help="held-out measurements DPS is run on when the benchmark's results.json has none (0: none)")
    p.add_argument("--table-only", action="store_true", help="rewrite the report from the stored rows, no scoring")
    p.add_argument("--tag", default=None,
                   help="names a separate report (<stem>-<tag>), e.g. the seeds of one configuration on another base run")
    p.add_argument("--commit", type=Path, nargs="?", const=RESULTS, default=None, metavar="DIR",
                   help=f"copy the report into DIR (default {RESULTS.relative_to(ROOT)}/)")
    args = p.parse_args(argv)
    script = args.workload.replace("-", "_")
    config = config_from_args(args, defaults=profile_defaults(args.workload, args.profile))
    base_out = args.base_out or Path("runs") / script
    out = args.out or Path("runs") / f"flow_ablation-{script}"
    out.mkdir(parents=True, exist_ok=True)
    workload = WORKLOADS[args.workload](config)  # built once: the report's name and the rows need it
    task = workload.task(args.task)
    stem = report_stem(script, config.profile, args.tag, task=task.name if task is not workload.tasks[0] else None,
                       scored_on=args.scored_on)
    report = out / f"{stem}.json"
    previous: list[dict[str, Any]] = []
    if report.is_file():  # rows of this table format only (older reports had other rows and scores)
        previous = [r for r in json.loads(report.read_text()).get("rows", [])
                    if r.get("row") in ROWS and "methods" in r]
    if args.table_only:
        if not report.is_file():
            raise FileNotFoundError(f"--table-only rewrites {report}, which is not there yet")
        stored = json.loads(report.read_text())
        ref, bench = stored["references"], stored["benchmark"]
        common = {**{k: stored[k] for k in ("workload", "task", "profile", "n_posterior")}, "tag": args.tag,
                  "groups": stored.get("groups")}
        write_report(previous, ref, bench, out, stem, **common)
    else:
        s = setting(workload, config, base_out, task=task.name, scored_on=args.scored_on)
        ref = references(s, out, args.dps_measurements)
        bench = benchmark_row(s)
        common = dict(workload=s.workload.name, task=s.task.name, profile=config.profile,
                      n_posterior=config.eval.n_posterior, tag=args.tag,
                      groups=None if s.held.groups is None else [int(k) for k in s.held.groups])
        for name in args.rows:
            for seed in args.seeds:
                _log(f"row {name}, seed {seed}")
                r = run_row(s, name, seed, minutes=args.minutes, train_steps=args.train_steps, out=out,
                            curve_every=args.curve_every)
                previous = [q for q in previous if (q["row"], q["seed"]) != (name, seed)] + [r]
                k = _summary(r["methods"])
                _log(f"  one draw {k['psnr_n1']:.2f} dB, mean {k['psnr_mean']:.2f} dB, coverage "
                     f"{k.get('coverage90', float('nan')):.3f}, {r['train_steps']} steps in "
                     f"{r['train_minutes']:.1f} min")
                write_report(previous, ref, bench, out, stem, **common)
    print((out / f"{stem}.md").read_text(), flush=True)
    if args.commit is not None:
        for path in commit(out, stem, args.commit):
            _log(f"wrote {path}")
    return json.loads(report.read_text())


if __name__ == "__main__":
    main()
