"""A trained amortized posterior sampler: flow + how to condition it, saved as one file.

:class:`AmortizedPosterior` implements the :class:`~manifold_ps.sampling.PosteriorSampler`
protocol with one flow evaluation per sample (``nfe = 1``), all samples of all measurements in
one batched pass. It turns ``(y, operator)`` into the flow's condition and location:

* ``condition="operator"``: ``operator.condition(y)`` (for masking ``y`` and the mask), plus the
  reconstruction if there is one;
* ``condition="measurement"`` (blind mode): ``y`` only -- the flow never sees the operator;
* ``condition="none"``: an unconditional flow fitted to one measurement (Feng et al.;
  :func:`~manifold_ps.flows.fit_single`), on the Gaussian base of that measurement if given.

A *decoded* sampler (``decode=t_min``) reads the flow's output as a latent ``u`` in the role of
``x_{t_min}`` and returns ``x = D(u, t_min)``, the denoiser of the prior it is attached to
(:meth:`AmortizedPosterior.attach_prior`), optionally plus the Gaussian's denoising error
(``decoder_noise``). With a :class:`~manifold_ps.flows.GaussianBase` the flow's output passes
through the exact Gaussian posterior over ``u`` (its mean is also the reconstruction channel of
the condition), so the untrained sampler draws from that posterior. With a
:class:`~manifold_ps.flows.MixtureBase` as well (``source``), the flow starts from the exact
posterior over ``u`` of a Gaussian mixture instead: each draw of it is pulled into the Gaussian
base's whitened coordinates, moved there by the couplings and pushed back out, so the untrained
sampler draws from the mixture's posterior (and the mixture's posterior mean is the condition's
reconstruction channel).

The decoder's error ``x - D(u)`` is modelled in one of two ways (``likelihood``). ``"denoised"``
scores the measurement by ``p(y | D(u))`` and returns ``D(u)`` (plus, with ``decoder_noise``,
an independent draw of the Gaussian's error). ``"marginal"`` gives the error the Gaussian's law
``N(0, S - S_c)`` (:meth:`~manifold_ps.flows.GaussianBase.decoder_error`), so that
``p(y | u) = N(y; A D(u), sigma^2 I + A (S - S_c) A^T)``, and returns a draw of ``x`` given ``u``
*and* ``y``: ``D(u)`` plus the error's posterior mean given the residual ``y - A D(u)`` (plus, with
``decoder_noise``, its posterior spread). Under a Gaussian teacher the second is exact.

:meth:`AmortizedPosterior.save` writes the flow architecture and weights, the reconstruction
(with its stiffness matrix), the training operator's description, the data normalisation and the
geometry fingerprint; :meth:`AmortizedPosterior.load` needs nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .._checks import check_finite, check_signal
from .._files import atomic_open
from ..operators.base import Operator
from ..priors.gaussian_posterior import LinearGaussianPosterior
from .bijections import ActNorm
from .gaussian_base import BaseState, GaussianBase
from .mixture_base import MixtureBase
from .realnvp import ConditionalRealNVP
from .reconstruct import Reconstruction, reconstruction_from_config

__all__ = ["AmortizedPosterior", "POSTERIOR_FORMAT", "condition_channels"]

POSTERIOR_FORMAT = "manifold_ps.AmortizedPosterior/1"
"""Value of the ``"format"`` key of a saved sampler."""

DECODE_CHUNK = 32
"""Signals per call of the decoder when sampling. It bounds the memory of the denoiser's
activations (on the 4140-vertex sphere, 4096 draws in one call of the graph network took 17 GB),
and on a CPU it sets the speed: the graph network's time per draw grows with the draws per call
once its activations leave the cache. The draws are the same bit for bit at any chunk size."""

ConditionMode = Literal["operator", "measurement", "none"]
Likelihood = Literal["denoised", "marginal"]


def condition_channels(
    channels: int, operator: Operator | None, *, condition: ConditionMode = "operator", reconstruct: bool = False
) -> int:
    """Number of condition channels ``Cc`` the flow needs for this conditioning.

    Example:
        >>> from manifold_ps.operators import Inpainting
        >>> condition_channels(1, Inpainting(torch.ones(4, dtype=torch.bool), 0.1), reconstruct=True)
        3
    """
    if condition == "none":
        return 0
    if condition == "measurement":
        base = channels
    elif condition == "operator":
        if operator is None:
            raise ValueError("condition='operator' needs the operator to count its condition channels")
        base = operator.condition_channels(channels)
    else:
        raise ValueError(f"condition must be 'operator', 'measurement' or 'none', got {condition!r}")
    return base + (channels if reconstruct else 0)


class AmortizedPosterior(nn.Module):
    """Posterior sampler ``x ~ q(x | y)`` backed by a :class:`ConditionalRealNVP`.

    Args:
        flow: The flow; its ``cond_channels`` must match the conditioning (see
            :func:`condition_channels`).
        condition: How the flow is conditioned (see the module docstring).
        reconstruct: Optional cheap reconstruction ``rec(y, operator)`` used as the flow's
            location (and as extra condition channels when ``condition != "none"``). To be saved
            it must be a :class:`~manifold_ps.flows.reconstruct.Reconstruction`.
        operator_config: Description of the training operator (``Operator.config()``), stored
            for reference (e.g. the noise level and missing fraction).
        normalisation: How signals were normalised (e.g. ``{"kind": "minmax", "low": 180.0,
            "high": 330.0, "unit": "K"}``), stored for users.
        fingerprint: Fingerprint of the geometry the flow was trained on.
        metadata: Any other plain data to keep with the sampler (training profile, timings...).
        base: Optional :class:`~manifold_ps.flows.GaussianBase` applied after the flow (then
            ``reconstruct`` must be ``None``: the base's posterior mean takes its place in the
            condition, and ``decode`` must equal the base's ``t_min``). The flow's ActNorm layers
            start as the identity, so the untrained sampler is the base.
        decode: ``t_min`` of the decoder ``x = D(u, t_min)``, or ``None`` (the flow's output is
            the sample). Sampling then needs :meth:`attach_prior`.
        decoder_noise: Add draws of the Gaussian's error ``x_0 - E[x_0 | x_{t_min}]`` to the
            decoded samples (needs ``base``); with ``likelihood="marginal"`` draws of that error
            given the measurement.
        likelihood: ``"denoised"`` or ``"marginal"`` (needs a ``base`` built with
            ``marginal=True``, the posterior over ``u`` of that likelihood): how the decoder's
            error enters (see the module docstring). The loss reads it from the sampler.
        source: Optional :class:`~manifold_ps.flows.MixtureBase` the flow's input is drawn from
            in place of ``N(0, I)``, through the inverse of ``base`` (needs ``base``, with the
            same ``t_min`` and ``marginal``).

    Attributes:
        nfe: Network evaluations per sample of the last :meth:`sample` call (1; 2 when decoding).

    Example:
        >>> from manifold_ps.geometry import VertexLayout
        >>> from manifold_ps.operators import Inpainting
        >>> op = Inpainting(torch.tensor([True, False] * 5), sigma=0.1)
        >>> flow = ConditionalRealNVP(1, VertexLayout(10), cond_channels=2, steps=2, hidden=8)
        >>> post = AmortizedPosterior(flow)
        >>> post.sample(torch.zeros(3, 1, 10), op, 4).shape, post.nfe
        (torch.Size([3, 4, 1, 10]), 1)
    """

    def __init__(
        self,
        flow: ConditionalRealNVP,
        *,
        condition: ConditionMode = "operator",
        reconstruct: nn.Module | None = None,
        operator_config: dict[str, Any] | None = None,
        normalisation: dict[str, Any] | None = None,
        fingerprint: str = "",
        metadata: dict[str, Any] | None = None,
        base: GaussianBase | None = None,
        decode: float | None = None,
        decoder_noise: bool = False,
        likelihood: Likelihood = "denoised",
        source: MixtureBase | None = None,
    ) -> None:
        super().__init__()
        if likelihood not in ("denoised", "marginal"):
            raise ValueError(f"likelihood must be 'denoised' or 'marginal', got {likelihood!r}")
        if likelihood == "marginal" and base is None:
            raise ValueError("likelihood='marginal' models the decoder's error by the Gaussian's: it needs a Gaussian base")
        if base is not None and base.marginal != (likelihood == "marginal"):
            raise ValueError(f"likelihood={likelihood!r} needs a Gaussian base with marginal="
                             f"{likelihood == 'marginal'} (the exact posterior over u of that likelihood)")
        if base is not None:
            if reconstruct is not None:
                raise ValueError("with a Gaussian base the reconstruction is the base's posterior mean: pass reconstruct=None")
            if condition == "measurement":
                raise ValueError("the Gaussian base needs the operator (it factorises the operator's posterior): "
                                 "condition='measurement' (blind) does not see it")
            if decode is None or abs(float(decode) - base.t_min) > 1e-12:
                raise ValueError(f"the Gaussian base is over x_t at t_min={base.t_min}: pass decode={base.t_min}")
        if source is not None:
            if base is None:
                raise ValueError("a mixture source is drawn through the inverse of the Gaussian base: pass base")
            if abs(source.t_min - base.t_min) > 1e-12 or source.marginal != base.marginal:
                raise ValueError(f"the mixture source (t_min={source.t_min}, marginal={source.marginal}) must be over "
                                 f"the base's u (t_min={base.t_min}, marginal={base.marginal})")
            if float(flow.config().get("init_scale", 1.0)) != 1.0:
                raise ValueError("a mixture source passes through the untrained flow unchanged only with init_scale=1")
            if (source.channels, source.num_vertices) != (base.channels, base.num_vertices):
                raise ValueError(f"the mixture source is over {source.channels} x {source.num_vertices} entries, "
                                 f"the base over {base.channels} x {base.num_vertices}")
        if decode is not None and not 0.0 < float(decode) < 1.0:
            raise ValueError(f"decode must be a time in (0, 1), got {decode}")
        if decoder_noise and base is None:
            raise ValueError("decoder_noise draws the Gaussian's denoising error: it needs a Gaussian base")
        if condition not in ("operator", "measurement", "none"):
            raise ValueError(f"condition must be 'operator', 'measurement' or 'none', got {condition!r}")
        if condition == "none" and flow.cond_channels:
            raise ValueError("condition='none' needs an unconditional flow (cond_channels=0)")
        if condition != "none" and not flow.cond_channels:
            raise ValueError(f"condition={condition!r} needs a flow with cond_channels > 0")
        self.flow = flow
        self.condition = condition
        self.reconstruct = reconstruct
        self.operator_config = operator_config
        self.normalisation = dict(normalisation or {})
        self.fingerprint = str(fingerprint)
        self.metadata = dict(metadata or {})
        self.base = base
        self.source = source
        self.decode = None if decode is None else float(decode)
        self.decoder_noise = bool(decoder_noise)
        self.likelihood: Likelihood = likelihood
        self._prior = _Shared(None)
        if base is not None:  # the base whitens already: start the flow as the identity
            for module in flow.modules():
                if isinstance(module, ActNorm):
                    module.initialized.fill_(True)
        self.nfe = 1

    def attach_prior(self, prior: nn.Module) -> "AmortizedPosterior":
        """Use ``prior.denoise`` as the decoder of a decoded sampler (shared, never copied, by EMA
        copies; :meth:`save` embeds it, so a loaded sampler decodes on its own). Returns ``self``."""
        self._prior = _Shared(prior)
        return self

    def error_posterior(self, operator: Operator) -> LinearGaussianPosterior:
        """The posterior of the decoder's error given a residual ``y - A D(u)`` under ``operator``
        (``likelihood="marginal"``): its ``log_evidence`` is ``log p(y | u)``, its mean and draws
        complete a decoded sample."""
        if self.base is None:
            raise ValueError("the decoder's error model is the Gaussian base's: this sampler has no base")
        return LinearGaussianPosterior(self.base.decoder_error(), operator.to(self.base.mean.device))

    def _decode(self, u: Tensor, generator: torch.Generator | None, y: Tensor | None = None,
                error: LinearGaussianPosterior | None = None) -> Tensor:
        """``D(u, t_min)`` for ``u`` of shape ``(B, n, C, V)``, completed by the decoder's error:
        drawn given the residual ``y - A D(u)`` when ``error`` (:meth:`error_posterior`) is given,
        else independently with ``decoder_noise``."""
        prior = self._prior.value
        if prior is None:
            raise ValueError("this sampler decodes with the prior's denoiser: call attach_prior(prior) first")
        flat = u.reshape(-1, *u.shape[2:])
        t = flat.new_full((flat.shape[0],), self.decode)
        # in pieces: a network's activations over every draw of a batch at once can exceed the memory
        x = torch.cat([prior.denoise(part, t[: part.shape[0]]) for part in flat.split(DECODE_CHUNK)]).reshape(u.shape)
        if error is not None:
            if y is None:
                raise ValueError("the decoder's error given the measurement needs y")
            parts = []
            for k in range(x.shape[1]):
                residual = (y.to(x.device) - x[:, k]).to(self.base.mean.dtype)
                if self.decoder_noise:
                    parts.append(error.sample(residual, 1, generator=generator)[:, 0])
                else:
                    parts.append(error.mean(residual))
            x = x + torch.stack(parts, 1).to(x.dtype)
        elif self.decoder_noise:
            x = x + self.base.decoder_noise(tuple(u.shape[:2]), generator=generator).to(x.dtype)
        return x

    @property
    def channels(self) -> int:
        """Signal channels ``C``."""
        return self.flow.channels

    @property
    def num_vertices(self) -> int:
        """Number of vertices ``V``."""
        return self.flow.num_vertices

    # -- conditioning ------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self, y: Tensor, operator: Operator | None) -> tuple[Tensor | None, Tensor | None]:
        """The flow's condition and location for measurements ``y``.

        Args:
            y: Measurements ``(B, C, V)``.
            operator: The operator of ``y`` (ignored in blind mode without a reconstruction).

        Returns:
            ``(cond (B, Cc, V) or None, loc (B, C, V) or None)``.
        """
        cond, loc, _ = self._prepare(y, operator, factor=False)
        return cond, loc

    @torch.no_grad()
    def prepare_base(self, y: Tensor, operator: Operator, *, factor: bool = True) -> BaseState | None:
        """The Gaussian base's factorisation for ``y``, with the mixture source's in its ``source``
        field (``None`` without a base; ``factor=False``: the means only)."""
        if self.base is None:
            return None
        state = self.base.prepare(y, operator, factor=factor)
        if self.source is not None:
            state.source = self.source.prepare(y, operator, factor=factor)
        return state

    def source_log_prob(self, z: Tensor, state: BaseState) -> Tensor:
        """Log-density of the flow's input ``z`` ``(B, n, C, V) -> (B, n)``: ``N(0, I)``'s, or with a
        mixture source ``log q_0(B(P z)) + log|det dB/dw|`` with ``P`` the flow's fixed
        permutations (differentiable in ``z``)."""
        if self.source is None:
            return self.flow.base_log_prob(z)
        u, ladj = self.base.call_and_ladj(self.flow.fixed_permutations(z), state)
        return self.source.log_prob(u, state.source) + ladj

    def _prepare(self, y: Tensor, operator: Operator | None, *, factor: bool = True
                 ) -> tuple[Tensor | None, Tensor | None, BaseState | None]:
        if ((self.condition == "operator" or (self.condition == "none" and self.base is not None))
                and operator is not None and y.shape[-1] != self.num_vertices):
            # measurements that are not vertex-shaped (e.g. a downsampled image): the operator's
            # condition() maps them to vertex features, and a base takes them with the operator
            if y.ndim != 3 or y.shape[1] != self.channels:
                raise ValueError(f"y must have shape (B, {self.channels}, M), got {tuple(y.shape)}")
            check_finite(y, "y")
        else:
            check_signal(y, self.num_vertices, "y", channels=self.channels)
        y = y.to(self.flow.layout.valid.device)
        loc = self.reconstruct(y, operator) if self.reconstruct is not None else None
        state = None
        if self.base is not None:
            if operator is None:
                raise ValueError("this sampler starts from the Gaussian posterior of the operator: pass it")
            state = self.prepare_base(y, operator, factor=factor)
            mean_x = state.mean_x if state.source is None else state.source.mean_x
            recon = mean_x.reshape(y.shape[0], self.channels, self.num_vertices).to(y.dtype)
        if self.condition == "none":
            return None, loc, state
        if self.condition == "operator":
            if operator is None:
                raise ValueError("this sampler is conditioned on the operator: pass it")
            cond = operator.to(y.device).condition(y)
        else:
            cond = y
        if loc is not None:
            cond = torch.cat([cond, loc], dim=1)
        if state is not None:
            cond = torch.cat([cond, recon], dim=1)
        if cond.shape[1] != self.flow.cond_channels:
            raise ValueError(
                f"the condition has {cond.shape[1]} channels but the flow expects {self.flow.cond_channels}; "
                "is this the operator type the sampler was trained for?"
            )
        return cond, loc, state

    def forward(
        self,
        cond: Tensor | None,
        n: int = 1,
        *,
        loc: Tensor | None = None,
        z: Tensor | None = None,
        batch: int | None = None,
        generator: torch.Generator | None = None,
        state: BaseState | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The flow's generative pass on prepared inputs: ``(x (B, n, C, V), log|det| (B, n))``.

        With a Gaussian base (``state`` from :meth:`prepare_base`) the output is the latent ``u``
        and the log-determinant includes the base's; decoding is left to the caller. With a
        mixture source, ``z`` defaults to a source draw in the base's coordinates (the
        log-determinant is still the couplings' and the base's only; see :meth:`source_log_prob`).
        """
        if self.source is not None and z is None:
            if state is None or state.source is None:
                raise ValueError("this sampler starts from a mixture's posterior: pass state=prepare_base(y, operator)")
            w, _ = self.base.inverse_and_ladj(self.source.sample(state.source, n, generator=generator), state)
            ref = cond if cond is not None else loc
            z = self.flow.fixed_permutations(w.to(ref.dtype if ref is not None else self.flow._param_dtype()),
                                             inverse=True)
        x, ladj = self.flow(cond, n, loc=loc, z=z, batch=batch, generator=generator)
        if self.base is not None:
            if state is None:
                raise ValueError("this sampler has a Gaussian base: pass state=prepare_base(y, operator)")
            x, base_ladj = self.base.call_and_ladj(x, state)
            ladj = ladj + base_ladj
        return x, ladj

    def _draw(self, cond: Tensor | None, n: int, loc: Tensor | None, state: BaseState | None, batch: int,
              generator: torch.Generator | None, y: Tensor | None = None,
              error: LinearGaussianPosterior | None = None) -> Tensor:
        x, _ = self(cond, n, loc=loc, batch=batch, generator=generator, state=state)
        return x if self.decode is None else self._decode(x, generator, y, error)

    def _error(self, operator: Operator | None) -> LinearGaussianPosterior | None:
        if self.likelihood != "marginal" or self.decode is None:
            return None
        if operator is None:
            raise ValueError("likelihood='marginal' conditions the decoder's error on the operator: pass it")
        return self.error_posterior(operator)

    # -- the sampler protocol ------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self, y: Tensor, operator: Operator | None = None, n: int = 1, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` posterior samples per measurement in one batched flow pass.

        Returns:
            ``(B, n, C, V)`` in natural vertex order.
        """
        cond, loc, state = self._prepare(y, operator)
        x = self._draw(cond, n, loc, state, y.shape[0], generator, y, self._error(operator))
        self.nfe = 1 if self.decode is None else 2
        return x

    @torch.no_grad()
    def posterior_mean_std(
        self,
        y: Tensor,
        operator: Operator | None = None,
        n: int = 128,
        *,
        chunk: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Posterior mean and per-vertex standard deviation from ``n`` samples.

        Args:
            y: Measurements ``(B, C, V)``.
            operator: Their operator.
            n: Samples per measurement.
            chunk: Draw at most this many samples per measurement per pass (memory bound).
            generator: Source of randomness.

        Returns:
            ``(mean, std)``, each ``(B, C, V)``.
        """
        if n < 2:
            raise ValueError(f"n must be >= 2 for a standard deviation, got {n}")
        cond, loc, state = self._prepare(y, operator)
        error = self._error(operator)
        step = n if chunk is None else max(1, int(chunk))
        total = sq = None
        done = 0
        while done < n:
            m = min(step, n - done)
            x = self._draw(cond, m, loc, state, y.shape[0], generator, y, error)
            s, s2 = x.sum(1), x.square().sum(1)
            total = s if total is None else total + s
            sq = s2 if sq is None else sq + s2
            done += m
        mean = total / n
        var = (sq - n * mean.square()).clamp_min(0) / (n - 1)
        self.nfe = 1 if self.decode is None else 2
        return mean, var.sqrt()

    def log_prob(self, x: Tensor, y: Tensor, operator: Operator | None = None) -> Tensor:
        """Exact ``log q(x | y)`` (the flow is invertible).

        Shapes:
            x ``(B, C, V)`` -> ``(B,)``, or ``(B, n, C, V)`` -> ``(B, n)``; y ``(B, C, V)``.
        """
        if self.decode is not None:
            raise ValueError("a decoded sampler has no tractable density over x (the decoder is not invertible)")
        cond, loc = self.prepare(y, operator)
        single = x.ndim == 3
        lp = self.flow.log_prob(x[:, None] if single else x, cond, loc=loc)
        return lp[:, 0] if single else lp

    # -- persistence -----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the complete sampler (a decoded one with its decoder prior) to one file (atomically)."""
        if self.reconstruct is not None and not isinstance(self.reconstruct, Reconstruction):
            raise ValueError("only a Reconstruction (e.g. HarmonicFill) can be saved with the sampler")
        blob = {
            "format": POSTERIOR_FORMAT,
            "flow_class": type(self.flow).__name__,
            "flow_config": self.flow.config(),
            "flow_state": {k: v.detach().cpu() for k, v in self.flow.state_dict().items()},
            "condition": self.condition,
            "reconstruct": self.reconstruct.config() if self.reconstruct is not None else None,
            "operator": _to_cpu(self.operator_config),
            "normalisation": self.normalisation,
            "fingerprint": self.fingerprint,
            "metadata": self.metadata,
            "base": self.base.config() if self.base is not None else None,
            "source": self.source.config() if self.source is not None else None,
            "decode": None if self.decode is None else {"t_min": self.decode, "noise": self.decoder_noise,
                                                        "likelihood": self.likelihood},
        }
        decoder = self._prior.value
        if self.decode is not None and decoder is not None:
            if not hasattr(decoder, "saved_state"):
                raise ValueError(f"the attached decoder ({type(decoder).__name__}) cannot be saved with the sampler: "
                                 "attach a DiffusionPrior or a GaussianPrior")
            blob["decoder"] = decoder.saved_state()
        path = Path(path)
        with atomic_open(path) as handle:
            torch.save(blob, handle)
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        fingerprint: str | None = None,
        map_location: torch.device | str = "cpu",
    ) -> "AmortizedPosterior":
        """Load a sampler written by :meth:`save` (in eval mode).

        Args:
            path: The file.
            fingerprint: If given, the geometry fingerprint the sampler must have been trained on.
            map_location: Device to load onto.

        Raises:
            ValueError: if the file is missing, unreadable, another kind of file (a prior, a
                checkpoint: the message says how to load it), another format version, or made for
                another geometry.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no sampler file at {path}")
        try:
            blob = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # truncated / corrupt / not a torch file
            raise ValueError(f"{path} is not a readable sampler file ({type(err).__name__}: {err}); the file is "
                             "corrupt (e.g. a copy cut short): copy it again, or rerun train-flow") from err
        from .._formats import check_format

        check_format(blob, path, POSTERIOR_FORMAT, "AmortizedPosterior.load")
        if fingerprint is not None and blob["fingerprint"] != fingerprint:
            raise ValueError(
                f"{path} was trained on the geometry with fingerprint {blob['fingerprint']!r}, "
                f"not {fingerprint!r}: the vertex order and count would not match"
            )
        if blob["flow_class"] != "ConditionalRealNVP":
            raise ValueError(f"{path}: unknown flow class {blob['flow_class']!r}")
        try:
            flow = ConditionalRealNVP.from_config(blob["flow_config"])
            flow.load_state_dict(blob["flow_state"])
        except (RuntimeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: the flow weights do not match its architecture ({err})") from err
        post = cls(
            flow,
            condition=blob["condition"],
            reconstruct=reconstruction_from_config(blob["reconstruct"]),
            operator_config=blob["operator"],
            normalisation=blob["normalisation"],
            fingerprint=blob["fingerprint"],
            metadata=blob["metadata"],
            base=GaussianBase.from_config(blob.get("base")),
            source=MixtureBase.from_config(blob.get("source")),
            decode=(blob.get("decode") or {}).get("t_min"),
            decoder_noise=bool((blob.get("decode") or {}).get("noise", False)),
            likelihood=(blob.get("decode") or {}).get("likelihood", "denoised"),
        )
        if blob.get("decoder") is not None:  # the decoded sampler's prior, saved with it
            from ..priors.diffusion import PRIOR_FORMAT, DiffusionPrior
            from ..priors.gaussian import GaussianPrior

            source = f"{path} (its decoder)"
            if blob["decoder"].get("format") == PRIOR_FORMAT:
                decoder: nn.Module = DiffusionPrior.from_saved(blob["decoder"], source=source,
                                                               fingerprint=blob["fingerprint"], map_location=map_location)
            else:
                decoder = GaussianPrior.from_saved(blob["decoder"], source=source, num_vertices=flow.num_vertices)
            post.attach_prior(decoder.to(map_location).requires_grad_(False).eval())
        return post.to(map_location).eval()


class _Shared:
    """Holds a module without registering it, and hands itself to ``copy.deepcopy`` unchanged
    (an EMA copy of the sampler shares the frozen prior instead of duplicating it)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __deepcopy__(self, memo: dict[int, Any]) -> "_Shared":
        return self


def _to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_cpu(v) for v in value]
    return value
