"""RED-diff (Mardani et al. 2023): variational posterior sampling with the diffusion denoiser as
a regulariser, by stochastic optimisation of a single estimate ``mu``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_finite
from ..operators import Inpainting, LinearOperator, Operator
from ..priors import ScorePrior
from ._common import SamplerStats, ancestral_grid, repeat_batch

__all__ = ["REDDiff"]


class REDDiff(SamplerStats):
    """Regularisation by denoising diffusion.

    Minimises, with Adam over ``mu`` and times descending from ``T`` to ``T / steps``,

        mean((y - A mu)^2) / 2 + lambda * w(t) * mean(sg[eps_hat(alpha mu + sigma eps, t) - eps] * mu)

    with ``w(t) = sigma(t) / alpha(t)`` (the paper's SNR weighting). The gradient of the second
    term is the denoiser's score-matching residual (no backpropagation through the network).
    ``mu`` starts from the adjoint of the measurement; for masking, missing vertices start at the
    mean of the observed values. Each of the ``n`` samples is an independent run (batched).

    Args:
        prior: The diffusion prior.
        steps: Optimisation steps (= NFE).
        lr: Adam learning rate.
        lambda_: Weight of the denoising regulariser.

    Example:
        >>> from manifold_ps.priors import GaussianPrior
        >>> from manifold_ps.operators import Inpainting
        >>> prior = GaussianPrior(torch.zeros(1, 4, dtype=torch.float64), torch.eye(4, dtype=torch.float64))
        >>> op = Inpainting(torch.tensor([True, True, False, True]), sigma=0.1)
        >>> REDDiff(prior, steps=10).sample(torch.ones(2, 1, 4, dtype=torch.float64), op).shape
        torch.Size([2, 1, 1, 4])
    """

    def __init__(self, prior: ScorePrior, *, steps: int = 500, lr: float = 0.1, lambda_: float = 0.25) -> None:
        if lr <= 0 or lambda_ < 0:
            raise ValueError(f"need lr > 0 and lambda_ >= 0, got {lr}, {lambda_}")
        self.prior = prior
        self.steps = int(steps)
        self.lr = float(lr)
        self.lambda_ = float(lambda_)
        ancestral_grid(self.steps)

    @staticmethod
    def initial(y: Tensor, op: Operator) -> Tensor:
        """Starting point ``(N, C, V)``: ``A^T y``; masked vertices at the mean of the observed ones."""
        if isinstance(op, Inpainting):
            m = op.measured(y).to(y.dtype).expand_as(y)
            fill = (y * m).flatten(1).sum(-1) / m.flatten(1).sum(-1).clamp_min(1)
            return y * m + (1 - m) * fill[:, None, None]
        if isinstance(op, LinearOperator):
            return op.A_adjoint(y)
        raise ValueError(f"REDDiff needs a linear operator, got {type(op).__name__}")

    def sample(self, y: Tensor, operator: Operator, n: int = 1, *, generator: torch.Generator | None = None
               ) -> Tensor:
        """Run ``n`` independent optimisations per measurement: ``(B, n, C, V)``."""
        with self._timed(y, generator):
            yb, op = repeat_batch(y, operator, n)
            op = op.to(y.device)
            mu = self.initial(yb, op).detach().clone().requires_grad_(True)
            opt = torch.optim.Adam([mu], lr=self.lr)
            times = ancestral_grid(self.steps, self.prior.sde.T).flip(0).to(device=y.device, dtype=y.dtype)
            for t in times:
                tt = t.expand(mu.shape[0])
                alpha, sigma = self.prior.sde.alpha(t), self.prior.sde.std(t)
                eps = torch.randn(mu.shape, generator=generator, device=y.device, dtype=y.dtype)
                with torch.no_grad():
                    eps_hat = self.prior.eps(alpha * mu + sigma * eps, tt)
                with torch.enable_grad():
                    fid = op.residual(yb, mu).square().mean() / 2
                    reg = ((eps_hat - eps) * mu).mean()
                    loss = fid + self.lambda_ * (sigma / alpha) * reg
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                opt.step()
            out = mu.detach()
            check_finite(out, "RED-diff estimates (try a smaller lr)")
        self.nfe = self.steps
        return out.reshape(y.shape[0], n, *out.shape[1:])
