"""A trained diffusion prior: a sequence network behind a preconditioned Tweedie denoiser.

:class:`DiffusionPrior` turns a network ``F`` over padded vertex sequences into the denoiser
``D(x_t, t) = E[x_0 | x_t]`` of the VP-SDE ``x_t = alpha x_0 + sigma eps``. With the data mean
``mu`` and scale ``sigma_d`` (per channel) and ``den = sigma^2 + alpha^2 sigma_d^2``:

* ``"edm"`` (default; Karras et al. 2022 written for the VP-SDE):
  ``D = mu + alpha sigma_d^2 / den (x_t - alpha mu) + sigma sigma_d / sqrt(den) F``
  -- a noise-dependent skip, so the network never has to pass the identity through;
* ``"x0"``: ``D = mu + sigma_d F``;
* ``"eps"``: ``F`` predicts the noise, ``D = (x_t - sigma F) / alpha``;
* ``"wiener"``: ``D = W(x_t, t) + c_out(t) F``, where ``W`` is the exact Wiener (Tweedie)
  denoiser of a fitted :class:`~manifold_ps.priors.GaussianPrior` ``N(m, S)`` and ``c_out`` its
  root-mean-square posterior standard deviation per channel (see :meth:`DiffusionPrior.output_scale`).
  ``"edm"`` is the special case ``m = mu``, ``S = sigma_d^2 I``. The network learns only what the
  Gaussian misses; with a network whose output is zero at initialisation (every network of this
  package zero-initialises its last layer) the untrained prior *is* the Gaussian.
* ``"mixture"``: the same with the exact posterior mean of a fitted
  :class:`~manifold_ps.priors.GaussianMixture` as the skip ``W`` and its
  :meth:`~manifold_ps.priors.GaussianMixture.denoising_variance` as ``c_out^2``: the untrained
  prior is the mixture. The prior also carries the single Gaussian (``gaussian``), which the
  flow's Gaussian base and the reports use.

The network always sees the unit-variance input ``(x_t - alpha mu) / sqrt(den)`` in sequence
order -- for ``"wiener"`` and ``"mixture"`` beside the standardised skip ``(W - mu) / sigma_d`` --
optionally with geometry features as extra channels, and the time ``t``. Its output is
zeroed on the padding before returning to natural vertex order.

Training minimises :meth:`DiffusionPrior.dsm_loss`, the denoising error weighted by
``1 / c_out^2`` (``den / (sigma^2 sigma_d^2)`` but for ``"wiener"`` and ``"mixture"``: the EDM weighting, unit-scale
targets at every noise level), with times drawn uniformly in ``log(sigma / alpha)`` (the
distribution the importance-sampled ELBO uses) and stratified over the batch. The likelihood
weighting ``"elbo"`` weights the error by ``alpha^2 / sigma^2`` instead, which under those times
makes the expected loss the ELBO's error integral (see :meth:`DiffusionPrior.dsm_loss`).
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from .._checks import check_generator_device, check_signal
from ..geometry.layout import VertexLayout
from .base import ScorePrior
from .sde import VPSDE, append_dims
from .graph import GraphDenoiser, chebyshev_operator
from .mlp import MLPDenoiser
from .unet import UNet1d

if TYPE_CHECKING:
    from ..geometry import Geometry
    from .gaussian import GaussianPrior
    from .gaussian_mixture import GaussianMixture

__all__ = ["DiffusionPrior", "build_prior", "network_signal_channels", "PRIOR_FORMAT", "PRESETS", "MLP_PRESETS",
           "GRAPH_PRESETS", "TimeSampling", "Weighting", "check_weighting"]

PRIOR_FORMAT = "manifold_ps.prior/1"
"""Value of the ``"format"`` key of a saved prior."""

Parameterization = Literal["edm", "x0", "eps", "wiener", "mixture"]
_PARAMETERIZATIONS = ("edm", "x0", "eps", "wiener", "mixture")
_SKIPPED = ("wiener", "mixture")  # the parameterisations with an exact skip and a network on top
TimeSampling = Literal["log_snr", "uniform", "edm"]
"""Distribution of the training times (see :meth:`DiffusionPrior.sample_times`)."""
Weighting = Literal["edm", "elbo"]
"""Per-time weight of the denoising error (see :meth:`DiffusionPrior.dsm_loss`)."""
_WEIGHTINGS = ("edm", "elbo")

_NETWORKS: dict[str, type[nn.Module]] = {"UNet1d": UNet1d, "MLPDenoiser": MLPDenoiser, "GraphDenoiser": GraphDenoiser}

PRESETS: dict[str, dict[str, Any]] = {
    # a few seconds per hundred steps on a laptop CPU: tests and smoke runs
    "tiny": dict(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention=False),
    # CPU training: the 4-vertex patches make it ~6x faster than a full-resolution first level
    # (measured on the bunny, batch 64: 47 against 8 samples/s on one busy core)
    "cpu": dict(base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1, attention=False, patch_size=4),
    # the GPU configuration (the paper's 1-D DDPM scale)
    "paper": dict(base_channels=64, channel_mults=(1, 2, 2, 4, 4), num_res_blocks=2, attention=True),
}
"""U-Net widths of :func:`build_prior`'s presets."""

MLP_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden=64, depth=2, time_embedding_dim=32),
    # wider than the bunny (1889) and the sphere grid (4140 needs more: override hidden)
    "cpu": dict(hidden=2048, depth=3, time_embedding_dim=128),
    "paper": dict(hidden=4096, depth=6, time_embedding_dim=256),
}
"""Residual-MLP widths of :func:`build_prior`'s presets (``network="mlp"``)."""

GRAPH_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden=16, depth=2, order=2, time_embedding_dim=32),
    # minutes of CPU training: two blocks take twice the steps of four per minute and learn as much per step
    "cpu": dict(hidden=32, depth=2, order=3, time_embedding_dim=128),
    "paper": dict(hidden=128, depth=8, order=4, time_embedding_dim=256),
}
"""Chebyshev graph-network sizes of :func:`build_prior`'s presets (``network="graph"``)."""


class DiffusionPrior(ScorePrior):
    """Diffusion prior over ``(B, C, V)`` vertex signals with a sequence network.

    Args:
        network: Module ``F(seq, t) -> seq`` over ``(B, C_in + k, L)`` inputs and ``(B, C, L)``
            outputs, where ``k`` is the number of geometry features and ``C_in`` is
            :func:`network_signal_channels` (``C``; ``2 C`` for ``"wiener"`` and ``"mixture"``); e.g. :class:`UNet1d`,
            :class:`MLPDenoiser` or :class:`~manifold_ps.priors.GraphDenoiser`. To be saved and
            loaded it needs a ``config()`` method returning its keyword arguments. With
            ``"wiener"`` (``"mixture"``) its output must be zero at initialisation for the untrained
            prior to be the Gaussian (the mixture); the last layer of each of these three is
            zero-initialised.
        layout: Vertex ordering and padding (length ``L`` must suit the network).
        channels: Number of signal channels ``C``.
        sde: The VP-SDE (default ``VPSDE()``).
        parameterization: ``"edm"``, ``"x0"``, ``"eps"``, ``"wiener"`` or ``"mixture"`` (see the module docstring).
        geometry_features: Optional ``(V, k)`` per-vertex features (e.g. Laplacian eigenvectors),
            standardised to unit RMS per column and fed as extra input channels.
        fingerprint: Fingerprint of the geometry the prior is made for (checked on load).
        data_mean: Per-channel data mean ``mu`` (float or ``(C,)``); see :meth:`set_data_statistics`.
        data_std: Per-channel data scale ``sigma_d`` (float or ``(C,)``).
        gaussian: The Gaussian fitted to the training signals, whose Wiener denoiser is the skip of
            ``"wiener"`` (required for ``"wiener"`` and ``"mixture"``, refused otherwise). It
            becomes the submodule ``gaussian``: its buffers are part of the prior's state and file,
            and it keeps its own dtype (float64 is recommended; the denoiser evaluates it in that
            dtype). Its SDE must equal ``sde``.
        mixture: The fitted :class:`~manifold_ps.priors.GaussianMixture` whose posterior mean is
            the skip of ``"mixture"`` (required there, refused otherwise); the submodule
            ``mixture``, kept like ``gaussian``.

    Example:
        >>> layout = VertexLayout(10, multiple=2)
        >>> prior = DiffusionPrior(UNet1d(1, 1, base_channels=8, channel_mults=(1, 2)), layout, channels=1)
        >>> x = torch.randn(3, 1, 10)
        >>> prior.denoise(x, torch.full((3,), 0.5)).shape
        torch.Size([3, 1, 10])
        >>> prior.dsm_loss(x, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3])
    """

    features: Tensor | None
    data_mean: Tensor
    data_std: Tensor

    def __init__(
        self,
        network: nn.Module,
        layout: VertexLayout,
        *,
        channels: int,
        sde: VPSDE | None = None,
        parameterization: Parameterization = "edm",
        geometry_features: Tensor | None = None,
        fingerprint: str = "",
        data_mean: float | Tensor = 0.5,
        data_std: float | Tensor = 0.5,
        gaussian: GaussianPrior | None = None,
        mixture: GaussianMixture | None = None,
    ) -> None:
        super().__init__(sde or (gaussian.sde if gaussian is not None else VPSDE()), channels, layout.num_vertices)
        if parameterization not in _PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be 'edm', 'x0', 'eps', 'wiener' or 'mixture', "
                             f"got {parameterization!r}")
        if (parameterization in _SKIPPED) != (gaussian is not None):
            raise ValueError("parameterizations 'wiener' and 'mixture' need a fitted gaussian (GaussianPrior), "
                             "and only they take one")
        if (parameterization == "mixture") != (mixture is not None):
            raise ValueError("parameterization 'mixture' needs a fitted mixture (GaussianMixture), and only it takes one")
        for name, part in (("gaussian", gaussian), ("mixture", mixture)):
            if part is None:
                continue
            if (part.channels, part.num_vertices) != (self.channels, self.num_vertices):
                raise ValueError(f"{name} is over {part.channels} channels x {part.num_vertices} vertices, "
                                 f"the prior over {self.channels} x {self.num_vertices}")
            if part.sde.config() != self.sde.config():
                raise ValueError(f"{name} has SDE {part.sde}, the prior {self.sde}: they must be equal")
        self.gaussian: GaussianPrior | None = gaussian
        self.mixture: GaussianMixture | None = mixture
        self.network = network
        self.layout = layout
        self.parameterization: Parameterization = parameterization
        self.fingerprint = str(fingerprint)
        k = 0
        features = None
        if geometry_features is not None:
            geometry_features = torch.as_tensor(geometry_features)
            if geometry_features.ndim != 2 or geometry_features.shape[0] != layout.num_vertices:
                raise ValueError(f"geometry_features must have shape ({layout.num_vertices}, k), "
                                 f"got {tuple(geometry_features.shape)}")
            k = geometry_features.shape[1]
            f = geometry_features.to(torch.get_default_dtype())
            f = f / f.square().mean(0, keepdim=True).sqrt().clamp_min(1e-12)
            features = layout.to_sequence(f.T[None])[0]  # (k, L), zero on padding
        self.num_features = k
        self.register_buffer("features", features)
        in_channels = getattr(network, "in_channels", None)
        cond_channels = getattr(network, "cond_channels", 0)
        signal_inputs = network_signal_channels(channels, parameterization)
        if in_channels is not None and in_channels + cond_channels != signal_inputs + k:
            raise ValueError(f"network takes {in_channels} + {cond_channels} input channels, but the prior feeds "
                             f"{signal_inputs} signal + {k} geometry-feature channels"
                             + (" (the noisy signal and its skip's estimate)" if parameterization in _SKIPPED else ""))
        self.register_buffer("data_mean", self._per_channel(data_mean, "data_mean"))
        self.register_buffer("data_std", self._per_channel(data_std, "data_std"))
        if bool((self.data_std <= 0).any()):
            raise ValueError(f"data_std must be positive, got {self.data_std.tolist()}")

    def _per_channel(self, value: float | Tensor, name: str) -> Tensor:
        v = torch.as_tensor(value, dtype=torch.get_default_dtype()).flatten()
        if v.numel() == 1:
            v = v.expand(self.channels)
        if v.numel() != self.channels:
            raise ValueError(f"{name} must be a float or have {self.channels} entries, got {v.numel()}")
        return v.clone()

    @torch.no_grad()
    def set_data_statistics(self, data: Tensor) -> None:
        """Set ``data_mean`` and ``data_std`` (per channel) from training data ``(N, C, V)``."""
        check_signal(data, self.num_vertices, "data", channels=self.channels)
        self.data_mean.copy_(data.mean(dim=(0, 2)).to(self.data_mean))
        self.data_std.copy_(data.std(dim=(0, 2)).clamp_min(1e-3).to(self.data_std))

    # -- denoiser ----------------------------------------------------------------------------------
    def network_output(self, x_in: Tensor, t: Tensor) -> Tensor:
        """Raw network output ``F`` in sequence order, zero on the padding.

        Args:
            x_in: Preconditioned network input in natural order ``(B, C_in, V)`` (``C_in = C``;
                ``2 C`` for ``"wiener"`` and ``"mixture"``, see :func:`network_signal_channels`).
            t: Times ``(B,)``.

        Returns:
            ``(B, C, L)`` with the padded positions exactly zero.
        """
        seq = self.layout.to_sequence(x_in)
        if self.features is not None:
            seq = torch.cat([seq, self.features.to(seq.dtype).expand(seq.shape[0], -1, -1)], dim=1)
        return self.layout.zero_padding(self.network(seq, t))

    def _coefficients(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        alpha = append_dims(self.sde.alpha(t), x.ndim)
        sigma = append_dims(self.sde.std(t), x.ndim)
        mu = self.data_mean.to(x.dtype)[None, :, None]
        sd = self.data_std.to(x.dtype)[None, :, None]
        den = sigma**2 + alpha**2 * sd**2
        return alpha, sigma, mu, sd, den

    def denoise(self, x: Tensor, t: Tensor) -> Tensor:
        """Tweedie denoiser ``E[x_0 | x_t = x]`` through the preconditioned network.

        Shapes:
            x: ``(B, C, V)``; t: ``(B,)``; returns ``(B, C, V)``.
        """
        check_signal(x, self.num_vertices, "x", channels=self.channels)
        t = self._check_t(x, t)
        alpha, sigma, mu, sd, den = self._coefficients(x, t)
        centered = x - alpha * mu
        if self.parameterization in _SKIPPED:
            skip = self.skip(x, t)
            x_in = torch.cat([centered / den.sqrt(), (skip - mu) / sd], dim=1)
            out = self.layout.from_sequence(self.network_output(x_in, t))
            return skip + self.output_scale(x, t) * out
        out = self.layout.from_sequence(self.network_output(centered / den.sqrt(), t))
        if self.parameterization == "edm":
            return mu + (alpha * sd**2 / den) * centered + (sigma * sd / den.sqrt()) * out
        if self.parameterization == "x0":
            return mu + sd * out
        return (x - sigma * out) / alpha

    def _skip_part(self) -> GaussianPrior | GaussianMixture:
        part = self.mixture if self.parameterization == "mixture" else self.gaussian
        if part is None or self.parameterization not in _SKIPPED:
            raise ValueError(f"this {self.parameterization!r} prior has no exact skip (parameterizations 'wiener' "
                             "and 'mixture' only)")
        return part

    def skip(self, x: Tensor, t: Tensor) -> Tensor:
        """The exact denoiser the network corrects: the Gaussian's (``"wiener"``) or the mixture's (``"mixture"``).

        Evaluated in its own dtype and returned in ``x``'s; it is :meth:`denoise` at training step 0.

        Shapes:
            x: ``(B, C, V)``; t: ``(B,)``; returns ``(B, C, V)``.

        Raises:
            ValueError: for a prior without a skip (``"edm"``, ``"x0"``, ``"eps"``).
        """
        part = self._skip_part()
        return part.denoise(x.to(part.dtype), t.to(part.dtype)).to(x.dtype)

    def output_scale(self, x: Tensor, t: Tensor) -> Tensor:
        """The scale ``c_out(t)`` of the network output in the denoiser, per sample and channel.

        For ``"edm"``, ``"x0"`` and ``"eps"`` it is EDM's ``sigma sigma_d / sqrt(sigma^2 + alpha^2
        sigma_d^2)``. For ``"wiener"`` it is the root-mean-square posterior standard deviation of
        the fitted Gaussian ``N(m, S)`` over each channel's vertices,

            c_out^2 = mean_i [S (I + alpha^2 / sigma^2 S)^{-1}]_ii,

        which is the expected squared error per coordinate of the Wiener denoiser on any data with
        mean ``m`` and covariance ``S`` -- in particular on the signals the Gaussian was fitted
        to. So the weighted loss ``|D - x_0|^2 / c_out^2`` of :meth:`dsm_loss` starts at 1 at
        every noise level and reads directly as the error relative to the Gaussian; the
        correction is scaled to what the Gaussian misses (it vanishes like ``sigma / alpha`` as
        the noise does), where EDM's isotropic scale would be too large at small noise whenever
        the spectrum of ``S`` decays. For ``"mixture"`` it is the root of the mixture's
        :meth:`~manifold_ps.priors.GaussianMixture.denoising_variance`.

        Args:
            x: Signals (for the shape, dtype and device) ``(B, C, V)``.
            t: Times ``(B,)``.

        Returns:
            ``(B, C, 1)``.

        Example:
            >>> from manifold_ps.priors import GaussianPrior
            >>> g = GaussianPrior(torch.zeros(1, 4, dtype=torch.float64), torch.eye(4, dtype=torch.float64))
            >>> prior = DiffusionPrior(MLPDenoiser(2, 1, 4, hidden=8, depth=1), VertexLayout(4), channels=1,
            ...                        parameterization="wiener", gaussian=g, data_mean=0.0, data_std=1.0)
            >>> x, t = torch.zeros(2, 1, 4), torch.tensor([0.1, 0.5])
            >>> torch.allclose(prior.output_scale(x, t), prior.sde.std(t)[:, None, None])  # unit S: EDM's
            True
        """
        t = self._check_t(x, t)
        if self.parameterization not in _SKIPPED:
            alpha, sigma, _, sd, den = self._coefficients(x, t)
            return sigma * sd / den.sqrt()
        part = self._skip_part()
        return part.denoising_variance(t.to(part.dtype)).sqrt().to(x.dtype)[..., None]

    # -- training objective ------------------------------------------------------------------------
    def sample_times(self, batch: int, *, t_min: float = 1e-3, t_max: float | None = None,
                     time_sampling: TimeSampling = "log_snr", generator: torch.Generator | None = None,
                     device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Tensor:
        """Training times ``(batch,)`` in ``[t_min, t_max]``, stratified over the batch.

        ``"log_snr"``: uniform in ``log(sigma / alpha)``; ``"uniform"``: uniform in ``t``;
        ``"edm"``: ``log(sigma / alpha) ~ N(-1.2, 1.2^2)`` (Karras et al.), clipped.
        ``t_max`` (default: the SDE's end, 1) narrows the range from above, e.g. to spend no
        steps at noise levels where the Gaussian of ``"wiener"`` is already optimal.

        Raises:
            ValueError: unless ``0 < t_min < t_max <= T``, or for an unknown ``time_sampling``.

        Example:
            >>> prior = DiffusionPrior(MLPDenoiser(1, 1, 4, hidden=8, depth=1), VertexLayout(4), channels=1)
            >>> t = prior.sample_times(64, t_min=0.01, t_max=0.3, generator=torch.Generator().manual_seed(0))
            >>> bool((t >= 0.01).all() and (t <= 0.3).all())
            True
        """
        t_top = self.sde.T if t_max is None else float(t_max)
        if not 0.0 < t_min < t_top <= self.sde.T:
            raise ValueError(f"need 0 < t_min < t_max <= {self.sde.T}, got t_min={t_min}, t_max={t_max}")
        dtype = dtype or torch.get_default_dtype()
        u = (torch.randperm(batch, generator=generator, device=device).to(dtype)
             + torch.rand(batch, generator=generator, device=device, dtype=dtype)) / batch
        lo = torch.tensor(t_min, dtype=dtype, device=device)
        hi = torch.tensor(t_top, dtype=dtype, device=device)
        if time_sampling == "uniform":
            return lo + (hi - lo) * u
        if time_sampling == "log_snr":
            v_lo, v_hi = self.sde.log_snr_inverse(lo), self.sde.log_snr_inverse(hi)
            return self.sde.t_from_log_snr_inverse(v_lo + (v_hi - v_lo) * u).clamp(lo, hi)
        if time_sampling == "edm":
            log_s = -1.2 + 1.2 * math.sqrt(2.0) * torch.erfinv((2 * u - 1).clamp(-1 + 1e-7, 1 - 1e-7))
            return self.sde.t_from_log_snr_inverse(2 * log_s).clamp(lo, hi)
        raise ValueError(f"time_sampling must be 'log_snr', 'uniform' or 'edm', got {time_sampling!r}")

    def dsm_loss(
        self,
        x0: Tensor,
        generator: torch.Generator | None = None,
        *,
        t_min: float = 1e-3,
        t_max: float | None = None,
        time_sampling: TimeSampling = "log_snr",
        weighting: Weighting = "edm",
    ) -> Tensor:
        """Denoising score-matching loss per sample (mean over channels and valid vertices).

        ``weighting="edm"`` divides the error by ``c_out(t)^2`` (:meth:`output_scale`): unit-scale
        targets at every noise level. Outside ``"wiener"`` and ``"mixture"`` that weight is
        ``alpha^2 / sigma^2 + 1 / sigma_d^2``.

        ``weighting="elbo"`` is the likelihood weighting ``alpha^2 / sigma^2``. The error term of
        :meth:`~manifold_ps.priors.ScorePrior.elbo` is ``int beta/sigma^2 * alpha^2 ||x0 - D||^2 /
        sigma^2 dt`` over ``[t_min, t_max]``; the ``"log_snr"`` times have the density
        ``(beta / sigma^2) / (u_hi - u_lo)`` (``u = log(sigma^2 / alpha^2)``), so

            E[loss] * d * (u_hi - u_lo) = that error integral   (d: channels x vertices),

        i.e. the loss is the ELBO's integrand per coordinate, with the constant ``d (u_hi - u_lo)``
        dropped. It is the EDM weight less its floor ``1 / sigma_d^2`` (for ``"wiener"`` with a
        non-singular Gaussian the two also meet as the noise vanishes), so it agrees with
        ``"edm"`` at small noise, the levels the ELBO and DPS lean on, and gives large noise
        levels less weight; the loss stays ``O(1)`` (exactly ``1`` for the denoiser ``x_t /
        alpha``, less for any better one). It needs
        ``time_sampling="log_snr"``: under another density the weight would have to be divided by
        that density (for uniform times by ``sigma^2 / beta``, unbounded at small ``t``, the
        variance the ELBO's importance sampling exists to avoid), so other pairs are refused.

        Args:
            x0: Clean training signals.
            generator: Source of the times and noises.
            t_min: Smallest training time.
            t_max: Largest training time (default: the SDE's end).
            time_sampling: Distribution of the times (see :meth:`sample_times`).
            weighting: ``"edm"`` or ``"elbo"`` (above).

        Returns:
            ``(B,)`` losses ``mean(w(t) (D(x_t, t) - x0)^2)`` with ``w = 1 / c_out(t)^2``
            (``"edm"``) or ``alpha(t)^2 / sigma(t)^2`` (``"elbo"``).

        Raises:
            ValueError: for an unknown ``weighting``, ``"elbo"`` with other times than
                ``"log_snr"``, or as :meth:`sample_times`.

        Shapes:
            x0: ``(B, C, V)``.

        Example:
            >>> prior = DiffusionPrior(MLPDenoiser(1, 1, 4, hidden=8, depth=1), VertexLayout(4), channels=1)
            >>> prior.dsm_loss(torch.rand(3, 1, 4), torch.Generator().manual_seed(0), weighting="elbo").shape
            torch.Size([3])
        """
        check_weighting(weighting, time_sampling)
        check_signal(x0, self.num_vertices, "x0", channels=self.channels)
        check_generator_device(generator, x0.device)
        t = self.sample_times(x0.shape[0], t_min=t_min, t_max=t_max, time_sampling=time_sampling,
                              generator=generator, device=x0.device, dtype=x0.dtype)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        alpha, sigma, _, sd, den = self._coefficients(x0, t)
        xt = alpha * x0 + sigma * noise
        error = self.denoise(xt, t) - x0
        if weighting == "elbo":  # alpha (D - x0) / sigma = eps_hat - eps, as in the ELBO
            return (alpha * error / sigma).square().flatten(1).mean(-1)
        if self.parameterization in _SKIPPED:
            c_out = self.output_scale(x0, t).clamp_min(torch.finfo(x0.dtype).tiny)
        else:
            c_out = sigma * sd / den.sqrt()
        return (error / c_out).square().flatten(1).mean(-1)

    def forward(self, x0: Tensor, generator: torch.Generator | None = None, **kwargs: Any) -> Tensor:
        """Same as :meth:`dsm_loss` (so data-parallel wrappers see a forward call)."""
        return self.dsm_loss(x0, generator, **kwargs)

    # -- persistence -------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Plain-data description (everything but the tensors) used by :meth:`save`."""
        if not hasattr(self.network, "config"):
            raise TypeError(f"{type(self.network).__name__} has no config() method: it cannot be saved")
        return {
            "network_class": type(self.network).__name__ if type(self.network).__name__ in _NETWORKS
            else f"{type(self.network).__module__}.{type(self.network).__qualname__}",
            "network_kwargs": dict(self.network.config()),
            "sde": self.sde.config(),
            "parameterization": self.parameterization,
            "channels": self.channels,
            "num_vertices": self.num_vertices,
            "layout_length": self.layout.length,
            "num_features": self.num_features,
            "fingerprint": self.fingerprint,
            **({"gaussian_fit_info": self.gaussian.fit_info} if self.gaussian is not None else {}),
            **({"mixture_fit_info": self.mixture.fit_info} if self.mixture is not None else {}),
        }

    def saved_state(self) -> dict[str, Any]:
        """What :meth:`save` writes: the format tag, :meth:`config` and the weights (on the CPU).

        A decoded posterior sampler embeds it to carry its decoder (see :meth:`from_saved`).
        """
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        return {"format": PRIOR_FORMAT, **self.config(), "state_dict": state}

    def save(self, path: str | Path) -> Path:
        """Write the prior (configuration and weights) atomically to ``path``."""
        from ..training import save_checkpoint

        return save_checkpoint(self.saved_state(), path)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        geometry: Geometry | None = None,
        fingerprint: str | None = None,
        num_vertices: int | None = None,
        map_location: str | torch.device | None = "cpu",
    ) -> DiffusionPrior:
        """Load a prior written by :meth:`save`, checking that it fits the given geometry.

        Args:
            path: The file.
            geometry: The geometry the prior will be used on (its fingerprint and vertex count
                are checked).
            fingerprint: A geometry fingerprint to check instead of ``geometry``.
            num_vertices: A vertex count to check instead of ``geometry``.
            map_location: Device of the loaded tensors.

        Returns:
            The prior, in eval mode.

        Raises:
            ValueError: a corrupt file, another kind of file (a posterior sampler, a checkpoint: the
                message says how to load it), another format version, or a prior made for another
                geometry or vertex count.
        """
        from ..training import load_checkpoint

        from .._formats import check_format

        state = load_checkpoint(path, map_location=map_location, required_keys=())
        check_format(state, path, PRIOR_FORMAT, "DiffusionPrior.load")
        return cls.from_saved(state, source=str(path), geometry=geometry, fingerprint=fingerprint,
                              num_vertices=num_vertices, map_location=map_location)

    @classmethod
    def from_saved(
        cls,
        state: dict[str, Any],
        *,
        source: str = "the saved prior",
        geometry: Geometry | None = None,
        fingerprint: str | None = None,
        num_vertices: int | None = None,
        map_location: str | torch.device | None = "cpu",
    ) -> DiffusionPrior:
        """Rebuild a prior from :meth:`saved_state` (what :meth:`load` reads from a file).

        Args:
            state: The saved state.
            source: Where it came from, for error messages (e.g. the file).
            geometry, fingerprint, num_vertices, map_location: As for :meth:`load`.

        Raises:
            ValueError: as :meth:`load` (a damaged state, another geometry or vertex count).
        """
        path = source
        missing = [k for k in ("network_class", "state_dict", "num_vertices") if k not in state]
        if missing:
            raise ValueError(f"prior {path} lacks {missing}: the file is damaged; retrain it (manifold-ps train-prior)")
        if geometry is not None:
            fingerprint = geometry.fingerprint() if fingerprint is None else fingerprint
            num_vertices = geometry.num_vertices if num_vertices is None else num_vertices
        stored_fp, stored_v = state["fingerprint"], int(state["num_vertices"])
        if (fingerprint is not None and fingerprint != stored_fp) or (num_vertices is not None and num_vertices != stored_v):
            raise ValueError(
                f"prior {path} was made for the geometry with fingerprint {stored_fp or '(none)'!r} and "
                f"{stored_v} vertices, but the given geometry has fingerprint "
                f"{fingerprint if fingerprint is not None else '(not given)'!r} and "
                f"{num_vertices if num_vertices is not None else '(not given)'} vertices"
            )
        name = state["network_class"]
        if name in _NETWORKS:
            network_cls = _NETWORKS[name]
        else:
            module, _, qualname = name.rpartition(".")
            network_cls = getattr(importlib.import_module(module), qualname)
        network = network_cls(**state["network_kwargs"])
        sd = state["state_dict"]
        layout = VertexLayout(stored_v, perm=sd["layout.perm"], multiple=int(state["layout_length"]))
        sde_cfg = dict(state["sde"])
        if sde_cfg.pop("type", "VPSDE") != "VPSDE":
            raise ValueError(f"prior {path} uses an unknown SDE {state['sde']}")
        features = torch.zeros(stored_v, int(state["num_features"])) if state["num_features"] else None
        gaussian = mixture = None
        if state["parameterization"] in _SKIPPED:
            from .gaussian import GaussianPrior
            from .gaussian_mixture import GaussianMixture

            missing = [k for k in ("mean", "eigvecs", "eigvals", "floor") if f"gaussian.{k}" not in sd]
            if missing:
                raise ValueError(f"prior {path} uses the {state['parameterization']!r} parameterization but lacks "
                                 f"its Gaussian {missing}")
            gaussian = GaussianPrior.from_factors(sd["gaussian.mean"], sd["gaussian.eigvecs"], sd["gaussian.eigvals"],
                                                  sd["gaussian.floor"], VPSDE(**sde_cfg),
                                                  fit_info=state.get("gaussian_fit_info"))
            if state["parameterization"] == "mixture":
                try:
                    mixture = GaussianMixture.from_state(sd, VPSDE(**sde_cfg), prefix="mixture.",
                                                         fit_info=state.get("mixture_fit_info"))
                except ValueError as err:
                    raise ValueError(f"prior {path} uses the 'mixture' parameterization but {err}") from None
        prior = cls(network, layout, channels=int(state["channels"]), sde=VPSDE(**sde_cfg),
                    parameterization=state["parameterization"], geometry_features=features,
                    fingerprint=stored_fp, gaussian=gaussian, mixture=mixture)
        prior.load_state_dict(sd)
        if map_location is not None:
            prior.to(map_location)
        return prior.eval()


def build_prior(
    geometry: Geometry,
    *,
    channels: int = 1,
    preset: Literal["tiny", "cpu", "paper"] = "cpu",
    network: Literal["unet", "mlp", "graph"] = "unet",
    geometry_channels: int = 0,
    parameterization: Parameterization = "edm",
    ordering: str = "auto",
    sde: VPSDE | None = None,
    gaussian: GaussianPrior | None = None,
    mixture: GaussianMixture | None = None,
    **network_overrides: Any,
) -> DiffusionPrior:
    """A :class:`DiffusionPrior` with a :class:`UNet1d`, :class:`MLPDenoiser` or graph network sized for ``geometry``.

    Picks the locality ordering of the geometry, pads to the U-Net's down-sampling multiple,
    and optionally feeds the first ``geometry_channels`` non-constant Laplacian eigenvectors.

    Args:
        geometry: The geometry (its fingerprint is stored in the prior).
        channels: Signal channels ``C``.
        preset: Network size: ``"tiny"`` (tests), ``"cpu"`` (minutes of CPU training) or ``"paper"``.
        network: ``"unet"`` (1-D U-Net over the ordered vertices, the paper's architecture),
            ``"mlp"`` (residual MLP over the whole sequence, several times faster on a CPU) or
            ``"graph"`` (:class:`~manifold_ps.priors.GraphDenoiser`: Chebyshev filters of the
            geometry's Laplacian, on the surface graph itself).
        geometry_channels: Number of eigenvector features ``k`` (0: none).
        parameterization: Denoiser parameterisation; ``"wiener"`` needs ``gaussian``, ``"mixture"``
            ``gaussian`` and ``mixture``.
        ordering: Vertex ordering method passed to ``geometry.ordering``.
        sde: The VP-SDE (default: the Gaussian's with ``"wiener"``, else ``VPSDE()``).
        gaussian: The fitted Gaussian of ``"wiener"`` (e.g. ``GaussianPrior.fit(train_signals)``);
            the prior's data mean and scale (the network's input scaling) are set from it.
        mixture: The fitted :class:`~manifold_ps.priors.GaussianMixture` of ``"mixture"``.
        **network_overrides: Replace preset entries of the network's keyword arguments.

    Returns:
        An untrained prior; with ``"wiener"`` its denoiser is exactly the Gaussian's, with
        ``"mixture"`` the mixture's.

    Example:
        >>> from manifold_ps.geometry import ImageGrid
        >>> from manifold_ps.priors import GaussianPrior
        >>> grid = ImageGrid(3, 4)
        >>> g = GaussianPrior.fit(torch.rand(50, 1, 12, generator=torch.Generator().manual_seed(0)))
        >>> prior = build_prior(grid, preset="tiny", network="mlp", parameterization="wiener", gaussian=g)
        >>> x, t = torch.rand(2, 1, 12, dtype=torch.float64), torch.tensor([0.1, 0.5], dtype=torch.float64)
        >>> torch.allclose(prior.double().denoise(x, t), g.denoise(x, t))
        True
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    if geometry_channels < 0:
        raise ValueError(f"geometry_channels must be >= 0, got {geometry_channels}")
    if network not in ("unet", "mlp", "graph"):
        raise ValueError(f"network must be 'unet', 'mlp' or 'graph', got {network!r}")
    if network in ("mlp", "graph"):
        kwargs = {**(MLP_PRESETS if network == "mlp" else GRAPH_PRESETS)[preset], **network_overrides}
        multiple = 1
    else:
        kwargs = {**PRESETS[preset], **network_overrides}
        multiple = int(kwargs.get("patch_size", 1)) * 2 ** (len(kwargs["channel_mults"]) - 1)
    layout = VertexLayout(geometry.num_vertices, perm=geometry.ordering(ordering), multiple=multiple)
    features = None
    if geometry_channels:
        _, evecs = geometry.eigenbasis(geometry_channels + 1)
        features = evecs[:, 1:].to(torch.get_default_dtype())  # drop the constant eigenvector
    in_channels = network_signal_channels(channels, parameterization) + geometry_channels
    if network == "mlp":
        net: nn.Module = MLPDenoiser(in_channels, channels, layout.length, **kwargs)
    elif network == "graph":
        index, weight = chebyshev_operator(geometry, layout)
        net = GraphDenoiser(in_channels, channels, layout.length, edge_index=index,
                            edge_weight=weight, **kwargs)
    else:
        net = UNet1d(in_channels, channels, **kwargs)
    stats: dict[str, Tensor] = _gaussian_statistics(gaussian) if gaussian is not None else {}
    return DiffusionPrior(net, layout, channels=channels, sde=sde, parameterization=parameterization,
                          geometry_features=features, fingerprint=geometry.fingerprint(), gaussian=gaussian,
                          mixture=mixture, **stats)


def check_weighting(weighting: str, time_sampling: str) -> None:
    """Refuse an unknown ``weighting`` and ``"elbo"`` with other times than ``"log_snr"`` (ValueError)."""
    if weighting not in _WEIGHTINGS:
        raise ValueError(f"weighting must be 'edm' or 'elbo', got {weighting!r}")
    if weighting == "elbo" and time_sampling != "log_snr":
        raise ValueError(f"weighting 'elbo' is the likelihood weighting for the ELBO's times: it needs "
                         f"time_sampling='log_snr', got {time_sampling!r}")


def network_signal_channels(channels: int, parameterization: Parameterization) -> int:
    """Signal channels the network of a :class:`DiffusionPrior` takes (before geometry features).

    ``channels`` (the preconditioned noisy signal), or ``2 * channels`` for ``"wiener"`` and
    ``"mixture"``, whose network also sees the skip's estimate ``(W(x_t, t) - mu) / sigma_d``: at
    large noise it holds nearly everything known about ``x_0``, which a local network could not
    gather itself.

    Example:
        >>> network_signal_channels(1, "edm"), network_signal_channels(1, "wiener")
        (1, 2)
    """
    return 2 * channels if parameterization in _SKIPPED else channels


def _gaussian_statistics(gaussian: GaussianPrior) -> dict[str, Tensor]:
    """Per-channel mean and RMS deviation from it of ``N(m, S)``: ``data_mean`` and ``data_std``."""
    diag = gaussian.floor + gaussian.eigvecs.square() @ (gaussian.eigvals - gaussian.floor)
    diag = diag.reshape(gaussian.channels, gaussian.num_vertices)
    mu = gaussian.mean.mean(-1)
    second = (diag + (gaussian.mean - mu[:, None]).square()).mean(-1)
    return {"data_mean": mu.float(), "data_std": second.sqrt().clamp_min(1e-3).float()}
