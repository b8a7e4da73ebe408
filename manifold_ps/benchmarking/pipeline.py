"""End-to-end benchmark of one workload: prior -> measurements -> amortized flow -> every sampler.

Every stage writes into ``out`` and is skipped or resumed on a rerun (Ctrl-C, then the same
command): the prior and the flows resume from their checkpoints, the measurements are generated
once with a fixed seed and stored, and the evaluation is recomputed from the stored samplers.
Each training stage writes its resolved configuration to ``config.json`` in its folder and a
rerun whose result-changing settings differ from it is refused (:func:`~manifold_ps.config.check_same_run`).
The command line (``manifold-ps train-prior``) runs the same :func:`stage_prior`.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .._files import atomic_open
from ..config import Config, EvalConfig, FlowConfig, check_same_run, read_config, write_config
from ..config._legacy import legacy_flow_settings
from ..flows import AdjointFill, AmortizedPosterior, ConditionalRealNVP, GaussianBase, HarmonicFill, condition_channels
from ..flows import DENSE_LIMIT, MixtureBase, truncate_gaussian
from ..flows import prepare_data, train_amortized
from ..operators import Denoising, Inpainting, LinearOperator, Operator, operator_from_config
from ..priors import DiffusionPrior, GaussianMixture, GaussianPrior, build_prior, train_prior
from ..sampling import PosteriorSampler
from ..training import load_checkpoint, state_digest
from .baselines import SLOW_BASELINES, build_baselines, fit_mixture, stage_gaussian, stage_tuning, tune_smoothing
from .evaluate import SamplerOutput, add_paired_differences, run_sampler, score_estimate
from .reproduce import steps_done, training_record
from .results import BenchmarkResults, MethodResult, calibration_curves, environment_versions, write_results
from .workloads import Task, Workload

if TYPE_CHECKING:
    from ..baselines import GaussianPosterior, MixturePosterior

__all__ = ["run_workload", "gaussian_base", "mixture_base", "stage_prior", "stage_measurements", "check_flow_base", "new_flow",
           "stage_flow", "build_baselines", "tune_smoothing", "score_arguments", "score_posterior", "score_gaussian", "CLOSED_FORM", "evaluation_request", "load_evaluation",
           "save_evaluation", "prior_record", "flow_record",
           "stage_gaussian", "stage_tuning", "validation_measurements", "validation_description", "Measured", "CALIBRATION_FIGURE"]


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _deadline_callback(minutes: float | None, observer: Callable[..., float | None] | None = None) -> Any:
    """A trainer callback: stop after ``minutes`` of wall-clock time, not counting the seconds the
    optional ``observer(trainer, step, logs)`` reports it spent."""
    if minutes is None and observer is None:
        return None
    end = time.monotonic() + 60.0 * (math.inf if minutes is None else minutes)

    def callback(trainer: Any, step: int, logs: dict[str, float]) -> bool:
        nonlocal end
        if observer is not None:
            end += float(observer(trainer, step, logs) or 0.0)
        return time.monotonic() > end

    return callback


def _resume_or_load(folder: Path, done: Path, record: dict[str, Any], unresolved: dict[str, Any],
                    section: str, stop_step: int | None) -> tuple[bool, dict[str, Any] | None]:
    """Compare ``folder/config.json`` with the requested ``record`` (refusing a difference) and say
    whether the finished result in ``done`` can be loaded as is (else train or resume; a larger
    ``train_steps`` or a ``stop_step`` past the steps done extends a finished run, one before them
    is refused). Returns ``(load, stored record or None)``."""
    stored = read_config(folder / "config.json")
    if stored is not None:
        check_same_run(stored, record, folder, unresolved=unresolved)
    finished = done.is_file() and (folder / "complete").is_file()
    grows = stored is not None and stored[section]["train_steps"] < record[section]["train_steps"]
    if finished and not grows and stop_step is not None:
        steps = steps_done(folder)
        if steps is not None and steps > stop_step:
            raise ValueError(f"{done} was trained for {steps} steps, past {section}.stop_step={stop_step}; delete "
                             f"{folder} to train it again, or use another --out")
        grows = steps is not None and steps < min(stop_step, record[section]["train_steps"])
    if not (finished and not grows):
        write_config(folder / "config.json", record)
    return finished and not grows, stored


# -- stage 1: the prior --------------------------------------------------------------------------------
def prior_record(workload: Workload, config: Config) -> dict[str, Any]:
    """The resolved settings of a workload's prior, as written to ``prior/config.json``."""
    return {"workload": workload.name, "profile": config.profile, "seed": config.seed,
            "prior": asdict(config.prior.resolved())}


def stage_prior(workload: Workload, config: Config, out: Path, *, device: torch.device, progress: bool,
                folder: Path | None = None, tensorboard: bool = False) -> DiffusionPrior:
    """Train (or resume, or load) the workload's diffusion prior in ``folder`` (default ``out/prior``).

    ``manifold-ps train-prior`` runs this stage too (with ``folder`` its ``--out``).
    """
    folder = out / "prior" if folder is None else folder
    done = folder / "prior.pt"
    record = prior_record(workload, config)
    load, stored = _resume_or_load(folder, done, record, {"prior": asdict(config.prior)}, "prior",
                                   config.prior.stop_step)
    if load:
        _log(f"prior: loading {done}")
        prior = DiffusionPrior.load(done, geometry=workload.geometry, map_location=device)
        if stored is None:  # written before config.json existed: check what the file itself says
            network = {"mlp": "MLPDenoiser", "unet": "UNet1d", "graph": "GraphDenoiser"}[config.prior.network]
            found = (type(prior.network).__name__, prior.parameterization)
            if found != (network, config.prior.parameterization):
                raise ValueError(
                    f"{done} holds a {found[0]} prior with {found[1]!r} parameterisation, but the configuration "
                    f"asks for {network} with {config.prior.parameterization!r}; delete {folder} to retrain "
                    "or pass another --out")
        return prior
    torch.manual_seed(config.seed)
    # An MLP narrower than the signal cannot pass the identity through with eps-prediction; the
    # EDM skip connection of DiffusionPrior does that, so the preset width (2048) also serves the
    # 4140-vertex sphere.
    gaussian = mixture = None
    if config.prior.parameterization in ("wiener", "mixture"):  # an exact denoiser plus a learned correction
        gaussian = stage_gaussian(workload, config, out, device=torch.device("cpu"))
    if config.prior.parameterization == "mixture":  # its skip, saved in the prior's file (seeded: a resumed run refits the same)
        mixture = fit_mixture(workload.prior_train, config)
    prior = build_prior(workload.geometry, channels=workload.channels, gaussian=gaussian, mixture=mixture,
                        **config.prior.network_kwargs())
    _log(f"prior: training {sum(p.numel() for p in prior.parameters()) / 1e6:.1f}M parameters on "
         f"{workload.prior_train.shape[0]} signals for {config.prior.train_steps} steps"
         + (f" (stopping at {config.prior.stop_step})" if config.prior.stop_step else "")
         + (f" (cap {config.prior.minutes:g} min)" if config.prior.minutes else ""))
    tic = time.perf_counter()
    trained = train_prior(prior, workload.prior_train, out_dir=folder, seed=config.seed, device=device,
                          progress=progress, tensorboard=tensorboard, callback=_deadline_callback(config.prior.minutes),
                          config={"run": record}, **config.prior.trainer_kwargs())
    seconds = time.perf_counter() - tic
    # where the cap or stop_step stopped it
    steps = int(load_checkpoint(folder / "checkpoint.pt", map_location="cpu")["step"])
    (folder / "complete").write_text(json.dumps({"seconds_last_invocation": seconds, "steps": steps}))
    return trained.to(device).eval()


# -- stage 2: measurements -----------------------------------------------------------------------------
@dataclass
class Measured:
    """Clean signals, their measurements and operator (one evaluation or training set).

    ``groups`` gives the field index of each measurement when several share one field.
    """

    x: Tensor
    y: Tensor
    operator: Operator
    groups: Tensor | None = None

    def subset(self, index: Tensor) -> Measured:
        """The measurements at ``index`` (a 1-D CPU index)."""
        groups = None if self.groups is None else self.groups[index]
        return Measured(self.x[index], self.y[index], self.operator.select(index), groups)


def _simulate(task: Task, x: Tensor, generator: torch.Generator) -> Measured:
    op = task.make_operator(x.shape[0], generator)
    return Measured(x, op(x, generator=generator), op)


def stage_measurements(workload: Workload, task: Task, config: Config, out: Path, *, folder: Path | None = None
                       ) -> tuple[Measured, dict[str, Measured]]:
    """Simulate (once, seeded with ``config.seed``) or load the task's training and evaluation
    measurements in ``folder/measurements.pt`` (default ``out/<task>``; ``manifold-ps train-flow
    --workload`` passes its ``--out``).

    Returns:
        ``(train, evals)`` where ``evals`` maps ``"paper"`` (the first ``eval.n_eval`` training
        measurements: the flow is evaluated on what it trained on) and each eval set's name.
    """
    path = (out / task.name if folder is None else folder) / "measurements.pt"
    if path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("fingerprint") != workload.geometry.fingerprint():
            raise ValueError(f"{path} was made for another geometry; delete it or use another --out")
        sets = {k: Measured(v["x"], v["y"], operator_from_config(v["operator"])) for k, v in blob["sets"].items()}
        # the stored measurements must be of the signals this configuration asks for (e.g. another
        # eval.n_eval or train_size selects others): refuse rather than score the wrong ones
        wanted = {"train": workload.flow_train, **{ev.name: ev.x for ev in workload.eval_sets}}
        for name, x in wanted.items():
            have = sets.get(name)
            if have is None or have.x.shape != x.shape or not torch.equal(have.x, x.to(have.x.dtype)):
                found = "none" if have is None else f"{have.x.shape[0]} other signals"
                raise ValueError(f"{path} holds measurements of other signals for the set {name!r} ({found}; the "
                                 f"configuration asks for {x.shape[0]}): delete it to simulate them again, or use "
                                 "another --out")
    else:
        g = torch.Generator().manual_seed(config.seed)
        sets = {"train": _simulate(task, workload.flow_train, g)}
        for ev in workload.eval_sets:
            sets[ev.name] = _simulate(task, ev.x, g)
        blob = {"seed": config.seed, "fingerprint": workload.geometry.fingerprint(),
                "sets": {k: {"x": m.x, "y": m.y, "operator": m.operator.config()} for k, m in sets.items()}}
        with atomic_open(path) as fh:
            torch.save(blob, fh)
    train = sets.pop("train")
    for ev in workload.eval_sets:
        if ev.name in sets:
            sets[ev.name].groups = ev.groups
    n = min(config.eval.n_eval, train.x.shape[0])
    evals = {"paper": train.subset(torch.arange(n))}
    evals.update(sets)
    return train, evals


def validation_measurements(train: Measured, config: Config) -> Measured:
    """The flow-training measurements ``n_eval .. n_eval + tune_measurements``: never evaluated."""
    start = min(config.eval.n_eval, train.x.shape[0])
    stop = min(start + config.eval.tune_measurements, train.x.shape[0])
    return train.subset(torch.arange(start, stop))


def validation_description(workload: Workload, config: Config, val: Measured) -> str:
    """How the validation measurements ``val`` (:func:`validation_measurements`) are named where a
    tuning is stored (``tuning.json``'s request compares it, so every caller must name them so)."""
    return (f"flow-training measurements {config.eval.n_eval}-{config.eval.n_eval + val.x.shape[0] - 1} "
            f"({workload.flow_dataset}; disjoint from every evaluation set)")


# -- stage 3: the amortized flow ------------------------------------------------------------------------
_FLOW_ADDED = {"decode": False, "decoder_noise": False, "base": "fill", "base_rank": 256,
               "base_precision": "float64", "likelihood": "denoised"}
"""Flow settings added after runs were stored (with their defaults): recorded only when they
differ from the default, so that a stored run of the default method stays resumable."""


def flow_record(workload: Workload, task: Task, config: Config) -> dict[str, Any]:
    """The resolved settings of a task's flow, as written to ``<task>/config.json``."""
    flow = asdict(config.flow.resolved())
    if not config.flow.decode:
        flow = {k: v for k, v in flow.items() if k not in _FLOW_ADDED or v != _FLOW_ADDED[k]}
    return {"workload": workload.name, "task": task.name, "measurements": dict(task.description),
            "profile": config.profile, "seed": config.seed, "flow": flow}


def gaussian_base(gaussian: GaussianPrior, flow: FlowConfig) -> GaussianBase:
    """The flow's Gaussian base as ``flow`` sets it: the ``flow.base_rank`` leading directions of
    ``gaussian``, at ``flow.t_min``, marginal for ``flow.likelihood = "marginal"``, in
    ``flow.base_precision``."""
    base = GaussianBase(truncate_gaussian(gaussian, flow.base_rank), flow.t_min,
                        marginal=flow.likelihood == "marginal")
    return base.to(getattr(torch, flow.base_precision))


def mixture_base(mixture: GaussianMixture, flow: FlowConfig) -> MixtureBase:
    """The flow's mixture source as ``flow`` sets it: the posterior over ``u`` of ``mixture`` with
    ``flow.base_rank`` directions per component, at ``flow.t_min``, marginal for
    ``flow.likelihood = "marginal"``, in ``flow.base_precision``."""
    source = MixtureBase(mixture, flow.t_min, marginal=flow.likelihood == "marginal", rank=flow.base_rank)
    return source.to(getattr(torch, flow.base_precision))


def _new_posterior(workload: Workload, task: Task, config: Config, prior: DiffusionPrior, train: Measured,
                   record: dict[str, Any], gaussian: GaussianPrior | None = None) -> AmortizedPosterior:
    reconstruct: Any = None
    base = source = None
    if config.flow.base in ("gaussian", "mixture"):  # the posterior's mean takes the reconstruction's place
        if gaussian is None:
            raise ValueError(f"flow.base={config.flow.base!r} needs the workload's fitted Gaussian")
        base = gaussian_base(gaussian, config.flow)
        if config.flow.base == "mixture":
            if prior.mixture is None:
                raise ValueError("flow.base='mixture' starts from the prior's Gaussian mixture: this prior has none")
            source = mixture_base(prior.mixture, config.flow)
    elif task.reconstruct == "harmonic":
        reconstruct = HarmonicFill.from_geometry(workload.geometry)
    elif task.reconstruct == "adjoint":
        reconstruct = AdjointFill()
    _, evecs = workload.geometry.eigenbasis(config.flow.geometry_features + 1)
    cond = condition_channels(workload.channels, train.operator, condition=task.condition,
                              reconstruct=reconstruct is not None or base is not None)
    flow = ConditionalRealNVP(workload.channels, prior.layout, cond, **config.flow.network_kwargs(),
                              geometry_features=evecs[:, 1:].to(torch.get_default_dtype()), seed=config.seed)
    op_cfg = {k: v for k, v in train.operator.config().items() if k != "mask"}
    posterior = AmortizedPosterior(flow, condition=task.condition, reconstruct=reconstruct,
                                   operator_config={**op_cfg, **task.description},
                                   normalisation=workload.normalisation, fingerprint=workload.geometry.fingerprint(),
                                   metadata={"workload": workload.name, "task": task.name, "profile": config.profile,
                                             "config": record},
                                   base=base, decode=config.flow.t_min if config.flow.decode else None,
                                   decoder_noise=config.flow.decoder_noise, likelihood=config.flow.likelihood,
                                   source=source)
    return posterior.attach_prior(prior) if config.flow.decode else posterior


def check_flow_base(workload: Workload, task: Task, config: Config, prior: DiffusionPrior, train: Measured) -> None:
    """Refuse a flow base that cannot be built, before anything of the run is written.

    Raises:
        ValueError: ``flow.base = "gaussian"`` (or ``"mixture"``) with a non-linear operator, or a
            linear one other than masking or denoising on more than ``DENSE_LIMIT`` signal entries
            (its Gaussian posterior is then factorised densely), or with a prior without a
            Gaussian part and no clean signals to fit one (a user's flow on measurements only);
            ``flow.base = "mixture"`` with a prior without a Gaussian mixture.
    """
    if config.flow.base == "fill":
        return
    if config.flow.base == "mixture" and getattr(prior, "mixture", None) is None:
        raise ValueError(f"flow.base='mixture' starts from the exact posterior of the prior's Gaussian mixture, but "
                         f"this prior ({prior.parameterization!r}) has none: train it with "
                         "prior.parameterization='mixture' or set flow.base='gaussian'")
    op, d = train.operator, math.prod(workload.prior_train.shape[1:])
    dense = isinstance(op, LinearOperator) and not isinstance(op, (Inpainting, Denoising))
    if not isinstance(op, LinearOperator) or (dense and d > DENSE_LIMIT):
        why = "a non-linear" if not isinstance(op, LinearOperator) else f"a dense ({d} x {d})"
        raise ValueError(f"flow.base={config.flow.base!r} is the closed-form Gaussian posterior of a linear operator; the "
                         f"{task.name!r} measurements have {why} {type(op).__name__} posterior (at most "
                         f"DENSE_LIMIT = {DENSE_LIMIT} entries): set flow.base='fill' (the reconstruction base; "
                         "flow.decode may stay)")
    if prior.gaussian is None and workload.prior_train.shape[0] < 2:
        raise ValueError(f"flow.base={config.flow.base!r} starts from the prior's Gaussian, but this prior "
                         f"({prior.parameterization!r}) has none: train it with prior.parameterization='wiener' "
                         "or set flow.base='fill'")


def new_flow(workload: Workload, task: Task, config: Config, prior: DiffusionPrior, train: Measured, out: Path, *,
             device: torch.device) -> AmortizedPosterior:
    """The task's sampler before its first training step, as :func:`stage_flow` starts from it.

    With ``flow.base = "gaussian"`` it draws the exact Gaussian posterior over ``u = x_{t_min}``
    (with ``"mixture"`` the exact posterior of the prior's Gaussian mixture)
    decoded by ``prior``: the couplings start at the identity and the ActNorm layers are only
    initialised by training. The Gaussian is the prior's own (a ``"wiener"`` prior carries it in
    its file, so no clean signal is touched here); for another prior it is the Gaussian of
    ``out/gaussian``, fitted to the workload's prior-training signals if missing.
    The initial weights come from the global generator, seeded here with ``config.seed`` (as
    :func:`stage_prior` does for the prior's), so the same flow comes out whatever ran before.

    Raises:
        ValueError: ``flow.base = "gaussian"`` with a prior without a Gaussian part and no clean
            signals to fit one (e.g. a user's flow on measurements only).
    """
    check_flow_base(workload, task, config, prior, train)
    gaussian = None
    if config.flow.base in ("gaussian", "mixture"):
        gaussian = prior.gaussian if prior.gaussian is not None else stage_gaussian(workload, config, out, device=device)
    torch.manual_seed(config.seed)
    record = flow_record(workload, task, config)
    return _new_posterior(workload, task, config, prior, train, record, gaussian).to(device)


def stage_flow(workload: Workload, task: Task, config: Config, prior: DiffusionPrior, train: Measured, out: Path,
               *, device: torch.device, progress: bool,
               observer: Callable[[Any, int, dict[str, float]], float | None] | None = None,
               folder: Path | None = None) -> AmortizedPosterior:
    """Distil the prior into the task's amortized flow (or resume / load it) in ``folder``
    (default ``out/<task>``).

    ``observer(trainer, step, logs)`` is called after every step (e.g. to score the flow during
    training); the seconds it returns are not counted against ``config.flow.minutes``.
    ``manifold-ps train-flow`` runs this stage too (with ``folder`` its ``--out``).
    """
    folder = out / task.name if folder is None else folder
    done = folder / "posterior.pt"
    check_flow_base(workload, task, config, prior, train)
    record = flow_record(workload, task, config)
    index = next((i for i, t in enumerate(workload.tasks) if t is task), None)
    stop_step = config.flow.stop_step_of(index, len(workload.tasks))
    load, stored = _resume_or_load(folder, done, record, {"flow": asdict(config.flow)}, "flow", stop_step)
    if load:
        _log(f"{task.name}: loading {done}")
        posterior = AmortizedPosterior.load(done, fingerprint=workload.geometry.fingerprint())
        legacy = posterior.metadata.get("flow_settings")
        if stored is None and legacy is not None:  # written before config.json existed
            had = legacy_flow_settings(legacy)
            check_same_run(had, {"flow": {k: record["flow"][k] for k in had["flow"]}}, folder)
        if posterior.decode is not None:
            posterior.attach_prior(prior)
        return posterior.to(device).eval()
    posterior = new_flow(workload, task, config, prior, train, out, device=device)
    data = prepare_data(posterior, train.y.to(device), train.operator.to(device))
    flow = config.flow
    _log(f"{task.name}: distilling into a {flow.layers}-layer flow "
         f"({sum(p.numel() for p in posterior.parameters()) / 1e6:.2f}M parameters) on {train.y.shape[0]} measurements "
         f"for {flow.train_steps} steps" + (f" (stopping at {stop_step})" if stop_step else "")
         + (f" (cap {flow.minutes:.3g} min)" if flow.minutes else ""))
    tic = time.perf_counter()
    trainer = train_amortized(
        posterior, prior, train.y, train.operator, out_dir=folder, data=data, seed=config.seed, progress=progress,
        device=device, config={"run": record}, callback=_deadline_callback(flow.minutes, observer),
        **flow.trainer_kwargs(train.y.shape[0], task=index, tasks=len(workload.tasks)),
    )
    final = trainer.ema_model.eval()
    final.metadata["train_steps"] = trainer.step
    final.save(done)
    (folder / "complete").write_text(json.dumps({"seconds_last_invocation": time.perf_counter() - tic,
                                                 "steps": trainer.step, "skipped": trainer.skipped_steps}))
    trainer.close()
    return final.to(device)


# -- stage 4: evaluation ---------------------------------------------------------------------------------
EVALUATION_VERSION = 1
"""Bumped when a stored ``<task>/evaluation/<set>.json`` no longer means what a new evaluation would."""


def _data_digest(m: Measured) -> str:
    """A short hash of an evaluation set: its signals, measurements, operator and fields."""
    import hashlib

    h = hashlib.sha256()
    for t in (m.x, m.y, m.groups, *m.operator.state_dict().values()):
        if t is not None:
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def evaluation_request(config: Config, set_name: str, m: Measured, posterior: torch.nn.Module,
                       baselines: dict[str, PosteriorSampler], tuned: dict[str, Any], *, slow: bool,
                       prior: torch.nn.Module, gaussian: torch.nn.Module | None) -> dict[str, Any]:
    """What an evaluation of one set depends on, as stored beside its scores: the set's data, the
    evaluation settings and seed, the sampler's, the prior's and the Gaussian's weights (by their
    state digests), the baselines and their validation-tuned settings.

    Returns:
        A JSON-normalised dictionary (tuples as lists).
    """
    chosen = {k: v.get("chosen") for k, v in tuned.items() if isinstance(v, dict) and "chosen" in v}
    request = {"version": EVALUATION_VERSION, "set": set_name, "measurements": int(m.x.shape[0]),
               "data": _data_digest(m), "eval": asdict(config.eval), "seed": config.seed,
               "sampler": state_digest(posterior), "prior": state_digest(prior),
               "gaussian": None if gaussian is None else state_digest(gaussian),
               "baselines": sorted(baselines), "iterative_baselines": slow, "tuned": chosen}
    return json.loads(json.dumps(request))


def load_evaluation(path: Path, request: dict[str, Any]) -> tuple[dict[str, MethodResult], float] | None:
    """The stored scores of an evaluation set, if ``path`` holds them for exactly ``request``.

    A stored evaluation made for anything else (another sampler, prior, setting or data) is not
    reused: the set is evaluated again (and its file replaced), and the log names what differs.

    Returns:
        ``(methods, seconds the evaluation took)``, or ``None``.
    """
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        stored = doc["request"]
        methods = {name: _method_from_dict(entry) for name, entry in doc["methods"].items()}
        seconds = float(doc["seconds"])
    except (ValueError, KeyError, TypeError) as err:
        _log(f"  {path} is unreadable ({err}): evaluating again")
        return None
    if stored != request:
        diff = [k for k in sorted(set(stored) | set(request)) if stored.get(k) != request.get(k)]
        _log(f"  {path} was evaluated for other {', '.join(diff)}: evaluating again")
        return None
    return methods, seconds


def save_evaluation(path: Path, request: dict[str, Any], methods: dict[str, MethodResult], seconds: float) -> None:
    """Store an evaluation set's scores (with each measurement's PSNR) for :func:`load_evaluation`."""
    doc = {"request": request, "seconds": seconds,
           "methods": {name: {**r.to_dict(), **({"per_measurement": r.per_measurement.tolist()}
                                                if r.per_measurement is not None else {})}
                       for name, r in methods.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w") as fh:
        fh.write(json.dumps(doc, indent=1))


def _method_from_dict(entry: dict[str, Any]) -> MethodResult:
    rest = dict(entry)
    fixed = {k: rest.pop(k) for k in ("psnr", "ssim", "mse", "seconds_per_sample", "nfe")}
    per = rest.pop("per_measurement", None)
    return MethodResult(**fixed, extra=rest, per_measurement=None if per is None else torch.tensor(per))


def score_arguments(workload: Workload, m: Measured, operator: Operator | None = None) -> dict[str, Any]:
    """The keywords of :func:`score_posterior` / :func:`score_gaussian` / ``score_estimate`` with
    which the benchmark scores every method on the measurements ``m``: the grid shape, the
    guaranteed data range, the field of each measurement, and the observed vertices of a mask.

    Args:
        workload: The workload.
        m: The evaluated measurements.
        operator: ``m.operator`` moved to the scoring device (default: ``m.operator``).
    """
    op = m.operator if operator is None else operator
    return {"image_shape": workload.image_shape, "data_range": workload.data_range, "groups": m.groups,
            "observed": op.mask.expand(m.x.shape[0], -1) if isinstance(op, Inpainting) else None}


def _evaluate_set(workload: Workload, config: Config, posterior: AmortizedPosterior,
                  baselines: dict[str, PosteriorSampler], m: Measured, *, device: torch.device, slow: bool,
                  figures: Path | None) -> dict[str, MethodResult]:
    g = torch.Generator(device).manual_seed(config.seed + config.eval.seed_offset)
    x, y, op = m.x.to(device), m.y.to(device), m.operator.to(device)
    results: dict[str, MethodResult] = {}
    outputs: dict[str, Any] = {}
    score = score_arguments(workload, m, op)

    flow_scores, outputs["aps"] = score_posterior(posterior, x, y, op, n_posterior=config.eval.n_posterior,
                                                  batch_size=config.eval.batch_size, chunk=config.eval.chunk,
                                                  generator=g, **score)
    results.update(flow_scores)
    n_base = x.shape[0] if config.eval.baseline_eval is None else min(config.eval.baseline_eval, x.shape[0])
    for name, sampler in baselines.items():
        if name in SLOW_BASELINES and not slow:
            continue
        if name in CLOSED_FORM:
            scores, outputs[name] = score_gaussian(sampler, x, y, op, n_posterior=config.eval.n_posterior,
                                                   batch_size=config.eval.batch_size, generator=g, name=name,
                                                   **score)
            results.update(scores)
            continue
        n = n_base if name in SLOW_BASELINES else x.shape[0]
        sub = torch.arange(n, device=device)
        _log(f"  {name} on {n} measurements")
        out = run_sampler(sampler, y[sub], op.select(sub.cpu()), n=1, batch_size=config.eval.batch_size, generator=g)
        sub_score = dict(score, groups=None if m.groups is None else m.groups[:n],
                         observed=None if score["observed"] is None else score["observed"][:n])
        results[name] = score_estimate(out.first, x[sub], seconds_per_sample=out.seconds_per_sample, nfe=out.nfe,
                                       **sub_score)
        outputs[name] = out
    add_paired_differences(results, groups=m.groups)
    if figures is not None:
        _figures(workload, m, outputs, figures)
    return results


CLOSED_FORM = ("gaussian", "mixture")
"""Baselines with a closed-form posterior (:func:`score_gaussian` scores their draws and exact mean)."""


def score_gaussian(sampler: GaussianPosterior | MixturePosterior, x: Tensor, y: Tensor, operator: Operator, *,
                   n_posterior: int, batch_size: int, generator: torch.Generator, name: str = "gaussian",
                   image_shape: tuple[int, int] | None = None, data_range: tuple[float, float] | None = None,
                   groups: Tensor | None = None, observed: Tensor | None = None
                   ) -> tuple[dict[str, MethodResult], SamplerOutput]:
    """Score an exact closed-form posterior as the benchmarks report it: ``"<name>_draw"`` (one
    exact draw per measurement) and ``"<name>_mean"`` (the closed-form mean, with the exact std;
    its calibration curve from ``n_posterior`` draws, like every sampler's, and, for the Gaussian,
    from the exact normal intervals of the closed-form mean and std, ``coverage<P>_exact``).

    Args:
        sampler: The Gaussian posterior (``name = "gaussian"``) or a mixture's (``"mixture"``).
        x, y, operator: Clean signals ``(B, C, V)``, their measurements and operator.
        n_posterior: Draws for the calibration curve (the first is the one-draw estimate).
        batch_size: Measurements per call.
        generator: Seeds the draws.
        image_shape, data_range, groups, observed: As for :func:`score_posterior`.

    Returns:
        ``({"<name>_draw": ..., "<name>_mean": ...}, output of the draws with the exact mean and std)``.
    """
    _log(f"  {name} posterior on {x.shape[0]} measurements")
    score = dict(image_shape=image_shape, data_range=data_range, groups=groups, observed=observed)
    many = run_sampler(sampler, y, operator, n=n_posterior, batch_size=batch_size, keep=n_posterior,
                       generator=generator)
    means, stds, seconds = [], [], 0.0
    for start in range(0, y.shape[0], batch_size):
        idx = torch.arange(start, min(start + batch_size, y.shape[0]))
        mean, std = sampler.posterior_mean_std(y[idx.to(y.device)], operator.select(idx))
        means.append(mean)
        stds.append(std)
        seconds += sampler.last_seconds
    many.mean, many.std = torch.cat(means), torch.cat(stds)
    scores = {
        f"{name}_draw": score_estimate(many.first, x, seconds_per_sample=many.seconds_per_sample, nfe=0, **score),
        f"{name}_mean": score_estimate(many.mean, x, seconds_per_sample=seconds / y.shape[0], nfe=0,
                                       samples=many.kept, std=many.std,
                                       exact_normal=name == "gaussian", **score),
    }
    return scores, many


TIMING_REPEATS = 5
"""Passes of one draw per measurement whose median time :func:`score_posterior` reports for N = 1."""


def score_posterior(posterior: PosteriorSampler, x: Tensor, y: Tensor, operator: Operator, *, n_posterior: int,
                    batch_size: int, generator: torch.Generator, chunk: int | None = EvalConfig.chunk,
                    image_shape: tuple[int, int] | None = None, data_range: tuple[float, float] | None = None,
                    groups: Tensor | None = None, observed: Tensor | None = None
                    ) -> tuple[dict[str, MethodResult], SamplerOutput]:
    """Score the amortized sampler as the benchmarks report it: ``"aps_n1"`` (one draw per
    measurement) and ``"aps_n128"`` (the mean of ``n_posterior`` draws, with the calibration
    curve of their central intervals).

    The draws are those of :func:`manifold_ps.api.sample_posterior` (and ``manifold-ps sample``)
    with the same generator, ``n``, ``batch_size`` and ``chunk``: the N = 1 estimate is the first
    of them. Further passes of one draw per measurement, after them, time the N = 1 cost (the median
    of :data:`TIMING_REPEATS` passes).

    Args:
        posterior: The one-step sampler.
        x: Clean signals ``(B, C, V)``.
        y: Their measurements through ``operator``.
        operator: The forward operator.
        n_posterior: Draws averaged for the posterior mean (128 except in smoke runs).
        batch_size: Measurements per sampler call.
        generator: Seeds the draws.
        chunk: Draws per sampler call (``None``: all ``n_posterior`` at once).
        image_shape: ``(H, W)`` on grid data (SSIM is then reported).
        data_range: Guaranteed range of the signals (estimates are projected onto it), or ``None``.
        groups: Field index per measurement when several share one field.
        observed: Observed vertices ``(B, V)`` (coverage and std over the missing ones too).

    Returns:
        ``({"aps_n1": ..., "aps_n128": ...}, output of the ``n_posterior`` draws)``.
    """
    many = run_sampler(posterior, y, operator, n=n_posterior, batch_size=batch_size, chunk=chunk, keep=n_posterior,
                       generator=generator)
    # N = 1, timing only: a pass takes about a second, so its time is the median of TIMING_REPEATS
    # passes (their range is recorded); the repeats draw from their own generator, so that
    # `generator` advances as by one pass
    spare = torch.Generator(device=generator.device).manual_seed(0)
    times = [run_sampler(posterior, y, operator, n=1, batch_size=batch_size, generator=g).seconds_per_sample
             for g in [generator] + [spare] * (TIMING_REPEATS - 1)]
    score = dict(image_shape=image_shape, data_range=data_range, groups=groups, observed=observed)
    timing = {"timing_repeats": float(TIMING_REPEATS), "seconds_per_sample_min": min(times),
              "seconds_per_sample_max": max(times)}
    scores = {
        # the flow, plus the prior's denoiser for a decoded sampler (as the sampler reports it)
        "aps_n1": score_estimate(many.first, x, seconds_per_sample=statistics.median(times), nfe=many.nfe,
                                 extra=timing, **score),
        "aps_n128": score_estimate(many.mean, x, seconds_per_sample=many.seconds_per_sample, nfe=many.nfe,
                                   samples=many.kept, std=many.std,
                                   extra={"seconds_per_estimate": many.seconds_per_sample * n_posterior}, **score),
    }
    return scores, many


def _figures(workload: Workload, m: Measured, outputs: dict[str, Any], folder: Path) -> None:
    from ..viz import posterior_row_figure

    folder.mkdir(parents=True, exist_ok=True)
    geo = workload.geometry
    kw: dict[str, Any] = {"kind": workload.kind}
    if workload.kind == "mesh":
        kw.update(vertices=geo.positions.numpy(), faces=geo.faces.numpy())
    elif workload.kind == "sphere":
        kw.update(latitudes=geo.latitudes, longitudes=geo.longitudes)
    else:
        kw.update(image_shape=workload.image_shape)
    y0 = m.y[:1]
    measured = m.operator.select(torch.arange(1)).measured(y0)
    observed = measured.expand_as(y0)[0, 0].cpu() if measured.ndim else None
    # a measurement that is not vertex-shaped (a downsampled image) is shown as the operator's
    # vertex-shaped condition of it (there: nearest upsampling)
    one = m.operator.select(torch.arange(1))
    meas_vertex = (y0 if y0.shape[-1] == geo.num_vertices else one.condition(y0))[0, 0].cpu()
    for name, out in outputs.items():
        fig = posterior_row_figure(
            m.x[0, 0].cpu(), meas_vertex,
            out.kept[0, :, 0].cpu(), out.mean[0, 0].cpu(), out.std[0, 0].cpu(), observed=observed, title=name, **kw)
        fig.savefig(folder / f"{name}.png", dpi=80)


CALIBRATION_FIGURE = "calibration.png"
"""File name of a task's calibration plot, in ``figures/<task>/`` of the run folder."""


def _calibration_plot(title: str, sets: dict[str, dict[str, MethodResult]], path: Path) -> None:
    """Nominal vs empirical coverage of every method with draws: one column per evaluation set,
    over all vertices and (where a mask hides some) over the missing ones."""
    from ..viz import calibration_figure

    over_all = {f"{name}: all vertices": calibration_curves(methods) for name, methods in sets.items()}
    over_missing = {f"{name}: missing vertices": calibration_curves(methods, missing=True)
                    for name, methods in sets.items()}
    panels = {**over_all, **over_missing} if any(over_missing.values()) else over_all
    if not any(panels.values()):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    calibration_figure(panels, ncols=len(sets), title=title).savefig(path, dpi=80)


def run_workload(workload: Workload, config: Config, out: str | Path, *, device: str | torch.device | None = None,
                 progress: bool = True, figures: bool = True, command: Sequence[str] | None = None) -> dict[str, Any]:
    """Run every stage of a workload and write ``results.json`` / ``results.md`` (and the resolved
    configuration, ``config.json``) into ``out``.

    ``results.json`` records under ``config.training`` the steps each training stage did and the
    settings (and, given ``command``, the command line) that repeat the run exactly
    (:func:`training_record`).

    Args:
        workload: The workload.
        config: The run's configuration.
        out: The run folder (a rerun resumes or loads every stage).
        device: Device (``None``: CUDA when available).
        progress: Progress bars.
        figures: Write figures.
        command: The command line that ran this configuration, without ``--out`` (for the record).

    Returns:
        The written results document.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tic = time.perf_counter()
    stages: dict[str, float] = {}
    loaded: list[str] = []

    def timed_stage(name: str, fn: Callable[[], Any], marker: Path | None = None,
                    recorded: Callable[[Any], float | None] | None = None) -> Any:
        """Run a stage; one whose ``marker`` file existed before (done by an earlier invocation)
        counts the seconds it took then (``recorded(result)``), not the time it took to load."""
        done_before = marker is not None and marker.is_file()
        start = time.perf_counter()
        result = fn()
        stages[name] = time.perf_counter() - start
        before = recorded(result) if done_before and recorded is not None else None
        if before is not None:
            _log(f"stage {name}: loaded in {stages[name]:.0f} s (it took {before:.0f} s when it ran)")
            stages[name] = before
            loaded.append(name)
        else:
            _log(f"stage {name}: {stages[name]:.0f} s")
        return result

    gaussian = None
    if any("gaussian" in t.baselines for t in workload.tasks) or config.prior.parameterization in ("wiener", "mixture"):
        gaussian = timed_stage("gaussian", lambda: stage_gaussian(workload, config, out, device=dev),
                               out / "gaussian" / "gaussian.pt", lambda g: g.fit_info.get("seconds"))
    prior = timed_stage("prior", lambda: stage_prior(workload, config, out, device=dev, progress=progress),
                        out / "prior" / "complete", lambda _: _recorded_seconds(out / "prior" / "complete"))
    evaluations: list[BenchmarkResults] = []
    resolved = config.resolved().to_dict()
    set_info = {ev.name: ev for ev in workload.eval_sets}
    shares = sum(t.flow_share for t in workload.tasks)
    for task in workload.tasks:
        train, evals = stage_measurements(workload, task, config, out)
        minutes = config.flow.minutes
        task_config = replace(config, flow=replace(config.flow, **task.flow_overrides))
        if minutes is not None:
            task_config = replace(task_config, flow=replace(task_config.flow, minutes=minutes * task.flow_share / shares))
        posterior = timed_stage(f"{task.name}/flow", lambda: stage_flow(
            workload, task, task_config, prior, train, out, device=dev, progress=progress),
            out / task.name / "complete", lambda _: _recorded_seconds(out / task.name / "complete"))
        val = validation_measurements(train, config)
        validation = validation_description(workload, config, val)
        tuned: dict[str, Any] = {}
        if config.eval.tune_measurements > 0 and val.x.shape[0] > 0:
            tuned = timed_stage(f"{task.name}/tuning", lambda: stage_tuning(
                workload, task, config, prior, val.x.to(dev), val.y.to(dev), val.operator.to(dev), out,
                validation=validation), out / task.name / "tuning.json", lambda doc: doc.get("seconds"))
        baselines = build_baselines(workload, task, config, prior, tuned, gaussian)
        task_methods: dict[str, dict[str, MethodResult]] = {}
        for set_name, m in evals.items():
            _log(f"{task.name}: evaluating on '{set_name}' ({m.x.shape[0]} measurements)")
            # the iterative baselines never see measurements while training: the paper protocol
            # (the flow's own training measurements) tells nothing new about them
            slow = set_name != "paper"
            stage = f"{task.name}/evaluate {set_name}"
            record = out / task.name / "evaluation" / f"{set_name}.json"
            request = evaluation_request(config, set_name, m, posterior, baselines, tuned, slow=slow, prior=prior,
                                         gaussian=gaussian)
            stored = load_evaluation(record, request)
            if stored is not None:  # scored before (a rerun, or a run stopped in a later set)
                methods, stages[stage] = stored
                loaded.append(stage)
                _log(f"{task.name}: scores on '{set_name}' from {record} (evaluated in {stages[stage]:.0f} s)")
            else:
                methods = timed_stage(stage, lambda: _evaluate_set(
                    workload, config, posterior, baselines, m, device=dev, slow=slow,
                    figures=(out / "figures" / task.name / set_name) if figures else None))
                save_evaluation(record, request, methods, stages[stage])
            task_methods[set_name] = methods
            ev = set_info.get(set_name)
            protocol = {
                "task": task.name, **task.description,
                "evaluation": "paper (flow trained on these measurements)" if set_name == "paper" else set_name,
                "dataset": workload.flow_dataset if ev is None else ev.dataset,
                "measurements": int(m.x.shape[0]), "n_posterior": config.eval.n_posterior,
                "blind": task.condition == "measurement",
                "scoring": ("estimates projected onto the guaranteed range "
                            f"{list(workload.data_range)}; raw PSNR beside it" if workload.data_range is not None
                            else "unprojected (the data range is only nominal)") + "; 95% bootstrap intervals"
                           + (" resampling fields (several masks per field)" if m.groups is not None else ""),
            }
            if m.groups is not None:
                protocol["fields"] = int(m.groups.unique().numel())
            if not slow:
                protocol["iterative_baselines"] = "evaluated on the held-out sets only"
            if config.eval.baseline_eval is not None and config.eval.baseline_eval < m.x.shape[0]:
                protocol["baseline_measurements"] = int(config.eval.baseline_eval)
            if ev is not None and ev.note:
                protocol["note"] = ev.note
            evaluations.append(BenchmarkResults(
                workload=workload.name, profile=config.profile, device=_device_name(dev), protocol=protocol,
                methods=methods, config={**resolved, "flow": asdict(task_config.flow.resolved()),  # this task's flow
                                         "notes": workload.notes, "tuning": tuned,
                                         "gaussian": None if gaussian is None else gaussian.fit_info},
                versions=environment_versions()))
        if figures:
            _calibration_plot(f"{workload.name}, {task.name} ({config.profile} profile)", task_methods,
                              out / "figures" / task.name / CALIBRATION_FIGURE)
    invocation = time.perf_counter() - tic
    total = sum(stages.values())  # every stage as long as it took when it ran, in this invocation or an earlier one
    tuning = sum(v for k, v in stages.items() if k.endswith("/tuning"))
    timings = {"stages_s": stages, "total_s": total, "tuning_s": tuning, "budgeted_s": total - tuning,
               "invocation_s": invocation, "loaded_stages": loaded}
    write_config(out / "config.json", {"workload": workload.name, **resolved})
    training = training_record(workload, config, out, command)
    for e in evaluations:
        e.config["timings"] = timings
        e.config["training"] = training
    doc = write_results(evaluations, out, title=f"{workload.name} ({config.profile} profile)")
    with open(out / "results.md", "a") as fh:
        if workload.notes:
            fh.write("\n" + "\n".join(f"> {n}" for n in workload.notes) + "\n")
        fh.write("\nWall time per stage: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in stages.items())
                 + f"; total {total / 60:.1f} min, {tuning / 60:.1f} of them validation tuning (outside the budget)."
                 + (f" {len(loaded)} of the {len(stages)} stages ran in earlier invocations of this run and count the "
                    f"time they took then; this invocation took {invocation / 60:.1f} min." if loaded else "") + "\n")
        stages_done = {"prior": training["prior"], **{f"{k} flow": v for k, v in training["flows"].items()}}
        fh.write("\nSteps trained: " + ", ".join(
            f"{k} {v['steps']} of {v['train_steps']} (stopped by {v['stopped_by']})" for k, v in stages_done.items()) + ".")
        repeat = training["reproduce"].get("command")
        fh.write(f" Repeat exactly: `{repeat}`\n" if repeat else "\n")
    _log(f"done in {invocation / 60:.1f} min (the run's stages: {total / 60:.1f} min, {(total - tuning) / 60:.1f} "
         f"without tuning); results in {out / 'results.md'}")
    print((out / "results.md").read_text())
    return doc


def _recorded_seconds(marker: Path) -> float | None:
    """The seconds a finished training stage's ``complete`` file records (``None`` if unreadable)."""
    try:
        return float(json.loads(marker.read_text())["seconds_last_invocation"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
