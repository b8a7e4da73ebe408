"""Benchmark profiles: how long each stage trains and how much is evaluated.

``smoke`` runs in well under a minute (CI), ``cpu`` is the default and fits in about 30 minutes
of a 2-core CPU, ``paper`` uses the paper's appendix hyper-parameters (for a GPU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

__all__ = ["Profile", "PROFILES", "get_profile"]


@dataclass(frozen=True)
class Profile:
    """Sizes and budgets of a benchmark run (all stages).

    Attributes:
        name: Profile name.
        prior_network: ``"mlp"`` or ``"unet"`` (see :func:`manifold_ps.priors.build_prior`).
        prior_preset: Network size preset.
        prior_parameterization: Denoiser parameterisation. ``"x0"`` for the MLP: with EDM
            preconditioning the small-noise regime is eps-prediction, which the MLP did not learn
            (bunny, 7 min of CPU training, denoising MSE at sigma/alpha = 0.11: 0.0031 with x0
            against 0.0093 with EDM, 0.0120 for the noisy input itself).
        prior_steps: Prior optimizer steps.
        prior_batch: Prior batch size.
        prior_lr: Prior peak learning rate.
        prior_train_size: Clean training signals used (``None``: the whole split).
        prior_minutes: Wall-clock cap of the prior training (``None``: none); the run stops at
            the cap with a checkpoint, and a rerun continues.
        flow_steps: Flow steps (each: ActNorm + two couplings).
        flow_hidden: Coupling-network width.
        flow_blocks: Residual blocks per coupling network.
        flow_patch: Positions folded into channels inside the coupling networks.
        flow_context: Condition-encoder output channels.
        flow_encoder_hidden: Condition-encoder width.
        flow_train_steps: Flow optimizer steps.
        flow_batch: Measurements per flow step.
        flow_n_z: Flow draws per measurement per step.
        flow_lr: Flow peak learning rate.
        flow_t_min: Lower time limit of the ELBO. It bounds the sample quality: the loss only
            sees the prior smoothed by the forward noise at ``t_min`` (sigma 0.11 at 0.03, 0.077 at
            0.02, 0.045 at 0.01), so single samples keep noise of about that size; below ~0.01 the
            prior's own small-time error takes over (see ``benchmarks/results/flow_ablation-*``).
        flow_n_time: ELBO time draws per flow sample.
        flow_init_scale: Initial scale of the flow's base noise around the reconstruction.
        flow_train_size: Measurements the flow trains on (``None``: the whole split).
        flow_minutes: Wall-clock cap of all flow trainings of a workload together, split over its
            tasks by their ``flow_share`` (one task: all of it).
        n_eval: Measurements evaluated per protocol.
        n_posterior: Samples for the posterior mean (the paper's N = 128).
        dps_steps: DPS / MCG steps (NFE).
        dps_zeta: DPS / MCG step size (per-sample residual-norm convention); ``None``: the
            samplers' default ``250 / steps`` (the budget ``zeta * steps`` is what matters; 10 at
            1000 steps collapses the samples).
        reddiff_steps: RED-diff optimisation steps.
        eval_batch: Measurements per sampler call.
        baseline_eval: Measurements evaluated for the slow baselines (``None``: ``n_eval``).
        gaussian_rank: Directions kept by the Gaussian baseline's covariance (``None``: every
            direction with non-zero variance).
        gaussian_ridges: Ridge candidates of the Gaussian baseline, chosen by the log-likelihood
            of the last ``gaussian_validation_fraction`` of the prior's training signals.
        gaussian_validation_fraction: Share of the prior's training signals held out for that choice
            (the chosen ridge is then refitted on all of them).
        tune_measurements: Validation measurements on which every tuned baseline setting is
            chosen: the task's flow-training measurements after the first ``n_eval`` (disjoint
            from every evaluation set). 0: no tuning, the samplers' defaults.
        tune_zeta_budgets: DPS / MCG step budgets ``zeta * steps`` tried (with and without
            ``clip_denoised`` where the workload guarantees a data range).
        tune_reddiff_lrs: RED-diff learning rates tried.
        tune_reddiff_lambdas: RED-diff regularisation weights tried.
        tune_smoothings: Tikhonov weights of the harmonic baseline tried (0: plain harmonic).
    """

    name: str
    prior_network: Literal["mlp", "unet"] = "mlp"
    prior_preset: Literal["tiny", "cpu", "paper"] = "cpu"
    prior_parameterization: Literal["edm", "x0", "eps"] = "x0"
    prior_steps: int = 2000
    prior_batch: int = 64
    prior_lr: float = 5e-4
    prior_train_size: int | None = None
    prior_minutes: float | None = None
    flow_steps: int = 8
    flow_hidden: int = 32
    flow_blocks: int = 1
    flow_patch: int = 1
    flow_context: int = 16
    flow_encoder_hidden: int = 32
    flow_train_steps: int = 3000
    flow_batch: int = 16
    flow_n_z: int = 2
    flow_lr: float = 5e-4
    flow_t_min: float = 0.03
    flow_n_time: int = 1
    flow_init_scale: float = 0.1
    flow_train_size: int | None = None
    flow_minutes: float | None = None
    n_eval: int = 64
    n_posterior: int = 128
    dps_steps: int = 1000
    dps_zeta: float | None = None
    reddiff_steps: int = 500
    eval_batch: int = 64
    baseline_eval: int | None = None
    gaussian_rank: int | None = None
    gaussian_ridges: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)
    gaussian_validation_fraction: float = 0.1
    tune_measurements: int = 16
    tune_zeta_budgets: tuple[float, ...] = (60.0, 125.0, 250.0, 500.0)
    tune_reddiff_lrs: tuple[float, ...] = (0.01, 0.03, 0.1)
    tune_reddiff_lambdas: tuple[float, ...] = (0.5, 2.0, 8.0)
    tune_smoothings: tuple[float, ...] = (0.0, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", prior_preset="tiny", prior_steps=30, prior_batch=16, prior_lr=2e-3, prior_train_size=256,
        flow_steps=2, flow_hidden=8, flow_context=8, flow_encoder_hidden=8, flow_train_steps=10, flow_batch=8,
        flow_lr=1e-3, flow_train_size=32, n_eval=4, n_posterior=8, dps_steps=10, reddiff_steps=10, eval_batch=4,
        gaussian_rank=16, gaussian_ridges=(1e-4, 1e-2), tune_measurements=4, tune_zeta_budgets=(250.0,),
        tune_reddiff_lrs=(0.03,), tune_reddiff_lambdas=(2.0,), tune_smoothings=(0.0, 0.1),
    ),
    # ~30 min on 2 cores: prior <= 11 min, flow <= 10 min, the rest is evaluation of 64 measurements
    # per set. DPS and MCG run at 300 NFE: the DPS sweep (benchmarks/results/dps_sweep-*) shows no
    # loss against 1000 on either mesh workload. The flow settings are the best of the bunny-MNIST
    # ablation (benchmarks/flow_ablation.py): t_min = 0.02 balances single-sample noise (sigma 0.077)
    # against the x0 prior's small-time error, and a 900-step cosine schedule (~1.5 steps/s on 2
    # cores) anneals within the 10 minutes instead of being cut at full rate.
    "cpu": Profile(name="cpu", prior_minutes=11.0, flow_minutes=10.0, flow_train_steps=900, flow_t_min=0.02,
                   flow_patch=16, n_eval=64, dps_steps=300),
    "paper": Profile(
        name="paper", prior_network="unet", prior_preset="paper", prior_parameterization="edm", prior_steps=360_000, prior_batch=128,
        prior_lr=2e-4, flow_steps=24, flow_hidden=64, flow_blocks=2, flow_context=32, flow_encoder_hidden=64,
        flow_train_steps=315_000, flow_batch=64, flow_n_z=1, flow_lr=1e-5, n_eval=1000, eval_batch=128,
        baseline_eval=256,
    ),
}
"""The three profiles of every benchmark script."""


def get_profile(name: str, **overrides: Any) -> Profile:
    """A profile by name, with fields overridden (``None`` values are ignored).

    Raises:
        ValueError: for an unknown profile or field.
    """
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    fields = set(Profile.__dataclass_fields__)
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"unknown profile fields {sorted(unknown)}")
    return replace(PROFILES[name], **{k: v for k, v in overrides.items() if v is not None})
