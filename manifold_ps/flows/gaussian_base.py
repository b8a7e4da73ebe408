"""The Gaussian posterior over ``u = x_{t_min}`` as the affine base of a decoded flow.

A decoded sampler draws a latent ``u`` that plays the role of ``x_{t_min}`` and returns
``x = D(u, t_min)``, the prior's Tweedie denoiser. Under a Gaussian ``N(mu, S)`` (spectral form
``S = f I + Q diag(lam - f) Q^T``, a :class:`~manifold_ps.priors.GaussianPrior`) everything of
this model is linear and closed-form, with ``a = alpha(t_min)`` and ``s = sigma(t_min)``:

    u ~ N(a mu, a^2 S + s^2 I),    D(u) = mu + K (u - a mu),    K = a S (a^2 S + s^2 I)^{-1},

so ``x = D(u)`` has the *contracted* prior ``N(mu, S_c)`` with eigenvalues
``lam_c = a^2 lam^2 / (a^2 lam + s^2)``. For masking with noise ``sigma`` the posterior of ``x``
under ``S_c`` is ``N(m, C)`` with ``C = diag(s_x^2) + (b U) K_c^{-1} (b U)^T`` (Woodbury with the
``r x r`` capacitance ``K_c = I + U^T W U``, ``U = Q diag(lam_c - f_c)^{1/2}``,
``W = observed / (sigma^2 + f_c)``). :class:`GaussianBase` maps ``v ~ N(0, I)`` to

    u = a mu + K^{-1} (m - mu + F v),    F = diag(s_x) (I + Q_P (J - I) Q_P^T),

a square factor ``F F^T = C``: with ``P = diag(b / s_x) U K_c^{-T/2}``, ``Q_P = diag(b / s_x) Q
L_H^{-T}`` is an orthonormal basis of its columns (``L_H`` the Cholesky factor of
``H = I / f_c - Q^T W Q``) and ``J`` the Cholesky factor of ``I + R R^T`` where ``P = Q_P R``.
Hence ``log|det dU/dv| = sum log s_x + sum log diag J - log det K``, and the inverse is as cheap.
The decoded draws ``D(u)`` are then exactly the posterior under the contracted prior, which is
the model's own posterior when the teacher is this Gaussian.

With ``marginal=True`` the base is instead the exact posterior of ``u`` when the decoder's
error ``x - D(u) ~ N(0, S - S_c)`` is integrated out of the likelihood (the model of
``likelihood="marginal"`` in :class:`~manifold_ps.flows.AmortizedPosterior`): ``u = a x + s e``
with ``x`` from the posterior ``N(m, C)`` under ``S`` itself, so

    u ~ N(a m, a^2 C + s^2 I),   a^2 C + s^2 I = diag(a^2 s_x^2 + s^2) + (a b U) K^{-1} (a b U)^T,

the same low-rank-plus-diagonal form (now with ``S``'s eigenvalues, no contraction), factorised
the same way with ``u = a m + F v`` and ``log|det| = sum log std + sum log diag J``. Completing
``D(u)`` by the error's posterior given ``y`` then draws exactly from ``N(m, C)`` under this
Gaussian.

The per-measurement cost is ``O(m r^2 + r^3)`` (``m`` missing entries, rank ``r``); a draw costs
``O(d r)``.

**Any other linear operator** whose parameters the batch shares (blur, downsampling) takes a dense
path: the posterior covariance ``C`` (under ``S_c``, or ``a^2 C + s^2 I`` over ``u`` for a
marginal base) is formed by :class:`~manifold_ps.priors.LinearGaussianPosterior` and factorised
once per operator, ``C = L L^T`` with ``L`` lower triangular; then ``u = mean_u + K^{-1} L v``
(``u = a m + L v`` marginally) and ``log|det| = sum log diag L - log det K``. It costs ``O(d^3)``
once per operator (kept for the next call with the same operator) and ``O(d^2)`` per draw, so it
is limited to ``d <= DENSE_LIMIT`` signal entries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..operators import Denoising, Inpainting, LinearOperator
from ..priors.gaussian import GaussianPrior
from ..priors.gaussian_posterior import LinearGaussianPosterior
from ..priors.sde import VPSDE

__all__ = ["GaussianBase", "BaseState", "truncate_gaussian", "DENSE_LIMIT", "GRAM_CHUNK"]

DENSE_LIMIT = 4096
"""Most signal entries ``C * V`` for the dense path (operators other than masking and denoising):
its ``(d, d)`` factor is formed and factorised once per operator."""

GRAM_CHUNK = 1 << 22
"""Most entries of the rows gathered at once (masks x rows x rank) to form the masks' Grams."""


def truncate_gaussian(gaussian: GaussianPrior, rank: int) -> GaussianPrior:
    """The Gaussian with its top ``rank`` directions kept and the rest isotropic (same trace).

    Args:
        gaussian: A prior whose ``eigvals`` are sorted in descending order (as :meth:`GaussianPrior.fit`
            returns them).
        rank: Directions to keep (``1 <= rank``; a larger value returns ``gaussian`` unchanged).

    Returns:
        A :class:`~manifold_ps.priors.GaussianPrior` of rank ``min(rank, gaussian.rank)``.

    Example:
        >>> lam = torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)
        >>> g = GaussianPrior.from_factors(torch.zeros(1, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64), lam)
        >>> t = truncate_gaussian(g, 1)
        >>> t.rank, float(t.floor)
        (1, 1.5)
    """
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if rank >= gaussian.rank:
        return gaussian
    lam = gaussian.eigvals
    if bool((lam[1:] > lam[:-1]).any()):
        raise ValueError("truncate_gaussian needs eigenvalues in descending order")
    dropped = lam[rank:].sum() + (gaussian.num_dims - gaussian.rank) * gaussian.floor
    floor = dropped / (gaussian.num_dims - rank)
    return GaussianPrior.from_factors(gaussian.mean, gaussian.eigvecs[:, :rank], lam[:rank], floor, gaussian.sde,
                                      fit_info={**gaussian.fit_info, "truncated_to": rank})


@dataclass
class BaseState:
    """Everything the base needs per measurement (computed once, shared by its draws).

    Attributes:
        mean_x: Posterior mean of ``x`` under the contracted prior (under ``S`` for a marginal
            base) ``(B, d)``.
        mean_u: ``D^{-1}(mean_x)``, the location of the base ``(B, d)``.
        std: Diagonal part ``s_x`` of the factor ``(B, d)``.
        ratio: ``b / s_x`` ``(B, d)``.
        chol_h: ``L_H`` ``(B, r, r)``.
        chol_j: ``J`` ``(B, r, r)``.
        logdet: ``log|det du/dv|`` ``(B,)``.
        chol: The dense path's lower-triangular factor ``L`` ``(d, d)``, shared by the batch (then
            ``std``, ``ratio``, ``chol_h`` and ``chol_j`` are ``None``); ``None`` on the
            masking / denoising path.
        log_evidence: ``log p(y)`` of the measured entries under the Gaussian the posterior is
            taken under (``S``, or ``S_c`` but for a marginal base) ``(B,)``: the weight of this
            Gaussian among a mixture's components (:class:`~manifold_ps.flows.MixtureBase`).
        source: The :class:`~manifold_ps.flows.MixtureState` of a sampler whose flow starts from
            a mixture's posterior (set by :meth:`~manifold_ps.flows.AmortizedPosterior.prepare_base`),
            else ``None``.

    The fields after ``mean_u`` but ``log_evidence`` are ``None`` when only the means were computed.
    """

    mean_x: Tensor
    mean_u: Tensor
    std: Tensor | None = None
    ratio: Tensor | None = None
    chol_h: Tensor | None = None
    chol_j: Tensor | None = None
    logdet: Tensor | None = None
    chol: Tensor | None = None
    log_evidence: Tensor | None = None
    source: Any = None

    def select(self, rows: Tensor) -> BaseState:
        """The state of the measurements ``rows`` (indices into the batch); a shared dense factor
        and the ``source`` are kept as they are."""
        def pick(value: Tensor | None) -> Tensor | None:
            return None if value is None else value.index_select(0, rows)

        return BaseState(pick(self.mean_x), pick(self.mean_u), pick(self.std), pick(self.ratio), pick(self.chol_h),
                         pick(self.chol_j), pick(self.logdet), self.chol, pick(self.log_evidence), self.source)


class GaussianBase(nn.Module):
    """Affine base ``v -> u`` drawing exactly from the Gaussian posterior over ``u = x_{t_min}``.

    Args:
        gaussian: The Gaussian of the prior's training signals (its SDE gives ``alpha`` and
            ``sigma``); kept as buffers, so it is saved with the sampler. Masking and denoising
            operators take the low-rank path, any other linear operator shared by the batch the
            dense one (see the module docstring).
        t_min: The time of ``u`` (the decoder's time).
        marginal: The posterior over ``u`` under the likelihood with the decoder's error
            integrated out (see the module docstring), instead of the one of ``y`` given ``D(u)``.

    Shapes:
        ``y``: ``(B, C, V)``; ``v``, ``u``: ``(B, n, C, V)``; log-determinants ``(B,)``.

    Example:
        >>> from manifold_ps.operators import Inpainting
        >>> g = GaussianPrior(torch.zeros(1, 4, dtype=torch.float64), torch.eye(4, dtype=torch.float64))
        >>> base = GaussianBase(g, 0.02)
        >>> op = Inpainting(torch.tensor([True, False, True, True]), sigma=0.1)
        >>> state = base.prepare(torch.zeros(2, 1, 4, dtype=torch.float64), op)
        >>> u, ladj = base.call_and_ladj(torch.randn(2, 3, 1, 4, dtype=torch.float64), state)
        >>> u.shape, ladj.shape
        (torch.Size([2, 3, 1, 4]), torch.Size([2, 3]))
    """

    mean: Tensor
    eigvecs: Tensor
    eigvals: Tensor
    floor: Tensor

    def __init__(self, gaussian: GaussianPrior, t_min: float, *, marginal: bool = False) -> None:
        super().__init__()
        if not 0.0 < float(t_min) < gaussian.sde.T:
            raise ValueError(f"t_min must lie in (0, {gaussian.sde.T}), got {t_min}")
        floor = gaussian.floor
        if gaussian.rank == gaussian.num_dims:
            # Q is square: any floor gives the same covariance; one below every eigenvalue keeps H definite
            floor = 0.5 * gaussian.eigvals.min()
        if not float(floor) > 0 or not float(gaussian.eigvals.min()) > 0:
            raise ValueError("the Gaussian base needs a positive definite covariance (fit with a ridge)")
        self.channels = gaussian.channels
        self.num_vertices = gaussian.num_vertices
        self.t_min = float(t_min)
        self.marginal = bool(marginal)
        self.sde_config = gaussian.sde.config()
        self.register_buffer("mean", gaussian.mean.flatten().clone())
        self.register_buffer("eigvecs", gaussian.eigvecs.clone())
        self.register_buffer("eigvals", gaussian.eigvals.clone())
        self.register_buffer("floor", torch.as_tensor(floor, dtype=gaussian.mean.dtype).clone())
        sde = gaussian.sde
        t = torch.tensor(self.t_min, dtype=torch.float64)
        self.alpha = float(sde.alpha(t))
        self.sigma = float(sde.std(t))
        self._dense_cache: tuple[Any, LinearGaussianPosterior, Tensor] | None = None

    # -- construction and persistence ----------------------------------------------------------
    def gaussian(self) -> GaussianPrior:
        """The Gaussian (with the floor the base uses) as a :class:`~manifold_ps.priors.GaussianPrior`."""
        sde = VPSDE(self.sde_config["beta_min"], self.sde_config["beta_max"])
        return GaussianPrior.from_factors(self.mean.reshape(self.channels, self.num_vertices), self.eigvecs,
                                          self.eigvals, self.floor, sde)

    def config(self) -> dict[str, Any]:
        """Plain data (tensors on the CPU) that :meth:`from_config` inverts."""
        return {"type": "GaussianBase", "t_min": self.t_min, "marginal": self.marginal, "channels": self.channels,
                "sde": dict(self.sde_config),
                "mean": self.mean.cpu(), "eigvecs": self.eigvecs.cpu(), "eigvals": self.eigvals.cpu(),
                "floor": self.floor.cpu()}

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> GaussianBase | None:
        """Rebuild a base saved by :meth:`config` (``None`` -> ``None``)."""
        if config is None:
            return None
        if config.get("type") != "GaussianBase":
            raise ValueError(f"unknown base type {config.get('type')!r}")
        sde_cfg = {k: v for k, v in config["sde"].items() if k != "type"}
        channels = int(config["channels"])
        mean = torch.as_tensor(config["mean"])
        g = GaussianPrior.from_factors(mean.reshape(channels, -1), torch.as_tensor(config["eigvecs"]),
                                       torch.as_tensor(config["eigvals"]), torch.as_tensor(config["floor"]),
                                       VPSDE(**sde_cfg))
        return cls(g, float(config["t_min"]), marginal=bool(config.get("marginal", False)))

    # -- spectral helpers -----------------------------------------------------------------------
    def _spectral(self, v: Tensor, on: Tensor, off: Tensor) -> Tensor:
        """``g(S) v`` with ``g`` = ``on`` on the explicit directions and ``off`` elsewhere: ``(..., d)``."""
        return off * v + ((v @ self.eigvecs) * (on - off)) @ self.eigvecs.T

    def _decoder_gain(self) -> tuple[Tensor, Tensor]:
        """Eigenvalues of ``K = a S (a^2 S + s^2 I)^{-1}`` on the directions and off them."""
        a, s2 = self.alpha, self.sigma**2
        return (a * self.eigvals / (a * a * self.eigvals + s2), a * self.floor / (a * a * self.floor + s2))

    def _contracted(self) -> tuple[Tensor, Tensor]:
        """Eigenvalues ``lam_c`` and floor ``f_c`` of the prior of ``x = D(u)``."""
        on, off = self._decoder_gain()
        return on * self.alpha * self.eigvals, off * self.alpha * self.floor

    def decoder_std(self) -> tuple[Tensor, Tensor]:
        """Square roots of the eigenvalues of ``Cov[x_0 | x_{t_min}]`` (on, off the directions)."""
        a, s2 = self.alpha, self.sigma**2
        return ((self.eigvals * s2 / (a * a * self.eigvals + s2)).sqrt(),
                (self.floor * s2 / (a * a * self.floor + s2)).sqrt())

    def decoder_error(self) -> GaussianPrior:
        """The Gaussian ``N(0, S - S_c)`` of the decoder's error ``x_0 - E[x_0 | x_{t_min}]``.

        Its covariance has the eigenvectors of ``S`` and the eigenvalues ``lam s^2 / (a^2 lam + s^2)``
        (the squares of :meth:`decoder_std`); it does not depend on ``u``.
        """
        on, off = self.decoder_std()
        sde = VPSDE(self.sde_config["beta_min"], self.sde_config["beta_max"])
        zero = torch.zeros(self.channels, self.num_vertices, dtype=self.mean.dtype, device=self.mean.device)
        return GaussianPrior.from_factors(zero, self.eigvecs, on.square(), off.square(), sde)

    def decoder_noise(self, shape: tuple[int, ...], *, generator: torch.Generator | None = None) -> Tensor:
        """Draws of ``x_0 - E[x_0 | x_{t_min}]`` under the Gaussian: ``shape + (C, V)``.

        Added to decoded draws, they restore the spread of ``x`` given ``u`` that the denoiser
        removes (exactly so when the teacher is this Gaussian).
        """
        e = torch.randn(*shape, self.mean.shape[0], generator=generator, device=self.mean.device,
                        dtype=self.mean.dtype)
        on, off = self.decoder_std()
        return self._spectral(e, on, off).reshape(*shape, self.channels, self.num_vertices)

    def _ratio_gram(self, gram_missing: Tensor, sigma2: float) -> Tensor:
        """``H = Q^T diag(ratio^2) Q`` of the marginal base from ``Q^T diag(missing) Q`` ``(U, r, r)``.

        Its ``ratio = a b / std`` takes one value on observed entries and one on missing ones, and
        ``Q^T diag(observed) Q = I - Q^T diag(missing) Q``.
        """
        a2, s2, f = self.alpha**2, self.sigma**2, self.floor
        c = sigma2 + f
        r_obs = a2 * (sigma2 / c) ** 2 / (a2 * f * sigma2 / c + s2)
        r_miss = a2 / (a2 * f + s2)
        eye = torch.eye(gram_missing.shape[-1], dtype=gram_missing.dtype, device=gram_missing.device)
        return r_miss * eye + (r_obs - r_miss) * (eye - gram_missing)

    def _missing_gram(self, observed: Tensor) -> Tensor:
        """``Q^T diag(missing) Q`` for every mask ``observed`` ``(U, d)`` -> ``(U, r, r)``.

        Each Gram is summed over the smaller side of its mask (``I - Q^T diag(observed) Q`` when
        most entries are missing, as ``Q^T Q = I``), over rows gathered and zero-padded to the
        batch's largest side, at most ``GRAM_CHUNK`` gathered entries at a time.
        """
        q = self.eigvecs
        d, r = q.shape
        use_obs = (~observed).sum(1) * 2 > d
        side = torch.where(use_obs[:, None], observed, ~observed)
        count = side.sum(1)
        width = max(int(count.max()), 1)
        # the indices of each side's entries first (a stable sort keeps them in order), zero-padded
        order = torch.argsort((~side).to(torch.int8), dim=1, stable=True)[:, :width]
        valid = (torch.arange(width, device=q.device) < count[:, None]).to(q.dtype)
        per = max(1, GRAM_CHUNK // (width * r))
        grams = []
        for start in range(0, observed.shape[0], per):
            rows = q[order[start:start + per]] * valid[start:start + per, :, None]  # (u, width, r)
            grams.append(rows.mT @ rows)
        gram = torch.cat(grams)
        eye = torch.eye(r, dtype=q.dtype, device=q.device)
        return torch.where(use_obs[:, None, None], eye - gram, gram)

    def _location(self, mean_x: Tensor) -> Tensor:
        """The base's location ``u`` for the posterior mean ``mean_x`` of ``x`` ``(B, d)``: ``a m``
        for a marginal base, else ``D^{-1}(m) = a mu + K^{-1} (m - mu)``."""
        if self.marginal:
            return self.alpha * mean_x
        on, off = self._decoder_gain()
        return self.alpha * self.mean + self._spectral(mean_x - self.mean, 1.0 / on, 1.0 / off)

    # -- per-measurement factorisation -------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, y: Tensor, operator: nn.Module, *, factor: bool = True) -> BaseState:
        """Factorise the posterior of every measurement (distinct masks factorised once each, all
        in one batched call).

        Args:
            y: Measurements ``(B, C, V)`` (``(B, C, M)`` for an operator with ``M`` outputs).
            operator: :class:`~manifold_ps.operators.Inpainting` (one mask or one per row) or
                :class:`~manifold_ps.operators.Denoising`; or any other
                :class:`~manifold_ps.operators.LinearOperator` whose parameters the batch shares
                (the dense path); ``sigma > 0``.
            factor: Also compute the covariance factor (``False``: the means only, e.g. for a
                flow's condition; the other fields are then ``None``).

        Returns:
            The :class:`BaseState` of the batch.
        """
        if not isinstance(operator, LinearOperator):
            raise ValueError(f"the Gaussian base needs a linear operator, not {type(operator).__name__}: "
                             "use the reconstruction base for it (flow.base='fill')")
        if not operator.sigma > 0:
            raise ValueError("the Gaussian base needs measurement noise sigma > 0")
        if not isinstance(operator, (Inpainting, Denoising)):
            return self._prepare_dense(y, operator, factor=factor)
        if y.ndim != 3 or y.shape[1:] != (self.channels, self.num_vertices):
            raise ValueError(f"y must have shape (B, {self.channels}, {self.num_vertices}), got {tuple(y.shape)}")
        dev, dt = self.mean.device, self.mean.dtype
        b, d, r = y.shape[0], self.mean.shape[0], self.eigvals.shape[0]
        if isinstance(operator, Inpainting):
            mask = operator.mask.to(dev).reshape(-1, self.num_vertices)
        else:
            mask = torch.ones(1, self.num_vertices, dtype=torch.bool, device=dev)
        if mask.shape[0] not in (1, b):
            raise ValueError(f"the operator holds {mask.shape[0]} masks for {b} measurements")
        observed = mask[:, None, :].expand(-1, self.channels, -1).reshape(mask.shape[0], -1).expand(b, -1)
        unique, inverse = torch.unique(observed, dim=0, return_inverse=True)
        sigma2 = float(operator.sigma) ** 2
        # the prior of x the posterior is taken under: S itself (marginal) or the contracted S_c
        lam_c, f_c = (self.eigvals, self.floor) if self.marginal else self._contracted()
        excess = (lam_c - f_c).clamp_min(0.0)
        root = excess.sqrt()
        c = sigma2 + f_c
        eye = torch.eye(r, dtype=dt, device=dev)
        resid = (y.to(device=dev, dtype=dt).flatten(1) - self.mean) * observed.to(dt)
        # every distinct mask at once: (U, r, r) Grams and Cholesky factors
        gram_missing = self._missing_gram(unique)
        qwq = (eye - gram_missing) / c  # Q^T W Q
        lk = torch.linalg.cholesky(eye + root[:, None] * qwq * root[None, :])
        # posterior mean under the contracted prior: mu + S_c (W r - W U K^{-1} U^T W r)
        wr = resid / c
        lk_rows = lk[inverse]
        half = torch.linalg.solve_triangular(lk_rows, ((wr @ self.eigvecs) * root)[..., None], upper=False)
        inner = torch.linalg.solve_triangular(lk_rows.mT, half, upper=True)[..., 0]
        g = wr - observed.to(dt) / c * ((inner * root) @ self.eigvecs.T)
        mean_x = self.mean + self._spectral(g, lam_c, f_c)
        # log N(y; A mu, G), G = c I + (Q_o root)(Q_o root)^T on the observed entries (Woodbury)
        count = observed.to(dt).sum(-1)
        maha = (resid * wr).sum(-1) - half[..., 0].square().sum(-1)
        logdet_g = count * torch.log(c) + 2 * torch.log(torch.diagonal(lk, dim1=-2, dim2=-1)).sum(-1)[inverse]
        log_evidence = -0.5 * (maha + logdet_g + count * math.log(2 * math.pi))
        chol_h = chol_j = None
        if factor:
            lh = torch.linalg.cholesky(self._ratio_gram(gram_missing, sigma2) if self.marginal else eye / f_c - qwq)
            x = torch.linalg.solve_triangular(lk, root[:, None] * lh, upper=False)
            chol_h = lh[inverse]
            chol_j = torch.linalg.cholesky(eye + x.mT @ x)[inverse]
        on, off = self._decoder_gain()
        mean_u = self._location(mean_x)
        if not factor:
            return BaseState(mean_x, mean_u, log_evidence=log_evidence)
        std = torch.where(observed, (f_c * sigma2 / c).sqrt(), f_c.sqrt()).to(dt)
        beta = torch.where(observed, sigma2 / c, torch.ones_like(std))
        logdet_k = torch.log(on).sum() + (d - r) * torch.log(off)
        if self.marginal:  # the factor of a^2 C + s^2 I: diagonal a^2 s_x^2 + s^2, ratio a b / std
            std = (self.alpha**2 * std.square() + self.sigma**2).sqrt()
            logdet = torch.log(std).sum(-1) + torch.log(torch.diagonal(chol_j, dim1=-2, dim2=-1)).sum(-1)
            return BaseState(mean_x, mean_u, std, self.alpha * beta / std, chol_h, chol_j, logdet,
                             log_evidence=log_evidence)
        logdet = (torch.log(std).sum(-1) + torch.log(torch.diagonal(chol_j, dim1=-2, dim2=-1)).sum(-1)
                  - logdet_k)
        return BaseState(mean_x, mean_u, std, beta / std, chol_h, chol_j, logdet, log_evidence=log_evidence)

    def _dense_posterior(self, operator: LinearOperator) -> tuple[LinearGaussianPosterior, Tensor]:
        """The posterior of ``x`` (under ``S_c``, or ``S`` for a marginal base) for ``operator`` and
        the lower-triangular factor ``L`` of the covariance of ``u - mean_u`` before ``K^{-1}``:
        ``C`` (``a^2 C + s^2 I`` for a marginal base). Kept for the next call with the same operator."""
        key = (type(operator).__name__, repr(operator.config()), self.mean.device, self.mean.dtype,
               self.eigvecs.data_ptr(), self.eigvecs._version, self.floor._version, self.eigvals._version)
        if self._dense_cache is not None and self._dense_cache[0] == key:
            return self._dense_cache[1], self._dense_cache[2]
        d = self.mean.shape[0]
        if d > DENSE_LIMIT:
            raise ValueError(f"the Gaussian base's dense path ({type(operator).__name__}) factorises a ({d}, {d}) "
                             f"covariance, more than DENSE_LIMIT = {DENSE_LIMIT} entries: use flow.base='fill'")
        lam, f = (self.eigvals, self.floor) if self.marginal else self._contracted()
        sde = VPSDE(self.sde_config["beta_min"], self.sde_config["beta_max"])
        prior_x = GaussianPrior.from_factors(self.mean.reshape(self.channels, self.num_vertices), self.eigvecs,
                                             lam, f, sde)
        post = LinearGaussianPosterior(prior_x, operator.to(self.mean.device))
        if post.batch != 1:
            raise ValueError(f"the Gaussian base's dense path needs one {type(operator).__name__} shared by the batch")
        cov = post.covariance()[0]
        if self.marginal:
            cov = self.alpha**2 * cov + self.sigma**2 * torch.eye(d, dtype=cov.dtype, device=cov.device)
        chol, info = torch.linalg.cholesky_ex(cov)
        if int(info) != 0:
            raise ValueError(f"the Gaussian posterior's covariance under {type(operator).__name__} is not positive "
                             "definite in this precision: build the base in float64")
        self._dense_cache = (key, post, chol)
        return post, chol

    def _prepare_dense(self, y: Tensor, operator: LinearOperator, *, factor: bool) -> BaseState:
        """:meth:`prepare` for an operator other than masking and denoising (one factor for the batch)."""
        if y.ndim != 3 or y.shape[1] != self.channels:
            raise ValueError(f"y must have shape (B, {self.channels}, M), got {tuple(y.shape)}")
        post, chol = self._dense_posterior(operator)
        y = y.to(device=self.mean.device, dtype=self.mean.dtype)
        mean_x = post.mean(y).flatten(1)
        log_evidence = post.log_evidence(y)
        on, off = self._decoder_gain()
        mean_u = self._location(mean_x)
        if not factor:
            return BaseState(mean_x, mean_u, log_evidence=log_evidence)
        logdet = torch.log(torch.diagonal(chol)).sum()
        if not self.marginal:
            logdet = logdet - (torch.log(on).sum() + (mean_x.shape[1] - on.shape[0]) * torch.log(off))
        return BaseState(mean_x, mean_u, logdet=logdet.expand(y.shape[0]), chol=chol, log_evidence=log_evidence)

    def _apply(self, fn: Any, recurse: bool = True) -> GaussianBase:  # .to(), .double(), ...: a new factor
        self._dense_cache = None
        return super()._apply(fn, recurse)

    # -- the bijection --------------------------------------------------------------------------------
    def _g(self, v: Tensor, state: BaseState, *, inverse: bool) -> Tensor:
        """``(I + Q_P (J^{+-1} - I) Q_P^T) v`` for ``v`` of shape ``(B, n, d)``."""
        p = torch.linalg.solve_triangular(state.chol_h, ((v * state.ratio[:, None]) @ self.eigvecs).mT, upper=False)
        if inverse:
            jp = torch.linalg.solve_triangular(state.chol_j, p, upper=False)
        else:
            jp = state.chol_j @ p
        back = torch.linalg.solve_triangular(state.chol_h.mT, jp - p, upper=True).mT  # (B, n, r)
        return v + state.ratio[:, None] * (back @ self.eigvecs.T)

    def call_and_ladj(self, v: Tensor, state: BaseState) -> tuple[Tensor, Tensor]:
        """``u = mean_u + K^{-1} F v`` and ``log|det du/dv|``.

        Shapes:
            v: ``(B, n, C, V)`` -> u ``(B, n, C, V)``, ladj ``(B, n)``.
        """
        if state.chol_j is None and state.chol is None:
            raise ValueError("this BaseState holds the means only: prepare it with factor=True")
        b, n = v.shape[:2]
        flat = v.reshape(b, n, -1).to(self.mean.dtype)
        if state.chol is not None:
            e = flat @ state.chol.T
        else:
            e = state.std[:, None] * self._g(flat, state, inverse=False)
        if self.marginal:
            u = state.mean_u[:, None] + e
        else:
            on, off = self._decoder_gain()
            u = state.mean_u[:, None] + self._spectral(e, 1.0 / on, 1.0 / off)
        return u.to(v.dtype).reshape(v.shape), state.logdet.to(v.dtype)[:, None].expand(b, n)

    def inverse_and_ladj(self, u: Tensor, state: BaseState) -> tuple[Tensor, Tensor]:
        """``v`` from ``u`` and ``log|det dv/du|``: ``(B, n, C, V) -> (B, n, C, V), (B, n)``."""
        b, n = u.shape[:2]
        flat = u.reshape(b, n, -1).to(self.mean.dtype)
        if self.marginal:
            e = flat - state.mean_u[:, None]
        else:
            on, off = self._decoder_gain()
            e = self._spectral(flat - state.mean_u[:, None], on, off)
        if state.chol is not None:
            d = e.shape[-1]
            v = torch.linalg.solve_triangular(state.chol, e.reshape(-1, d).T, upper=False).T.reshape(e.shape)
        else:
            v = self._g(e / state.std[:, None], state, inverse=True)
        return v.to(u.dtype).reshape(u.shape), -state.logdet.to(u.dtype)[:, None].expand(b, n)

    def extra_repr(self) -> str:
        return (f"t_min={self.t_min}, rank={self.eigvals.shape[0]}, num_dims={self.mean.shape[0]}, "
                f"marginal={self.marginal}")
