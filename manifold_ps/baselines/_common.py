"""Pieces shared by the baseline samplers: batching over samples, the reverse-time grid, the
ancestral DDPM step, and the two numbers every benchmark reports per method -- network
evaluations per sample (:class:`NFECounter`) and wall-clock seconds (:func:`timed`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn

from .._checks import check_finite, check_generator_device
from ..operators import Operator
from ..priors import ScorePrior
from ..priors.sde import VPSDE, append_dims

__all__ = [
    "TimeGrid",
    "NFECounter",
    "Stopwatch",
    "timed",
    "SamplerStats",
    "check_request",
    "eval_mode",
    "repeat_batch",
    "reverse_grid",
    "posterior_step",
    "DDPM_STEPS",
]

TimeGrid = Literal["ddpm", "uniform"]
"""Reverse-time grid of the iterative baselines; see :func:`reverse_grid`."""

DDPM_STEPS = 1000
"""Length of the discrete DDPM schedule that ``time_grid="ddpm"`` respaces."""


class NFECounter:
    """Counts denoiser evaluations per sample while forwarding to a :class:`ScorePrior`.

    Every call of :meth:`denoise` (and of :meth:`eps` / :meth:`score`, which go through it)
    adds the number of signals in its batch; :meth:`per_sample` divides by the number of
    samples the caller is drawing. A network evaluation that is also back-propagated through
    (DPS, MCG) counts once, as in the literature's NFE.

    Args:
        prior: The prior whose denoiser is counted.

    Example:
        >>> from manifold_ps.priors import GaussianPrior
        >>> prior = GaussianPrior(torch.zeros(1, 3), torch.eye(3))
        >>> counter = NFECounter(prior)
        >>> for _ in range(5):
        ...     _ = counter.eps(torch.zeros(4, 1, 3), torch.full((4,), 0.5))
        >>> counter.per_sample(4)
        5
    """

    def __init__(self, prior: ScorePrior) -> None:
        self.prior = prior
        self.sde: VPSDE = prior.sde
        self.evaluations = 0

    def reset(self) -> None:
        """Set the count of evaluated signals back to zero."""
        self.evaluations = 0

    def denoise(self, x: Tensor, t: Tensor) -> Tensor:
        """The prior's Tweedie denoiser ``E[x_0 | x_t]`` (counted). Shapes: ``(N, C, V), (N,) -> (N, C, V)``."""
        self.evaluations += x.shape[0]
        return self.prior.denoise(x, t)

    def eps(self, x: Tensor, t: Tensor) -> Tensor:
        """Predicted noise ``(x - alpha x0_hat) / sigma`` (one counted evaluation)."""
        alpha = append_dims(self.sde.alpha(t), x.ndim)
        sigma = append_dims(self.sde.std(t), x.ndim)
        return (x - alpha * self.denoise(x, t)) / sigma

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        """Score ``grad log p_t(x)`` (one counted evaluation)."""
        alpha = append_dims(self.sde.alpha(t), x.ndim)
        var = append_dims(self.sde.std(t) ** 2, x.ndim)
        return (alpha * self.denoise(x, t) - x) / var

    def per_sample(self, num_samples: int) -> int:
        """Evaluations per sample, rounded up: ``ceil(evaluated signals / num_samples)``."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        return -(-self.evaluations // num_samples)


class Stopwatch:
    """Seconds measured by :func:`timed` (``seconds`` is set when the block exits)."""

    seconds: float = 0.0


@contextmanager
def timed(device: torch.device | str | None = None) -> Iterator[Stopwatch]:
    """Wall-clock time of a block; on CUDA the device is synchronised at both ends.

    Example:
        >>> with timed() as watch:
        ...     _ = sum(range(1000))
        >>> watch.seconds > 0
        True
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    watch = Stopwatch()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    tic = time.perf_counter()
    try:
        yield watch
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        watch.seconds = time.perf_counter() - tic


class SamplerStats:
    """Mixin holding the numbers of the last :meth:`sample` call.

    Attributes:
        nfe: Network (denoiser) evaluations per posterior sample, counted by :class:`NFECounter`
            (0 for non-learned methods).
        last_seconds: Wall-clock seconds of the whole call.
        last_samples: Number of samples the call drew (``B * n``).
    """

    nfe: int = 0
    last_seconds: float = 0.0
    last_samples: int = 0

    @property
    def seconds_per_sample(self) -> float:
        """``last_seconds / last_samples`` (0 before the first call)."""
        return self.last_seconds / self.last_samples if self.last_samples else 0.0

    @contextmanager
    def _timed(self, y: Tensor, n: int, generator: torch.Generator | None) -> Iterator[None]:
        check_generator_device(generator, y.device)
        with timed(y.device) as watch:
            yield
        self.last_seconds = watch.seconds
        self.last_samples = y.shape[0] * n


def check_request(y: Tensor, n: int) -> None:
    """Validate the arguments every sampler shares: a finite floating-point ``y`` and ``n >= 1``."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(y, Tensor) or not y.is_floating_point():
        raise ValueError(f"y must be a floating-point tensor, got {getattr(y, 'dtype', type(y).__name__)}")
    check_finite(y, "y")


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Run a block with ``module`` in eval mode (no dropout), restoring its mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def repeat_batch(y: Tensor, operator: Operator, n: int) -> tuple[Tensor, Operator]:
    """Flatten ``n`` samples per measurement into one batch (measurement-major).

    Shapes:
        ``y``: ``(B, ...)`` -> ``(B * n, ...)``; the operator's per-sample parameters follow
        (``operator.select(arange(B).repeat_interleave(n))``), moved to ``y``'s device.
    """
    check_request(y, n)
    index = torch.arange(y.shape[0], device=y.device).repeat_interleave(n)
    # a CPU index works for operators on any device
    return y.repeat_interleave(n, dim=0), operator.select(index.cpu()).to(y.device)


def reverse_grid(sde: VPSDE, steps: int, kind: TimeGrid = "ddpm") -> tuple[Tensor, Tensor]:
    """Times and cumulative alphas of a reverse chain of ``steps`` states, ascending in time.

    - ``"ddpm"``: the discrete DDPM schedule of ``max(1000, steps)`` steps matching the SDE
      (:meth:`~manifold_ps.priors.VPSDE.discrete_alphas_cumprod`), respaced to ``steps`` evenly
      spaced indices that include the first and the last (``steps = 1000`` is the DDPM /
      DPS chain itself). The times are the continuous ``t`` with ``alpha(t)^2 = abar``.
    - ``"uniform"``: ``t_i = i / steps`` (``i = 1..steps``) of the continuous SDE, ``abar = alpha(t)^2``.

    Returns:
        ``(times (steps,), abar (steps,))``, float64, ``times[0]`` the smallest.

    Example:
        >>> t, abar = reverse_grid(VPSDE(), 4)
        >>> t.shape, bool(abar[0] > 0.99), bool(abar[-1] < 1e-4)
        (torch.Size([4]), True, True)
    """
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2, got {steps!r}")
    if kind == "ddpm":
        total = max(DDPM_STEPS, steps)
        index = torch.linspace(0, total - 1, steps, dtype=torch.float64).round().long()
        return sde.discrete_times(total)[index], sde.discrete_alphas_cumprod(total)[index]
    if kind == "uniform":
        times = torch.arange(1, steps + 1, dtype=torch.float64) / steps * sde.T
        return times, sde.alpha(times) ** 2
    raise ValueError(f"time_grid must be 'ddpm' or 'uniform', got {kind!r}")


def posterior_step(x: Tensor, x0: Tensor, abar_t: float, abar_s: float, noise: Tensor) -> Tensor:
    """One ancestral step ``x_s ~ q(x_s | x_t, x_0 = x0_hat)`` of the DDPM chain (``s < t``).

    With ``beta = 1 - abar_t / abar_s`` (the respaced step's variance),
    ``mean = sqrt(abar_s) beta / (1 - abar_t) x0 + sqrt(1 - beta) (1 - abar_s) / (1 - abar_t) x_t``
    and variance ``beta (1 - abar_s) / (1 - abar_t)`` (Ho et al. 2020, eq. 7).

    Shapes:
        ``x``, ``x0``, ``noise``: ``(N, C, V)`` -> ``(N, C, V)``.
    """
    beta = 1.0 - abar_t / abar_s
    mean = (math.sqrt(abar_s) * beta / (1.0 - abar_t)) * x0 \
        + (math.sqrt(1.0 - beta) * (1.0 - abar_s) / (1.0 - abar_t)) * x
    var = beta * (1.0 - abar_s) / (1.0 - abar_t)
    return mean + math.sqrt(var) * noise
