"""The typed run configuration: one frozen dataclass per stage and the named profiles.

Every setting of a run has one name, one default and one place here. A setting that used to be
derived inside the pipeline (warm-up length, EMA decay, checkpoint interval) is a field whose
default ``None`` means "derived from the step count"; :meth:`Config.resolved` fills in the
derived values, and it is the resolved configuration that is written beside every result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from ..flows.distill import T_MIN

__all__ = ["PriorConfig", "FlowConfig", "EvalConfig", "Config", "SECTIONS", "PROFILES", "get_profile"]


@dataclass(frozen=True)
class _Training:
    """The optimisation settings that the prior and the flow share (their defaults too).

    Attributes:
        lr: Peak learning rate.
        lr_schedule: ``"cosine"`` or ``"constant"`` after the warm-up.
        warmup_steps: Linear warm-up steps; ``None``: ``min(cap, train_steps // 10)`` with the
            cap 200 for the prior, 100 for the flow.
        ema_decay: EMA decay of the saved weights; ``None``: 0.999 from 1000 steps on, else 0.9.
        grad_clip: Gradient-norm clip (``None``: none).
        amp: Mixed precision on CUDA.
        train_size: Training signals (prior) or measurements (flow) used (``None``: the whole split).
        minutes: Wall-clock cap (``None``: none); the run stops at the cap with a checkpoint and
            its result, which a rerun loads. The flow's is for all flows of a workload together,
            split over its tasks by their ``flow_share``. The step it stopped at is recorded
            (``complete`` in the stage's folder, ``config.training`` in ``results.json``); a rerun
            with that ``stop_step`` and no cap repeats the run exactly.
        checkpoint_every: Steps between checkpoints; ``None``: ``min(cap, train_steps)`` with the
            cap 500 for the prior, 250 for the flow.
    """

    lr: float = 5e-4
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int | None = None
    ema_decay: float | None = None
    grad_clip: float | None = 1.0
    amp: bool = False
    train_size: int | None = None
    minutes: float | None = None
    checkpoint_every: int | None = None

    def _resolve(self, *, warmup_cap: int, checkpoint_cap: int, **derived: Any) -> Any:
        """A copy with the ``None`` schedule fields derived from ``train_steps`` (and ``derived``)."""
        steps = self.train_steps  # type: ignore[attr-defined]
        derived = {"warmup_steps": min(warmup_cap, steps // 10), "ema_decay": 0.999 if steps >= 1000 else 0.9,
                   "checkpoint_every": max(1, min(checkpoint_cap, steps)), **derived}
        return replace(self, **{k: v for k, v in derived.items() if getattr(self, k) is None})

    def _trainer_kwargs(self) -> dict[str, Any]:
        """The :class:`~manifold_ps.training.Trainer` keywords of the resolved settings."""
        r = self.resolved()  # type: ignore[attr-defined]
        return {"batch_size": r.batch_size, "lr": r.lr, "lr_schedule": r.lr_schedule, "warmup_steps": r.warmup_steps,
                "ema_decay": r.ema_decay, "grad_clip": r.grad_clip, "spike_guard": r.spike_guard, "amp": r.amp,
                "checkpoint_every": r.checkpoint_every, "log_every": r.log_every}


@dataclass(frozen=True)
class PriorConfig(_Training):
    """How the diffusion prior is built and trained (and the fields of :class:`_Training`).

    Attributes:
        network: ``"mlp"``, ``"unet"`` or ``"graph"`` (see :func:`manifold_ps.priors.build_prior`).
            The graph network's local filters learn the per-vertex non-linearity (e.g. a digit's
            flat background) that a Gaussian misses, in a few hundred steps; the whole-signal
            MLP did not learn it within a CPU budget (``benchmarks/results/prior_quality-*``).
        preset: Network size preset.
        parameterization: Denoiser parameterisation (see :class:`~manifold_ps.priors.DiffusionPrior`).
            ``"wiener"`` learns a correction to the exact denoiser of the Gaussian fitted to the
            training signals (with the ``eval.gaussian_*`` settings), so the untrained prior is
            that Gaussian; ``"x0"`` was the MLP's (it does not learn the eps-prediction regime of
            EDM's small noise levels on a CPU budget); ``"edm"`` is the paper profile's.
            ``"mixture"`` learns a correction to the exact denoiser of a Gaussian mixture fitted to
            the training signals (the ``mixture_*`` settings below, ridge and rank from
            ``eval.gaussian_*``), so the untrained prior is that mixture.
        mixture_components: Components ``K`` of the ``"mixture"`` skip (k-means clusters, seeded
            by ``seed``).
        mixture_covariance: ``"shared"`` (one pooled within-cluster covariance) or
            ``"per-component"`` (each cluster's covariance shrunk toward the pooled one); see
            :meth:`~manifold_ps.priors.GaussianMixture.fit`.
        mixture_shrinkage: Candidate weights of the pooled covariance in each component's
            (``"per-component"``), chosen by the likelihood of the held-out training signals.
        mixture_rank: Directions kept per component covariance (``None``: ``eval.gaussian_rank``);
            the mixture's share of the prior's file grows with components x rank x vertices.
        geometry_channels: Laplacian eigenvectors fed to the denoiser as extra input channels.
        train_steps: Optimizer steps (the length of the learning-rate schedule).
        stop_step: Stop after this many optimizer steps although the learning-rate schedule
            spans ``train_steps`` (``None``: at ``train_steps``): how a run that the ``minutes``
            cap stopped is repeated exactly. It only limits a run, as ``minutes`` does: a rerun
            into the same folder may change it (a larger one continues the run).
        batch_size: Global batch size.
        spike_guard: Skip a step whose loss exceeds this multiple of the running loss (``None``: never).
        log_every: Steps between logged losses.
        time_sampling: Distribution of the training times: ``"log_snr"`` (uniform in
            ``log(sigma / alpha)``, the ELBO's importance density), ``"uniform"`` (in ``t``) or
            ``"edm"`` (Karras et al.'s log-normal); see
            :meth:`~manifold_ps.priors.DiffusionPrior.sample_times`.
        loss_weighting: Per-time weight of the denoising error: ``"edm"`` (unit-scale targets at
            every noise level) or ``"elbo"`` (the likelihood weighting ``alpha^2 / sigma^2``,
            which makes the mean loss the ELBO's error integral; needs ``time_sampling="log_snr"``);
            the ``weighting`` of :meth:`~manifold_ps.priors.DiffusionPrior.dsm_loss`.
    """

    network: Literal["mlp", "unet", "graph"] = "graph"
    preset: Literal["tiny", "cpu", "paper"] = "cpu"
    parameterization: Literal["edm", "x0", "eps", "wiener", "mixture"] = "wiener"
    mixture_components: int = 12
    mixture_covariance: Literal["shared", "per-component"] = "per-component"
    mixture_shrinkage: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    mixture_rank: int | None = None
    geometry_channels: int = 0
    train_steps: int = 2400
    stop_step: int | None = None
    batch_size: int = 16
    spike_guard: float | None = None
    log_every: int = 50
    time_sampling: Literal["log_snr", "uniform", "edm"] = "log_snr"
    loss_weighting: Literal["edm", "elbo"] = "edm"

    def __post_init__(self) -> None:
        if self.stop_step is not None and self.stop_step < 1:
            raise ValueError(f"prior.stop_step must be >= 1 or none, got {self.stop_step}")
        if self.mixture_components < 1:
            raise ValueError(f"prior.mixture_components must be >= 1, got {self.mixture_components}")
        if self.mixture_covariance not in ("shared", "per-component"):
            raise ValueError(f"prior.mixture_covariance must be 'shared' or 'per-component', "
                             f"got {self.mixture_covariance!r}")
        if self.mixture_rank is not None and self.mixture_rank < 1:
            raise ValueError(f"prior.mixture_rank must be >= 1 or none, got {self.mixture_rank}")
        if not self.mixture_shrinkage or any(not 0.0 < s <= 1.0 for s in self.mixture_shrinkage):
            raise ValueError(f"prior.mixture_shrinkage must be weights in (0, 1], got {self.mixture_shrinkage}")
        if self.time_sampling not in ("log_snr", "uniform", "edm"):
            raise ValueError(f"prior.time_sampling must be 'log_snr', 'uniform' or 'edm', got {self.time_sampling!r}")
        if self.loss_weighting not in ("edm", "elbo"):
            raise ValueError(f"prior.loss_weighting must be 'edm' or 'elbo', got {self.loss_weighting!r}")
        if self.loss_weighting == "elbo" and self.time_sampling != "log_snr":
            raise ValueError("prior.loss_weighting='elbo' is the likelihood weighting for the ELBO's times: it needs "
                             f"prior.time_sampling='log_snr', got {self.time_sampling!r}")

    def resolved(self) -> PriorConfig:
        """A copy with every derived field (``None`` above) filled in."""
        return self._resolve(warmup_cap=200, checkpoint_cap=500)

    def network_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`manifold_ps.priors.build_prior`."""
        return {"network": self.network, "preset": self.preset, "parameterization": self.parameterization,
                "geometry_channels": self.geometry_channels}

    def trainer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`manifold_ps.priors.train_prior` (resolved)."""
        return {"steps": self.train_steps, "stop_step": self.stop_step, "time_sampling": self.time_sampling,
                "weighting": self.loss_weighting, **self._trainer_kwargs()}


@dataclass(frozen=True)
class FlowConfig(_Training):
    """How the amortized conditional flow is built and distilled from the prior (and the fields
    of :class:`_Training`).

    Attributes:
        layers: Flow layers (each: ActNorm + two couplings); ``steps`` of
            :class:`~manifold_ps.flows.ConditionalRealNVP`.
        hidden: Coupling-network width.
        blocks: Residual blocks per coupling network.
        patch: Positions folded into channels inside the coupling networks.
        context_channels: Condition-encoder output channels.
        encoder_hidden: Condition-encoder width.
        geometry_features: Non-constant Laplacian eigenvectors given to the condition encoder.
        init_scale: Initial scale of the flow's base noise around the reconstruction (with
            ``base="gaussian"`` or ``"mixture"`` the base sets the scale and the flow starts at 1,
            the identity).
        train_steps: Optimizer steps (the length of the learning-rate schedule).
        stop_step: As ``prior.stop_step``, for each flow: one step for every flow, or one per task
            of the workload, in its order (``--set flow.stop_step=812,790``); see
            :meth:`stop_step_of`.
        batch_size: Measurements per step (at most the training measurements).
        n_z: Flow draws per measurement per step.
        n_time: ELBO time draws per flow sample.
        t_min: Lower time limit of the ELBO. It bounds the sample quality: the loss only sees the
            prior smoothed by the forward noise at ``t_min`` (sigma 0.11 at 0.03, 0.077 at 0.02,
            0.045 at 0.01), so single samples keep noise of about that size; below ~0.01 the
            prior's own small-time error takes over (see ``benchmarks/results/flow_ablation-*``).
        spike_guard: Skip a step whose loss exceeds this multiple of the running loss (``None``: never).
        log_every: Steps between logged losses; ``None``: ``min(50, train_steps)``.
        decode: Read the flow's output as ``u = x_{t_min}`` and return the prior's denoising
            ``D(u, t_min)``; trained with the ELBO of the ``t_min`` marginal
            (:meth:`~manifold_ps.priors.ScorePrior.marginal_elbo`). ``False``: the flow's output
            is the sample, scored by the ELBO of a clean signal (the paper's method).
        decoder_noise: Add the Gaussian's denoising error at ``t_min`` to decoded draws (needs
            ``base="gaussian"`` or ``"mixture"``).
        base: What the flow starts from: ``"fill"`` (the task's reconstruction plus
            ``init_scale`` times the flow) or ``"gaussian"`` (the exact posterior over ``u`` under the
            Gaussian fitted to the prior's training signals, :class:`~manifold_ps.flows.GaussianBase`;
            needs ``decode``, a linear operator (one shared by the batch, factorised densely, for
            operators other than masking and denoising) and the ``eval.gaussian_*`` settings), or
            ``"mixture"``: that Gaussian base, with the flow's input drawn from the exact posterior
            over ``u`` of the prior's Gaussian mixture (:class:`~manifold_ps.flows.MixtureBase`;
            needs a ``prior.parameterization = "mixture"`` prior), so that the untrained sampler
            draws from the mixture's posterior.
        base_rank: Directions of that Gaussian (of each mixture component) kept by the base (the
            rest isotropic); the per-measurement factorisation costs ``O(rank^3)`` (per component).
        base_precision: The dtype the base factorises in, ``"float64"`` or ``"float32"`` (about
            twice as fast on a CPU; the base then also draws its noise in that dtype).
            Masking and denoising factorise ``rank x rank`` matrices whose conditioning float32
            holds; the dense path of other operators factorises the whole ``V x V`` covariance
            and may need float64 (it says so).
        prior_term: How the loss's prior term enters: ``"elbo"``, the bound of the prior's
            density (of the ``t_min`` marginal when decoding), or ``"score"`` (needs ``decode``):
            its exact gradient, the prior's score at ``t_min`` from the decoder pass (see
            :func:`~manifold_ps.flows.reverse_kl_loss`).
        entropy_gradient: ``"total"``: the entropy term's full reparameterisation gradient;
            ``"path"``: only its part through the samples, with the flow's density held fixed
            (unbiased, and zero per draw where the sampler equals the target; one more inverse
            flow pass per step; see :func:`~manifold_ps.flows.reverse_kl_loss`).
        likelihood: How the decoder's error enters (needs ``base="gaussian"`` or ``"mixture"`` for
            ``"marginal"``): ``"denoised"`` scores ``y`` by ``p(y | D(u))`` and returns ``D(u)``;
            ``"marginal"`` integrates the error out under the Gaussian's law in the loss
            (``p(y | u)``) and returns ``x`` given ``u`` and ``y`` (see
            :class:`~manifold_ps.flows.AmortizedPosterior`).
    """

    layers: int = 8
    hidden: int = 32
    blocks: int = 1
    patch: int = 1
    context_channels: int = 16
    encoder_hidden: int = 32
    geometry_features: int = 8
    init_scale: float = 0.1
    train_steps: int = 3000
    stop_step: tuple[int, ...] | None = None
    batch_size: int = 16
    n_z: int = 2
    n_time: int = 1
    t_min: float = T_MIN
    spike_guard: float | None = 10.0
    log_every: int | None = None
    decode: bool = True
    decoder_noise: bool = False
    base: Literal["fill", "gaussian", "mixture"] = "gaussian"
    base_rank: int = 256
    base_precision: Literal["float64", "float32"] = "float64"
    prior_term: Literal["elbo", "score"] = "elbo"
    entropy_gradient: Literal["total", "path"] = "total"
    likelihood: Literal["denoised", "marginal"] = "denoised"

    def __post_init__(self) -> None:
        if self.base not in ("fill", "gaussian", "mixture"):
            raise ValueError(f"flow.base must be 'fill', 'gaussian' or 'mixture', got {self.base!r}")
        if self.base != "fill" and not self.decode:
            raise ValueError(f"flow.base={self.base!r} is a posterior over x_{{t_min}}: it needs flow.decode=true")
        if self.decoder_noise and self.base == "fill":
            raise ValueError("flow.decoder_noise draws the Gaussian's denoising error: it needs flow.base='gaussian' "
                             "or 'mixture'")
        if self.base_rank < 1:
            raise ValueError(f"flow.base_rank must be >= 1, got {self.base_rank}")
        if self.base_precision not in ("float64", "float32"):
            raise ValueError(f"flow.base_precision must be 'float64' or 'float32', got {self.base_precision!r}")
        if self.prior_term not in ("elbo", "score"):
            raise ValueError(f"flow.prior_term must be 'elbo' or 'score', got {self.prior_term!r}")
        if self.prior_term == "score" and not self.decode:
            raise ValueError("flow.prior_term='score' is the prior's score at t_min: it needs flow.decode=true")
        if self.entropy_gradient not in ("total", "path"):
            raise ValueError(f"flow.entropy_gradient must be 'total' or 'path', got {self.entropy_gradient!r}")
        if self.likelihood not in ("denoised", "marginal"):
            raise ValueError(f"flow.likelihood must be 'denoised' or 'marginal', got {self.likelihood!r}")
        if self.likelihood == "marginal" and self.base == "fill":
            raise ValueError("flow.likelihood='marginal' models the decoder's error by the Gaussian's: it needs "
                             "flow.base='gaussian' or 'mixture'")
        if self.stop_step is not None and (not self.stop_step or min(self.stop_step) < 1):
            raise ValueError(f"flow.stop_step must be steps >= 1 (one, or one per task) or none, got {self.stop_step}")

    def stop_step_of(self, task: int | None, tasks: int) -> int | None:
        """The ``stop_step`` of the flow of task number ``task`` of a workload with ``tasks`` tasks
        (``None`` for a task outside the workload's list: then only a single value applies).

        Raises:
            ValueError: when the number of values is neither 1 nor ``tasks`` (naming both).

        Example:
            >>> FlowConfig(stop_step=(812, 790)).stop_step_of(1, 2), FlowConfig(stop_step=(5,)).stop_step_of(1, 2)
            (790, 5)
        """
        if self.stop_step is None:
            return None
        if len(self.stop_step) == 1:
            return self.stop_step[0]
        if task is None or len(self.stop_step) != tasks:
            raise ValueError(f"flow.stop_step has {len(self.stop_step)} values {list(self.stop_step)}, but this run "
                             f"trains {'a flow outside the workload' if task is None else f'{tasks} flows'}: give one "
                             "value, or one per task of the workload in its order")
        return self.stop_step[task]

    def resolved(self) -> FlowConfig:
        """A copy with every derived field (``None`` above) filled in."""
        return self._resolve(warmup_cap=100, checkpoint_cap=250, log_every=max(1, min(50, self.train_steps)))

    def network_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~manifold_ps.flows.ConditionalRealNVP` (but the
        geometry features themselves, which need the geometry)."""
        return {"steps": self.layers, "hidden": self.hidden, "blocks": self.blocks, "patch": self.patch,
                "context_channels": self.context_channels, "encoder_hidden": self.encoder_hidden,
                "init_scale": 1.0 if self.base != "fill" else self.init_scale}

    def trainer_kwargs(self, num_measurements: int, *, task: int | None = 0, tasks: int = 1) -> dict[str, Any]:
        """Keyword arguments of :func:`~manifold_ps.flows.train_amortized` (resolved) for
        ``num_measurements`` training measurements, for the flow of task ``task`` of ``tasks``."""
        return {**self._trainer_kwargs(), "batch_size": min(self.batch_size, num_measurements),
                "max_steps": self.train_steps, "stop_step": self.stop_step_of(task, tasks), "n_z": self.n_z,
                "n_time": self.n_time, "t_min": self.t_min, "prior_term": self.prior_term,
                "entropy_gradient": self.entropy_gradient}


@dataclass(frozen=True)
class EvalConfig:
    """How the samplers are evaluated.

    Attributes:
        n_eval: Measurements evaluated per protocol (and held out from the flow's training set).
        n_posterior: Samples for the posterior mean (the paper's N = 128); the first of them is the
            one-draw (N = 1) estimate.
        batch_size: Measurements per sampler call.
        chunk: Draws per call of the amortized sampler (bounds its memory; ``None``: all
            ``n_posterior`` at once). With ``batch_size`` and the seed it fixes which draws a
            measurement gets: :func:`manifold_ps.api.sample_posterior` and ``manifold-ps sample``
            default to these values, so they draw what the benchmarks draw.
        baseline_eval: Measurements evaluated for the slow baselines (``None``: ``n_eval``).
        dps_nfe: DPS / MCG steps, each one network evaluation.
        dps_zeta: DPS / MCG step size (per-sample residual-norm convention); ``None``: the
            samplers' default ``250 / dps_nfe`` (the budget ``zeta * steps`` is what matters; 10
            at 1000 steps collapses the samples).
        reddiff_steps: RED-diff optimisation steps.
        seed_offset: The evaluation draws are seeded with ``seed + seed_offset``.
        gaussian_rank: Directions kept by the Gaussian baseline's covariance (``None``: every
            direction with non-zero variance).
        gaussian_ridges: Ridge candidates of the Gaussian baseline, chosen by the log-likelihood of
            the last ``gaussian_validation_fraction`` of the prior's training signals.
        gaussian_validation_fraction: Share of the prior's training signals held out for that
            choice (the chosen ridge is then refitted on all of them).
        tune_measurements: Validation measurements on which every tuned baseline setting is
            chosen: the task's flow-training measurements after the first ``n_eval`` (disjoint from
            every evaluation set). 0: no tuning, the samplers' defaults.
        tune_zeta_budgets: DPS / MCG step budgets ``zeta * dps_nfe`` tried (each with and without
            ``clip_denoised`` where the workload guarantees a data range).
        tune_reddiff_lrs: RED-diff learning rates tried.
        tune_reddiff_lambdas: RED-diff regularisation weights tried.
        tune_smoothings: Tikhonov weights of the harmonic baseline tried (0: plain harmonic).
    """

    n_eval: int = 64
    n_posterior: int = 128
    batch_size: int = 64
    chunk: int | None = 64
    baseline_eval: int | None = None
    dps_nfe: int = 1000
    dps_zeta: float | None = None
    reddiff_steps: int = 500
    seed_offset: int = 7
    gaussian_rank: int | None = None
    gaussian_ridges: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
    gaussian_validation_fraction: float = 0.1
    tune_measurements: int = 16
    tune_zeta_budgets: tuple[float, ...] = (60.0, 125.0, 250.0, 500.0)
    tune_reddiff_lrs: tuple[float, ...] = (0.01, 0.03, 0.1)
    tune_reddiff_lambdas: tuple[float, ...] = (0.5, 2.0, 8.0)
    tune_smoothings: tuple[float, ...] = (0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)

    def __post_init__(self) -> None:
        if self.chunk is not None and self.chunk < 1:
            raise ValueError(f"eval.chunk must be >= 1 or none, got {self.chunk}")

    def resolved(self) -> EvalConfig:
        return self


@dataclass(frozen=True)
class Config:
    """The configuration of a whole run: one section per stage.

    Attributes:
        profile: Name of the profile it started from (``smoke``, ``cpu``, ``paper``).
        seed: Seeds the prior's initialisation and batches, the simulated measurements, the flow
            and (with ``eval.seed_offset``) the evaluation.
        prior: See :class:`PriorConfig`.
        flow: See :class:`FlowConfig`.
        eval: See :class:`EvalConfig`.

    Example:
        >>> from manifold_ps.config import get_profile
        >>> cfg = get_profile("cpu")
        >>> cfg.flow.t_min, cfg.flow.train_steps, cfg.resolved().flow.warmup_steps
        (0.02, 450, 45)
    """

    profile: str = "custom"
    seed: int = 0
    prior: PriorConfig = field(default_factory=PriorConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def resolved(self) -> Config:
        """A copy with every derived field filled in (what is saved beside results)."""
        return replace(self, prior=self.prior.resolved(), flow=self.flow.resolved(), eval=self.eval.resolved())

    def to_dict(self) -> dict[str, Any]:
        """Plain nested data (JSON-ready)."""
        return asdict(self)


SECTIONS: dict[str, type] = {"prior": PriorConfig, "flow": FlowConfig, "eval": EvalConfig}
"""Section name -> its dataclass (``prior``, ``flow``, ``eval``)."""

PROFILES: dict[str, Config] = {
    # well under a minute (CI)
    "smoke": Config(
        profile="smoke",
        prior=PriorConfig(preset="tiny", train_steps=30, batch_size=16, lr=2e-3, train_size=256),
        flow=FlowConfig(layers=2, hidden=8, context_channels=8, encoder_hidden=8, train_steps=10, batch_size=8,
                        lr=1e-3, train_size=32, prior_term="score"),
        eval=EvalConfig(n_eval=4, n_posterior=8, dps_nfe=10, reddiff_steps=10, batch_size=4, gaussian_rank=16,
                        gaussian_ridges=(1e-4, 1e-2), tune_measurements=4, tune_zeta_budgets=(250.0,),
                        tune_reddiff_lrs=(0.03,), tune_reddiff_lambdas=(2.0,), tune_smoothings=(0.0, 0.1)),
    ),
    # ~30 min on 2 cores: prior <= 11 min, flow <= 10 min, the rest is evaluation of 64 measurements
    # per set. DPS and MCG run at 300 NFE: the DPS sweep (benchmarks/results/dps_sweep-*) shows no
    # loss against 1000 on either mesh workload. t_min = 0.02 is the best of the bunny-MNIST flow
    # ablation (benchmarks/flow_ablation.py). The decoded sampler trains at about 0.9 steps/s on 2
    # cores, so a 450-step cosine schedule anneals within the 10 minutes; a longer schedule would be
    # cut by the cap while its learning rate is still high. The flow's prior term is the prior's
    # score at t_min (its exact gradient): with one ELBO time draw per sample the bound's gradient
    # noise raised the held-out bound it minimises, the score kept it level and calibrated at 1.8x
    # less cost per step (benchmarks/results/flow_bound-*, flow_ablation-*). The flow's peak learning
    # rate is 2e-3: at the default 5e-4 the 450 steps ended where they started (paired against the
    # untrained sampler), at 2e-3 they gain over it on every seed without a divergence
    # (benchmarks/results/flow_ablation-bunny_mnist-cpu-lr2e-3.md).
    "cpu": Config(
        profile="cpu",
        prior=PriorConfig(minutes=11.0),
        flow=FlowConfig(minutes=10.0, train_steps=450, t_min=0.02, patch=16, prior_term="score", lr=2e-3),
        eval=EvalConfig(n_eval=64, dps_nfe=300),
    ),
    # the paper's appendix hyper-parameters (for a GPU)
    "paper": Config(
        profile="paper",
        prior=PriorConfig(network="unet", preset="paper", parameterization="edm", train_steps=360_000,
                          batch_size=128, lr=2e-4),
        flow=FlowConfig(layers=24, hidden=64, blocks=2, context_channels=32, encoder_hidden=64, train_steps=315_000,
                        batch_size=64, n_z=1, lr=1e-5, decode=False, base="fill"),
        eval=EvalConfig(n_eval=1000, batch_size=128, baseline_eval=256),
    ),
}
"""The named profiles: ``smoke`` (CI), ``cpu`` (the default, ~30 minutes of a 2-core CPU) and
``paper`` (the paper's budgets, for a GPU)."""


def get_profile(name: str) -> Config:
    """The profile ``name``.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
    """
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return PROFILES[name]
