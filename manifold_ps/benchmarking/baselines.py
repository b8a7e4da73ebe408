"""The baselines of a benchmark, at reference strength: the Gaussian posterior fitted to the prior's
training signals, and every tunable setting chosen on validation measurements.

Validation measurements are the task's flow-training measurements after the first ``n_eval``
(the paper protocol evaluates the first ``n_eval``; the held-out sets are other signals), so no
setting is ever chosen on an evaluated measurement. Each stage writes its result into the run
folder, is reused on a rerun with the same settings, and refuses a stored result made with other
settings, naming them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..metrics import project, psnr
from ..operators import Operator
from ..priors import DiffusionPrior, GaussianMixture, GaussianPrior
from ..sampling import PosteriorSampler
from ..training import state_digest
from .evaluate import run_sampler
from ..config import Config
from .workloads import Task, Workload

__all__ = ["stage_gaussian", "fit_mixture", "stage_tuning", "build_baselines", "tune_smoothing", "SLOW_BASELINES"]

SLOW_BASELINES = ("dps", "mcg", "reddiff")
"""Iterative baselines (hundreds of network evaluations per sample)."""


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _refuse_if_changed(stored: dict[str, Any], wanted: dict[str, Any], path: Path) -> None:
    diff = [f"{k} {stored.get(k)!r} -> {wanted.get(k)!r}" for k in sorted(set(stored) | set(wanted))
            if stored.get(k) != wanted.get(k)]
    if diff:
        raise ValueError(f"{path} was made with other settings ({'; '.join(diff)}); delete it to redo it, "
                         "or use another --out")


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path)


# -- the Gaussian baseline --------------------------------------------------------------------------------
def stage_gaussian(workload: Workload, config: Config, out: Path, *, device: torch.device) -> GaussianPrior:
    """Fit (or load) the Gaussian of the prior's training signals in ``out/gaussian/gaussian.pt``.

    The ridge is chosen among ``config.eval.gaussian_ridges`` by the log-likelihood of the last
    ``gaussian_validation_fraction`` of the training signals under a fit to the rest; the chosen
    ridge is then refitted on all of them. Float64, like every exact posterior computed from it.
    """
    path = out / "gaussian" / "gaussian.pt"
    signals = workload.prior_train
    settings = {"rank": config.eval.gaussian_rank, "ridges": list(config.eval.gaussian_ridges),
                "validation_fraction": config.eval.gaussian_validation_fraction, "signals": int(signals.shape[0])}
    if path.is_file():
        prior = GaussianPrior.load(path, num_vertices=workload.geometry.num_vertices)
        _refuse_if_changed(prior.fit_info.get("settings", {}), settings, path)
        _log(f"gaussian: loaded {path} (rank {prior.rank}, ridge {prior.fit_info['ridge']:g})")
        return prior.to(device)
    tic = time.perf_counter()
    n_val = max(1, int(round(config.eval.gaussian_validation_fraction * signals.shape[0])))
    dims = signals.shape[1] * signals.shape[2]
    rank = None if config.eval.gaussian_rank is None else min(config.eval.gaussian_rank, dims)  # a small signal: all
    probe = GaussianPrior.fit(signals[:-n_val], rank=rank, ridge=config.eval.gaussian_ridges, validation=signals[-n_val:])
    ridge = float(probe.fit_info["ridge"])
    prior = GaussianPrior.fit(signals, rank=rank, ridge=ridge)
    prior.fit_info.update(settings=settings, ridge_candidates=probe.fit_info.get("ridge_candidates", [ridge]),
                          validation_log_likelihood=probe.fit_info.get("validation_log_likelihood", []),
                          validation_signals=n_val, seconds=time.perf_counter() - tic)
    prior.save(path)
    _log(f"gaussian: fitted to {signals.shape[0]} signals in {time.perf_counter() - tic:.0f} s "
         f"(rank {prior.rank}, ridge {ridge:g} chosen on {n_val} held-out training signals)")
    return prior.to(device)


def fit_mixture(signals: Tensor, config: Config, *, components: int | None = None, covariance: str | None = None,
                shrinkage: tuple[float, ...] | None = None) -> GaussianMixture:
    """Fit the Gaussian mixture of the prior's training signals ``(N, C, V)`` the way :func:`stage_gaussian` fits the Gaussian.

    The ridge among ``config.eval.gaussian_ridges`` (and, for per-component covariances, the
    shrinkage among the candidates) is chosen by the log-likelihood of the last
    ``gaussian_validation_fraction`` of the signals under a fit to the rest; the mixture is then
    refitted on all of them with those values and the same k-means seed (``config.seed``).
    ``components``, ``covariance`` and ``shrinkage`` default to ``config.prior.mixture_*``; the
    rank is ``config.prior.mixture_rank`` or else ``config.eval.gaussian_rank``.

    Returns:
        The mixture in float64; ``fit_info`` records the probe fit's choices and the seconds taken.
    """
    tic = time.perf_counter()
    k = config.prior.mixture_components if components is None else components
    cov = config.prior.mixture_covariance if covariance is None else covariance
    weights = tuple(config.prior.mixture_shrinkage if shrinkage is None else shrinkage)
    n_val = max(1, int(round(config.eval.gaussian_validation_fraction * signals.shape[0])))
    dims = signals.shape[1] * signals.shape[2]
    rank = config.prior.mixture_rank if config.prior.mixture_rank is not None else config.eval.gaussian_rank
    rank = None if rank is None else min(rank, dims)
    probe = GaussianMixture.fit(signals[:-n_val], k, generator=torch.Generator().manual_seed(config.seed), rank=rank,
                                ridge=config.eval.gaussian_ridges, validation=signals[-n_val:],
                                covariance=cov, shrinkage=weights)  # type: ignore[arg-type]
    ridge = float(probe.fit_info["ridge"])
    chosen = float(probe.fit_info.get("shrinkage", 1.0))
    mixture = GaussianMixture.fit(signals, k, generator=torch.Generator().manual_seed(config.seed), rank=rank,
                                  ridge=ridge, covariance=cov, shrinkage=chosen)  # type: ignore[arg-type]
    mixture.fit_info.update(probe={key: v for key, v in probe.fit_info.items() if key != "within"},
                            validation_signals=n_val, seconds=time.perf_counter() - tic)
    _log(f"mixture: {k} components ({cov}) fitted to {signals.shape[0]} signals in {time.perf_counter() - tic:.0f} s "
         f"(clusters of {min(mixture.fit_info['cluster_sizes'])}-{max(mixture.fit_info['cluster_sizes'])}, "
         f"ridge {ridge:g}" + (f", shrinkage {chosen:g}" if cov != "shared" else "") + ")")
    return mixture


# -- validation tuning --------------------------------------------------------------------------------------
def tune_smoothing(workload: Workload, x: Tensor, y: Tensor, operator: Operator,
                   candidates: tuple[float, ...] = (0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)) -> float:
    """The Tikhonov weight of the harmonic baseline with the best mean PSNR on ``(x, y)``.

    Pass validation measurements: tuned on the evaluated ones it favours the baseline.

    Returns:
        The best weight among ``candidates`` (0: plain harmonic).
    """
    from ..baselines import HarmonicInterpolation

    scores = [float(psnr(project(HarmonicInterpolation(workload.geometry, smoothing=s).sample(y, operator, 1)[:, 0]
                                 .double(), workload.data_range), x.double()).mean()) for s in candidates]
    return candidates[max(range(len(candidates)), key=scores.__getitem__)]


def _grid_search(name: str, make: Callable[[dict[str, Any]], PosteriorSampler], grid: list[dict[str, Any]],
                 x: Tensor, y: Tensor, operator: Operator, data_range: tuple[float, float] | None, *,
                 batch: int, seed: int) -> dict[str, Any]:
    rows = []
    for setting in grid:
        tic = time.perf_counter()
        g = torch.Generator(y.device).manual_seed(seed)
        est = run_sampler(make(setting), y, operator, n=1, batch_size=batch, generator=g).first
        score = float(psnr(project(est.double(), data_range), x.double()).mean())
        rows.append({**setting, "psnr": score, "seconds": time.perf_counter() - tic})
        _log(f"  tuning {name}: {setting} -> {score:.2f} dB")
    best = max(rows, key=lambda r: r["psnr"])
    return {"chosen": {k: best[k] for k in grid[0]}, "grid": rows}


def stage_tuning(workload: Workload, task: Task, config: Config, prior: DiffusionPrior, x: Tensor, y: Tensor,
                 operator: Operator, out: Path, *, validation: str) -> dict[str, Any]:
    """Choose every tunable baseline setting on validation measurements (or load the choice).

    Tuned: DPS's and MCG's step budget ``zeta * steps`` and ``clip_denoised`` (only where the
    workload guarantees a data range), RED-diff's learning rate and weight, the Tikhonov weight.
    The choice, every grid point's validation PSNR and the validation set's name are written to
    ``out/<task>/tuning.json``.

    Args:
        workload: The workload (geometry, data range).
        task: The task (which baselines apply).
        config: Grids and step counts (``config.eval``), the seed of the samplers' noise.
        prior: The diffusion prior of the iterative baselines.
        x: Clean validation signals ``(K, C, V)`` (only scored, never seen by a method).
        y: Their measurements.
        operator: Their operator.
        out: Run folder.
        validation: Human-readable name of the validation measurements.

    Returns:
        The tuning document (``{"validation": ..., "<baseline>": {"chosen": ..., "grid": ...}}``).
    """
    from ..baselines import DPS, MCG, REDDiff

    path = out / task.name / "tuning.json"
    request = {"measurements": int(x.shape[0]), "validation": validation, "dps_steps": config.eval.dps_nfe,
               "reddiff_steps": config.eval.reddiff_steps, "zeta_budgets": list(config.eval.tune_zeta_budgets),
               "reddiff_lrs": list(config.eval.tune_reddiff_lrs), "reddiff_lambdas": list(config.eval.tune_reddiff_lambdas),
               "smoothings": list(config.eval.tune_smoothings), "data_range": workload.data_range, "seed": config.seed,
               "baselines": list(task.baselines), "prior": state_digest(prior)}  # never reused for another prior
    request = json.loads(json.dumps(request))  # tuples as lists, as stored
    if path.is_file():
        doc = json.loads(path.read_text())
        _refuse_if_changed(doc.get("request", {}), request, path)
        _log(f"{task.name}: baseline settings from {path}")
        return doc
    tic = time.perf_counter()
    doc: dict[str, Any] = {"request": request}
    _log(f"{task.name}: tuning baseline settings on {x.shape[0]} validation measurements ({validation})")
    clips = (False, True) if workload.data_range is not None else (False,)
    dr = workload.data_range
    steps = config.eval.dps_nfe
    common = dict(x=x, y=y, operator=operator, data_range=dr, batch=config.eval.batch_size, seed=config.seed)
    for name, cls in (("dps", DPS), ("mcg", MCG)):
        if name in task.baselines:
            grid = [{"zeta": b / steps, "clip_denoised": c} for b in config.eval.tune_zeta_budgets for c in clips]
            doc[name] = _grid_search(name, lambda s, cls=cls: cls(prior, steps=steps, zeta=s["zeta"],
                                                                  clip_denoised=s["clip_denoised"], data_range=dr),
                                     grid, **common)
    if "reddiff" in task.baselines:
        grid = [{"lr": lr, "lambda_": lam} for lr in config.eval.tune_reddiff_lrs for lam in config.eval.tune_reddiff_lambdas]
        doc["reddiff"] = _grid_search("reddiff", lambda s: REDDiff(prior, steps=config.eval.reddiff_steps, **s), grid,
                                      **common)
    if "harmonic" in task.baselines:
        weight = tune_smoothing(workload, x, y, operator, config.eval.tune_smoothings)
        doc["harmonic_tikhonov"] = {"chosen": {"smoothing": weight}, "grid": list(config.eval.tune_smoothings)}
    doc["seconds"] = time.perf_counter() - tic
    _write_json(path, doc)
    _log(f"{task.name}: tuning took {doc['seconds'] / 60:.1f} min (not counted in the benchmark's budget)")
    return doc


def build_baselines(workload: Workload, task: Task, config: Config, prior: DiffusionPrior,
                    tuned: dict[str, Any] | None = None, gaussian: GaussianPrior | None = None
                    ) -> dict[str, PosteriorSampler]:
    """The baselines that apply to the task, with the validation-tuned settings where given.

    Without ``tuned`` the samplers keep their defaults and no Tikhonov variant is built; the
    Gaussian posterior needs ``gaussian``. With the Gaussian posterior comes, for a ``"mixture"``
    prior, the exact posterior of its mixture (``"mixture"``): the prior's own step 0, the
    strongest closed-form baseline of such a prior.
    """
    from ..baselines import DPS, MCG, GaussianPosterior, HarmonicInterpolation, MixturePosterior, REDDiff, TweedieDenoiser

    tuned = tuned or {}

    def chosen(name: str) -> dict[str, Any]:
        return dict(tuned.get(name, {}).get("chosen", {}))

    dr = workload.data_range
    out: dict[str, PosteriorSampler] = {}
    for name in task.baselines:
        if name == "gaussian":
            if gaussian is not None:
                out["gaussian"] = GaussianPosterior(gaussian)
            if prior.parameterization == "mixture" and prior.mixture is not None:
                out["mixture"] = MixturePosterior(prior.mixture)
        elif name in ("dps", "mcg"):
            cls = DPS if name == "dps" else MCG
            out[name] = cls(prior, steps=config.eval.dps_nfe, data_range=dr,
                            **({"zeta": config.eval.dps_zeta} | chosen(name)))
        elif name == "harmonic":
            out["harmonic"] = HarmonicInterpolation(workload.geometry)
            smoothing = chosen("harmonic_tikhonov").get("smoothing", 0.0)
            if smoothing > 0:
                out["harmonic_tikhonov"] = HarmonicInterpolation(workload.geometry, smoothing=smoothing)
        elif name == "reddiff":
            out["reddiff"] = REDDiff(prior, steps=config.eval.reddiff_steps, **chosen("reddiff"))
        elif name == "tweedie":
            out["tweedie"] = TweedieDenoiser(prior)
        else:
            raise ValueError(f"unknown baseline {name!r}")
    return out
