"""The exact posterior over ``u = x_{t_min}`` of a Gaussian-mixture teacher, as a flow's source.

For a mixture ``x ~ sum_k w_k N(mu_k, S_k)`` (:class:`~manifold_ps.priors.GaussianMixture`, the
step 0 of a ``"mixture"`` diffusion prior) and ``y = A x + sigma n``, the posterior over ``u``
of each component's model is the :class:`~manifold_ps.flows.GaussianBase` of that component (the
marginal one, ``u = a x + s e``, or the one of ``y`` given the component's denoiser ``D_k(u)``),
and the posterior of the mixture is

    q_0(u | y) = sum_k r_k(y) q_k(u | y),   r_k(y) ∝ w_k N(y; A mu_k, A S'_k A^T + sigma^2 I),

with ``S'_k = S_k`` for the marginal model and the contracted ``S_{c,k}`` otherwise (the
evidence of each component's own model). It is not an affine map of a standard normal, so it
cannot be a layer of the flow; it is the flow's *source* instead: a draw picks its component with
probability ``r_k`` and is an exact draw of it, and its log-density is a log-sum-exp over the
components. A sampler with a source (:class:`~manifold_ps.flows.AmortizedPosterior`) pulls the
draw ``u_0`` into the whitened coordinates of its single-Gaussian base ``B`` (``z = B^{-1}(u_0)``),
applies its couplings ``T`` there and pushes the result out through ``B``:

    u = B(T(B^{-1}(u_0))),   log q(u | y) = log q_0(u_0 | y) - log|det dT/dz|,

so the untrained sampler (``T`` the identity) draws exactly from ``q_0``, and as the source has no
parameters the reverse-KL loss needs only ``T``'s log-determinant.

Each component is prepared as its :class:`GaussianBase` is (zero-mean, on ``y - A mu_k``), so
one covariance shared by the components is stored once. Preparing costs ``K`` times a Gaussian
base's (fewer distinct covariances are not factorised fewer times); a draw costs one component's
affine map, evaluated only for the measurements that drew that component.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_generator_device
from ..operators import Denoising, Inpainting, LinearOperator
from ..priors.gaussian import GaussianPrior
from ..priors.gaussian_mixture import GaussianMixture
from .gaussian_base import BaseState, GaussianBase, truncate_gaussian

__all__ = ["MixtureBase", "MixtureState"]


@dataclass
class MixtureState:
    """Everything the source needs per measurement (computed once, shared by its draws).

    Attributes:
        parts: The :class:`~manifold_ps.flows.gaussian_base.BaseState` of each component, of the
            shifted measurement ``y - A mu_k`` (so their means are relative to ``mu_k``).
        log_resp: ``log r_k(y)`` ``(B, K)``.
        mean_x: The mixture's posterior mean of ``x`` (under the model the components' bases
            take it under), ``sum_k r_k m_k`` ``(B, d)``.
    """

    parts: list[BaseState]
    log_resp: Tensor
    mean_x: Tensor


class MixtureBase(nn.Module):
    """The posterior over ``u = x_{t_min}`` of a Gaussian mixture: a flow's source distribution.

    Args:
        mixture: The Gaussian mixture (e.g. ``prior.mixture`` of a ``"mixture"`` diffusion prior);
            its SDE gives ``alpha`` and ``sigma``. Copied into buffers, so it is saved with the
            sampler.
        t_min: The time of ``u``.
        marginal: Each component's posterior over ``u`` of the likelihood with the decoder's error
            integrated out, as :class:`GaussianBase` (``marginal=True``) takes it.
        rank: Directions kept per component covariance (the rest isotropic, same trace;
            :func:`~manifold_ps.flows.gaussian_base.truncate_gaussian`); ``None`` keeps them all.

    Shapes:
        ``y``: ``(B, C, V)`` (``(B, C, M)`` for a dense operator's measurements); draws ``u``
        ``(B, n, C, V)``; log-densities ``(B, n)``.

    Example:
        >>> from manifold_ps.operators import Inpainting
        >>> s = GaussianPrior(torch.zeros(1, 2, dtype=torch.float64), 0.01 * torch.eye(2, dtype=torch.float64))
        >>> mix = GaussianMixture(torch.tensor([[[-1.0, -1.0]], [[1.0, 1.0]]], dtype=torch.float64),
        ...                       torch.ones(2, dtype=torch.float64), s)
        >>> source = MixtureBase(mix, 0.02, marginal=True)
        >>> state = source.prepare(torch.tensor([[[0.9, 0.0]]], dtype=torch.float64),
        ...                        Inpainting(torch.tensor([True, False]), sigma=0.1))
        >>> state.log_resp.exp().round(decimals=3)  # the observed entry picks the component at +1
        tensor([[0., 1.]], dtype=torch.float64)
        >>> source.sample(state, 3, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([1, 3, 1, 2])
    """

    means: Tensor
    log_weights: Tensor

    def __init__(self, mixture: GaussianMixture, t_min: float, *, marginal: bool = False, rank: int | None = None
                 ) -> None:
        super().__init__()
        if not isinstance(mixture, GaussianMixture):
            raise ValueError(f"MixtureBase needs a GaussianMixture, got {type(mixture).__name__}")
        if rank is not None and rank < 1:
            raise ValueError(f"rank must be >= 1 or None, got {rank}")
        self.channels = mixture.channels
        self.num_vertices = mixture.num_vertices
        self.t_min = float(t_min)
        self.marginal = bool(marginal)
        self.rank = rank
        parts = []
        for cov in mixture.covariances:
            g = cov if rank is None else truncate_gaussian(cov, rank)
            zero = torch.zeros_like(g.mean)
            parts.append(GaussianBase(GaussianPrior.from_factors(zero, g.eigvecs, g.eigvals, g.floor, g.sde),
                                      self.t_min, marginal=self.marginal))
        self.parts = nn.ModuleList(parts)
        self.register_buffer("means", mixture.means.flatten(1).clone())  # (K, d)
        self.register_buffer("log_weights", mixture.log_weights.clone())
        first = parts[0]
        self.alpha, self.sigma = first.alpha, first.sigma

    @property
    def components(self) -> int:
        """Number ``K`` of components."""
        return int(self.means.shape[0])

    def _part(self, k: int) -> GaussianBase:
        return self.parts[0 if len(self.parts) == 1 else k]  # type: ignore[return-value]

    # -- persistence -----------------------------------------------------------------------------------
    def mixture(self) -> GaussianMixture:
        """The (truncated) mixture as a :class:`~manifold_ps.priors.GaussianMixture`."""
        covs = [p.gaussian() for p in self.parts]  # type: ignore[union-attr]
        return GaussianMixture(self.means.reshape(-1, self.channels, self.num_vertices), self.log_weights.exp(), covs)

    def config(self) -> dict[str, Any]:
        """Plain data (tensors on the CPU) that :meth:`from_config` inverts."""
        return {"type": "MixtureBase", "t_min": self.t_min, "marginal": self.marginal, "rank": self.rank,
                "channels": self.channels, "means": self.means.cpu(), "log_weights": self.log_weights.cpu(),
                "parts": [p.config() for p in self.parts]}  # type: ignore[union-attr]

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> MixtureBase | None:
        """Rebuild a source saved by :meth:`config` (``None`` -> ``None``)."""
        if config is None:
            return None
        if config.get("type") != "MixtureBase":
            raise ValueError(f"unknown source type {config.get('type')!r}")
        covs = []
        for part in config["parts"]:
            base = GaussianBase.from_config(part)
            assert base is not None
            covs.append(base.gaussian())
        channels = int(config["channels"])
        means = torch.as_tensor(config["means"])
        mix = GaussianMixture(means.reshape(means.shape[0], channels, -1), torch.as_tensor(config["log_weights"]).exp(),
                              covs)
        # the parts are stored truncated already: rebuild them as they are, recording the rank
        source = cls(mix, float(config["t_min"]), marginal=bool(config["marginal"]))
        source.rank = config.get("rank")
        return source

    # -- per-measurement factorisation -------------------------------------------------------------------
    def _shifts(self, operator: nn.Module) -> Tensor:
        """``A mu_k`` as each component's base subtracts it: ``(K, C, V)`` for masking and denoising
        (whose unmeasured entries the bases ignore), ``(K, C, M)`` for a dense operator."""
        means = self.means.reshape(-1, self.channels, self.num_vertices)
        if isinstance(operator, (Inpainting, Denoising)):
            return means
        return torch.cat([operator.A(m[None]) for m in means])

    @torch.no_grad()
    def prepare(self, y: Tensor, operator: nn.Module, *, factor: bool = True) -> MixtureState:
        """Every component's posterior of every measurement, and the responsibilities.

        Args:
            y: Measurements ``(B, C, V)`` (``(B, C, M)`` for a dense operator).
            operator: As for :meth:`GaussianBase.prepare`.
            factor: Also compute the components' covariance factors (``False``: the means and
                responsibilities only).
        """
        if not isinstance(operator, LinearOperator):
            raise ValueError(f"the mixture source needs a linear operator, not {type(operator).__name__}")
        dt = self.means.dtype
        y = y.to(device=self.means.device, dtype=dt)
        shifts = self._shifts(operator.to(self.means.device)).to(dt)
        parts = [self._part(k).prepare(y - shifts[k], operator, factor=factor) for k in range(self.components)]
        evidence = torch.stack([p.log_evidence for p in parts], dim=-1)  # (B, K)
        log_resp = torch.log_softmax(evidence + self.log_weights, dim=-1)
        means = torch.stack([self.means[k] + p.mean_x for k, p in enumerate(parts)], dim=1)  # (B, K, d)
        mean_x = (log_resp.exp()[..., None] * means).sum(1)
        return MixtureState(parts, log_resp, mean_x)

    # -- draws and density ------------------------------------------------------------------------------
    def _offset(self, k: int) -> Tensor:
        """``a mu_k``: where component ``k``'s zero-mean base is centred over ``u`` ``(d,)``."""
        return self.alpha * self.means[k]

    @torch.no_grad()
    def sample(self, state: MixtureState, n: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
        """Exact draws of ``u`` ``(B, n, C, V)`` (in the source's dtype).

        Each draw's component is drawn from ``r_k(y)``, then its standard normal coordinates; a
        component's map is evaluated for the measurements that drew it only.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if state.parts[0].logdet is None:
            raise ValueError("this MixtureState holds the means only: prepare it with factor=True")
        check_generator_device(generator, self.means.device)
        b, d = state.log_resp.shape[0], self.means.shape[1]
        choice = torch.multinomial(state.log_resp.exp(), n, replacement=True, generator=generator)  # (B, n)
        v = torch.randn(b, n, self.channels, self.num_vertices, generator=generator, device=self.means.device,
                        dtype=self.means.dtype)
        out = torch.zeros(b, n, d, device=self.means.device, dtype=self.means.dtype)
        for k in range(self.components):
            keep = choice == k
            rows = keep.any(1).nonzero()[:, 0]
            if rows.numel() == 0:
                continue
            u, _ = self._part(k).call_and_ladj(v.index_select(0, rows), state.parts[k].select(rows))
            u = u.reshape(rows.shape[0], n, d) + self._offset(k)
            out[rows] = torch.where(keep[rows][..., None], u, out[rows])
        return out.reshape(b, n, self.channels, self.num_vertices)

    def log_prob(self, u: Tensor, state: MixtureState) -> Tensor:
        """``log q_0(u | y)`` ``(B, n, C, V) -> (B, n)`` (differentiable in ``u``)."""
        if state.parts[0].logdet is None:
            raise ValueError("this MixtureState holds the means only: prepare it with factor=True")
        b, n = u.shape[:2]
        flat = u.reshape(b, n, -1).to(self.means.dtype)
        d = flat.shape[-1]
        terms = []
        for k in range(self.components):
            shifted = (flat - self._offset(k)).reshape(u.shape)
            v, ladj = self._part(k).inverse_and_ladj(shifted, state.parts[k])
            v = v.reshape(b, n, d)
            terms.append(-0.5 * v.square().sum(-1) - 0.5 * d * math.log(2 * math.pi) + ladj)
        return torch.logsumexp(torch.stack(terms, -1) + state.log_resp[:, None], dim=-1).to(u.dtype)

    def extra_repr(self) -> str:
        return (f"components={self.components}, covariances={len(self.parts)}, t_min={self.t_min}, "
                f"rank={self.rank}, marginal={self.marginal}")

