"""Denoising score-matching training of a :class:`DiffusionPrior` with the generic Trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from .._checks import check_signal
from ..training import Trainer
from .diffusion import DiffusionPrior, TimeSampling, Weighting, check_weighting

__all__ = ["DSMObjective", "train_prior"]


class DSMObjective(nn.Module):
    """Wraps a prior so that ``forward(x0, generator)`` is the mean DSM loss (what DDP calls).

    Args:
        prior: The prior to train.
        t_min: Smallest training time.
        t_max: Largest training time (default: the SDE's end).
        time_sampling: Distribution of the training times.
        weighting: Per-time weight of the error, ``"edm"`` or ``"elbo"`` (see
            :meth:`DiffusionPrior.dsm_loss`; ``"elbo"`` needs ``time_sampling="log_snr"``).

    Example:
        >>> from manifold_ps.geometry import VertexLayout
        >>> from manifold_ps.priors import UNet1d
        >>> prior = DiffusionPrior(UNet1d(1, 1, base_channels=8, channel_mults=(1,)), VertexLayout(6), channels=1)
        >>> DSMObjective(prior)(torch.rand(4, 1, 6), torch.Generator().manual_seed(0)).shape
        torch.Size([])
    """

    def __init__(self, prior: DiffusionPrior, *, t_min: float = 1e-3, t_max: float | None = None,
                 time_sampling: TimeSampling = "log_snr", weighting: Weighting = "edm") -> None:
        super().__init__()
        check_weighting(weighting, time_sampling)  # at construction, not at the first step
        self.prior = prior
        self.t_min = t_min
        self.t_max = t_max
        self.time_sampling: TimeSampling = time_sampling
        self.weighting: Weighting = weighting

    def forward(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.prior.dsm_loss(x0, generator, t_min=self.t_min, t_max=self.t_max,
                                   time_sampling=self.time_sampling, weighting=self.weighting).mean()


def _loss_fn(model: nn.Module, batch: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
    return model(batch, generator), {}


def train_prior(
    prior: DiffusionPrior,
    data: Tensor,
    *,
    out_dir: str | Path | None,
    steps: int,
    batch_size: int = 64,
    lr: float = 2e-4,
    t_min: float = 1e-3,
    t_max: float | None = None,
    time_sampling: TimeSampling = "log_snr",
    weighting: Weighting = "edm",
    fit_statistics: bool = True,
    config: dict[str, Any] | None = None,
    callback: Any = None,
    **trainer_kwargs: Any,
) -> DiffusionPrior:
    """Train ``prior`` by denoising score matching; returns the prior holding the EMA weights.

    Resumes from ``out_dir/checkpoint.pt`` when it exists (rerun the same call after an
    interruption). At the end the EMA prior is written to ``out_dir/prior.pt``.

    Args:
        prior: The prior to train (its weights are updated in place; the returned prior is the
            EMA copy, or ``prior`` itself with ``ema_decay=None``).
        data: Training signals ``(N, C, V)``, natural order (converted to the prior's dtype, so
            float64 signals train a float32 prior).
        out_dir: Folder of the checkpoint, logs and ``prior.pt`` (``None``: keep nothing).
        steps: Total optimizer steps.
        batch_size: Global batch size.
        lr: Peak learning rate.
        t_min: Smallest training time.
        t_max: Largest training time (default: the SDE's end).
        time_sampling: Distribution of the training times.
        weighting: Per-time weight of the error, ``"edm"`` or ``"elbo"`` (see
            :meth:`DiffusionPrior.dsm_loss`).
        fit_statistics: Set the prior's data mean/scale from ``data`` before training.
        config: Extra plain data saved in checkpoints.
        callback: Passed to :meth:`Trainer.fit`.
        **trainer_kwargs: Passed to :class:`~manifold_ps.training.Trainer` (``ema_decay``,
            ``warmup_steps``, ``lr_schedule``, ``amp``, ``device``, ``checkpoint_every``, ...).

    Returns:
        The trained (EMA) prior in eval mode, on the training device.
    """
    check_signal(data, prior.num_vertices, "data", channels=prior.channels)
    dtype = next(prior.parameters()).dtype
    if data.is_floating_point() and data.dtype != dtype:  # e.g. float64 signals built from mesh.positions
        data = data.to(dtype)
    if fit_statistics:
        prior.set_data_statistics(data)
    objective = DSMObjective(prior, t_min=t_min, t_max=t_max, time_sampling=time_sampling, weighting=weighting)
    full_config = {"prior": prior.config(), "t_min": t_min, "t_max": t_max, "time_sampling": time_sampling,
                   "weighting": weighting, **(config or {})}
    trainer = Trainer(objective, _loss_fn, data, out_dir=out_dir, batch_size=batch_size, max_steps=steps, lr=lr,
                      config=full_config, fingerprint=prior.fingerprint, **trainer_kwargs)
    try:
        trainer.fit(callback=callback)
    finally:
        trainer.close()
    trained = cast(DiffusionPrior, cast(DSMObjective, trainer.ema_model).prior)
    trained.eval()
    if out_dir is not None and trainer.dist.is_main:
        trained.save(Path(out_dir) / "prior.pt")
    return trained
