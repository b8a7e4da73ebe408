"""RED-diff (Mardani et al. 2023, "A variational perspective on solving inverse problems with
diffusion models"): variational posterior sampling with the diffusion denoiser as a regulariser,
by stochastic optimisation of a single estimate ``mu``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .._checks import check_finite
from ..operators import Inpainting, LinearOperator, Operator
from ..priors import ScorePrior
from ._common import NFECounter, SamplerStats, TimeGrid, eval_mode, repeat_batch, reverse_grid

__all__ = ["REDDiff", "REDDiffInit"]

REDDiffInit = Literal["adjoint", "mean_fill"]
"""Starting point of :class:`REDDiff` (its ``init`` argument)."""
"""Starting point of :class:`REDDiff` (``A^T y`` or, for masking, the mean-filled measurement)."""


class REDDiff(SamplerStats):
    """Regularisation by denoising diffusion (the paper's Algorithm 1 with its SNR weighting).

    For ``t`` descending over the reverse grid (one time per step, from ``T`` to about 0) it
    draws ``eps ~ N(0, I)``, forms ``x_t = alpha(t) mu + sigma(t) eps`` and takes one Adam step
    on, per sample,

        ``mean((y - A mu)^2) / 2 + lambda_ * w(t) * mean(sg[eps_hat(x_t, t) - eps] * mu)``,
        ``w(t) = sigma(t) / alpha(t)`` (the inverse square-root SNR weighting),

    whose gradient in ``mu`` is the measurement residual plus the denoiser's score-matching
    error (no backpropagation through the network). The means run over the entries of one
    sample (as in the authors' code), so the loss is
    ``(||y - A mu||^2 / (2 sigma_y^2) + (lambda_ / sigma_y^2) w(t) sg[...]^T mu) * sigma_y^2 / d``:
    the paper's ``lambda`` relative to the ``1 / (2 sigma_y^2)``-scaled likelihood is
    ``lambda_ / sigma_y^2``. Samples are summed, so a sample's path does not depend on the
    batch. Each of the ``n`` samples is an independent run (its own noise draws); RED-diff
    approximates the posterior by a point mass, so the spread of the ``n`` runs is *not* a
    posterior spread.

    Defaults. The authors' ``lr`` 0.25-0.5 and ``lambda_`` 0.25 are for ``[-1, 1]`` images with
    little noise. On bunny-MNIST inpainting (``[0, 1]``, 30% missing, ``sigma_y = 0.1``, 8
    held-out digits, 500 steps) with a Gaussian prior fitted to the training digits, PSNR was
    20.8 dB at (lr 0.1, lambda 0.25), 21.7 at (0.01, 0.25), 23.5 at (0.01, 1), 24.2 at (0.03, 3),
    23.9 at (0.03, 2), 20.6 at (0.03, 10) and 15.1 at (0.01, 30); with an (under-trained) learned
    prior and 200 steps, 16.2 at (0.1, 0.25) and 18.7 at (0.03, 2). Hence ``lr = 0.03`` and
    ``lambda_ = 2``. Adam normalises each coordinate's step, so unobserved vertices move by
    about ``lr`` per step whatever the weight: a large ``lr`` leaves them jittering at the end.

    Args:
        prior: The diffusion prior. It is run in eval mode.
        steps: Optimisation steps (= NFE).
        lr: Adam learning rate (betas ``(0.9, 0.99)`` as in the authors' code).
        lambda_: Weight of the denoising regulariser.
        init: Starting point: ``"adjoint"`` (``A^T y``; for masking the zero-filled measurement,
            the pseudo-inverse the paper starts from) or ``"mean_fill"`` (for masking: the
            observed values and, elsewhere, the mean of the observed values of that sample;
            other operators fall back to ``A^T y``).
        time_grid: Reverse grid, as for :class:`~manifold_ps.baselines.DPS`.

    Shapes:
        ``sample(y (B, ...), operator, n)`` -> ``(B, n, C, V)``.

    Example:
        >>> from manifold_ps.priors import GaussianPrior
        >>> from manifold_ps.operators import Inpainting
        >>> prior = GaussianPrior(torch.zeros(1, 4, dtype=torch.float64), torch.eye(4, dtype=torch.float64))
        >>> op = Inpainting(torch.tensor([True, True, False, True]), sigma=0.1)
        >>> red = REDDiff(prior, steps=10)
        >>> red.sample(torch.ones(2, 1, 4, dtype=torch.float64), op).shape
        torch.Size([2, 1, 1, 4])
        >>> red.nfe
        10
    """

    def __init__(
        self,
        prior: ScorePrior,
        *,
        steps: int = 500,
        lr: float = 0.03,
        lambda_: float = 2.0,
        init: REDDiffInit = "adjoint",
        time_grid: TimeGrid = "ddpm",
    ) -> None:
        if not lr > 0 or not lambda_ >= 0:
            raise ValueError(f"need lr > 0 and lambda_ >= 0, got lr={lr}, lambda_={lambda_}")
        if init not in ("adjoint", "mean_fill"):
            raise ValueError(f"init must be 'adjoint' or 'mean_fill', got {init!r}")
        reverse_grid(prior.sde, steps, time_grid)  # validates steps and time_grid
        self.prior = prior
        self.steps = int(steps)
        self.lr = float(lr)
        self.lambda_ = float(lambda_)
        self.init: REDDiffInit = init
        self.time_grid: TimeGrid = time_grid

    def __repr__(self) -> str:
        return (f"REDDiff(steps={self.steps}, lr={self.lr}, lambda_={self.lambda_}, init={self.init!r}, "
                f"time_grid={self.time_grid!r})")

    def initial(self, y: Tensor, operator: Operator) -> Tensor:
        """Starting point ``mu_0`` of the optimisation (see ``init``).

        Shapes:
            ``y (N, ...)`` -> ``(N, C, V)``.
        """
        if not isinstance(operator, LinearOperator):
            raise ValueError(f"REDDiff needs a linear operator (for its A^T y start), got {type(operator).__name__}")
        start = operator.A_adjoint(y)
        if self.init == "mean_fill" and isinstance(operator, Inpainting):
            m = operator.measured(y).to(y.dtype).expand_as(y)
            fill = (y * m).flatten(2).sum(-1) / m.flatten(2).sum(-1).clamp_min(1)  # (N, C)
            start = y * m + (1 - m) * fill[..., None]
        return start

    def sample(
        self,
        y: Tensor,
        operator: Operator,
        n: int = 1,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Run ``n`` independent optimisations per measurement.

        Args:
            y: Measurements ``(B, ...)``.
            operator: A linear operator (per-sample parameters match ``y``'s batch).
            n: Runs per measurement.
            generator: Source of the forward noises (on ``y``'s device).

        Returns:
            ``(B, n, C, V)`` estimates, on ``y``'s device and dtype.
        """
        if not isinstance(operator, LinearOperator):
            raise ValueError(f"REDDiff needs a linear operator (for its A^T y start), got {type(operator).__name__}")
        counter = NFECounter(self.prior)
        with self._timed(y, n, generator), eval_mode(self.prior):
            yb, op = repeat_batch(y, operator, n)
            mu = self.initial(yb, op).detach().clone().requires_grad_(True)
            opt = torch.optim.Adam([mu], lr=self.lr, betas=(0.9, 0.99))
            times, abar = reverse_grid(self.prior.sde, self.steps, self.time_grid)
            alphas, sigmas = abar.sqrt().tolist(), (1.0 - abar).sqrt().tolist()
            t_dev = times.to(device=y.device, dtype=y.dtype)
            for i in reversed(range(self.steps)):
                alpha, sigma = alphas[i], sigmas[i]
                eps = torch.randn(mu.shape, generator=generator, device=y.device, dtype=y.dtype)
                with torch.no_grad():
                    eps_hat = counter.eps(alpha * mu + sigma * eps, t_dev[i].expand(mu.shape[0]))
                with torch.enable_grad():
                    fidelity = op.residual(yb, mu).flatten(1).square().mean(-1) / 2
                    regulariser = ((eps_hat - eps) * mu).flatten(1).mean(-1)
                    loss = (fidelity + self.lambda_ * (sigma / alpha) * regulariser).sum()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                opt.step()
            out = mu.detach()
            check_finite(out, "RED-diff estimates (try a smaller lr)")
        self.nfe = counter.per_sample(mu.shape[0])
        return out.reshape(y.shape[0], n, *out.shape[1:])
