"""Distilling a diffusion prior into a conditional flow without clean data (reverse KL).

For measurements ``y`` only, minimise over the flow parameters

    E_y E_z [ ||y - A(G(z, y))||^2 / (2 sigma_y^2)      fidelity  (-log p(y | x))
              - b_theta(G(z, y))                        prior     (-ELBO of the diffusion prior)
              - log |det dG/dz| ]                       entropy   (-log q up to log N(z))

which is ``KL(q(x | y) || p(x | y))`` up to terms constant in the flow (``log N(z)`` and
``log p(y)`` are dropped; for a sampler whose flow starts from a mixture's posterior,
:class:`~manifold_ps.flows.MixtureBase`, the source's log-density of its draw takes the place of
``log N(z)``, constant in the flow too). A decoded sampler (``AmortizedPosterior(decode=t_min)``) draws
``u ~ q(u | y)`` in the role of ``x_{t_min}`` and is trained with the bound of the model
``p(x) = int p_{t_min}(u) p(x | u) du`` with ``x = D(u, t_min)``:

    E_y E_z [ ||y - A(D(u))||^2 / (2 sigma_y^2) - b_{t_min}(u) - log |det du/dz| ],

``b_{t_min}`` the ELBO of the noised marginal (:meth:`~manifold_ps.priors.ScorePrior.marginal_elbo`)
and the log-determinant including the Gaussian base's when there is one. With the sampler's
``likelihood="marginal"`` the fidelity is ``-log p(y | u)``, the decoder's error integrated out
under the Gaussian's law (:meth:`~manifold_ps.flows.AmortizedPosterior.error_posterior`), in place
of ``-log p(y | D(u))``. The ELBO is importance-sampled in time and differentiated through the
frozen score network into ``x``; nothing is detached. Because ``u`` lives at noise level ``t_min``,
where the prior's score is defined, the decoded sampler can instead take the prior term's exact
gradient ``grad_u log p_{t_min}(u) = (alpha D(u) - u) / sigma^2`` from the decoder pass the
fidelity term makes anyway (``prior_term="score"``): no time draws, no backward pass through
the network for that term, and no ELBO gap (the bound's looseness, which varies with ``u``, no
longer shapes the draws); the term's value is then not computed.

* :func:`reverse_kl_loss`: the loss of one batch, with each term reported per dimension.
* :func:`train_amortized`: amortized training over a set of measurements with
  :class:`~manifold_ps.training.Trainer` (progress bar, atomic checkpoints with exact resume,
  EMA, AMP on CUDA, DDP through torchrun). Blind mode is ``AmortizedPosterior(condition=
  "measurement")`` with measurements from :class:`~manifold_ps.operators.RandomInpainting`;
  the per-measurement variant (Feng et al.) is :func:`fit_single`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..operators.base import Operator
from ..priors.base import ScorePrior
from ..training import Trainer
from .bijections import ActNorm
from .gaussian_base import BaseState
from .posterior import AmortizedPosterior

__all__ = ["T_MIN", "reverse_kl_loss", "path_log_prob", "train_amortized", "fit_single", "prepare_data"]

T_MIN: float = 0.03
"""Default lower time limit of the ELBO in the distillation loss (the one place it is written;
:class:`manifold_ps.config.FlowConfig` and the profiles start from it)."""


def _core(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # unwrap DistributedDataParallel


class _LogDensity(nn.Module):
    """``log q(x)`` of a flow or sampler as a module's forward (for :func:`torch.func.functional_call`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, cond: Tensor | None, loc: Tensor | None, state: BaseState | None) -> Tensor:
        net, ladj = self.model, 0.0
        if isinstance(net, AmortizedPosterior):
            if net.base is not None:
                x, ladj = net.base.inverse_and_ladj(x, state)
            z, flow_ladj = net.flow.inverse_and_ladj(x, cond, loc=loc)
            return net.source_log_prob(z, state) + flow_ladj + ladj
        z, flow_ladj = net.inverse_and_ladj(x, cond, loc=loc)
        return net.base_log_prob(z) + flow_ladj + ladj


def path_log_prob(model: nn.Module, x: Tensor, cond: Tensor | None, *, loc: Tensor | None = None,
                  state: BaseState | None = None) -> Tensor:
    """``log q(x)`` through the inverse of ``model`` with its parameters held fixed.

    The value is the flow's log-density; its gradient reaches the parameters only through ``x``
    (the path part of the entropy's gradient, see the module docstring).

    Args:
        model: A :class:`ConditionalRealNVP` or :class:`AmortizedPosterior` (unwrapped).
        x: Draws ``(B, n, C, V)`` (the latent ``u`` of a sampler with a Gaussian base).
        cond: The flow's condition ``(B, Cc, V)`` or ``None``.
        loc: The flow's location ``(B, C, V)`` or ``None``.
        state: The Gaussian base's :class:`BaseState` for these measurements (with a base only).

    Returns:
        ``(B, n)``.
    """
    fixed = {f"model.{name}": p.detach() for name, p in model.named_parameters()}
    return torch.func.functional_call(_LogDensity(model), fixed, (x, cond, loc, state))


def reverse_kl_loss(
    model: nn.Module,
    prior: ScorePrior,
    operator: Operator,
    y: Tensor,
    *,
    cond: Tensor | None = None,
    loc: Tensor | None = None,
    n_z: int = 4,
    n_time: int = 1,
    n_noise: int = 1,
    t_min: float = T_MIN,
    importance: bool = True,
    include_constants: bool = True,
    prior_weight: float = 1.0,
    prior_term: Literal["elbo", "exact", "score"] = "elbo",
    entropy_gradient: Literal["total", "path"] = "total",
    z: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Reverse-KL distillation loss of one batch of measurements, averaged over ``n_z`` draws each.

    Args:
        model: A :class:`ConditionalRealNVP` or :class:`AmortizedPosterior` (possibly wrapped in
            DDP), called as ``model(cond, n, loc=..., z=..., generator=...) -> (x, ladj)``.
        prior: The (frozen) diffusion prior.
        operator: The operator of ``y`` (one mask per row, or shared).
        y: Measurements ``(B, C, V)``.
        cond: The flow's condition (default ``operator.condition(y)``; ``None`` stays ``None``
            for an unconditional flow when ``loc`` is given).
        loc: The flow's location (e.g. a harmonic fill), or ``None``.
        n_z: Flow draws per measurement.
        n_time: ELBO time draws per flow sample.
        n_noise: ELBO forward-noise draws per time.
        t_min: Lower limit of the ELBO time integral (:data:`T_MIN` keeps the loss terms of comparable size).
        importance: Importance-sample the ELBO times.
        include_constants: Keep the ELBO's constants (the reported prior term is then a bound on
            ``-log p(x)``); they do not change the gradients.
        prior_weight: Weight of the prior term (1 is the reverse KL).
        prior_term: ``"elbo"`` (the method), ``"exact"`` (``prior.log_prob``, for analytic
            priors only: a low-variance check) or, for a decoded sampler only, ``"score"``: the
            exact gradient of ``log p_{t_min}(u)`` from the prior's score at ``t_min``, through a
            surrogate whose value is zero (the reported ``prior`` term is then 0).
        entropy_gradient: ``"total"`` (the reparameterisation gradient of ``-log|det|``) or
            ``"path"``: only the part through the sample (see the module docstring); the
            reported ``entropy`` is the same value either way.
        z: Optional base draws ``(B, n_z, C, V)`` (tests).
        generator: Source of ``z`` and of the ELBO's times and noises.

    A decoded :class:`AmortizedPosterior` (``decode`` set) is trained with the decoded bound of
    the module docstring; ``t_min`` must then equal its ``decode`` time, and ``prior_term="exact"``
    uses ``prior.marginal_log_prob(u, t_min)``.

    Returns:
        ``(loss, terms)``: the scalar loss (mean over measurements and draws, divided by the
        dimension ``d = C V``) and floats ``fidelity``, ``prior``, ``entropy`` (each per sample,
        per dimension, so ``loss = fidelity + prior_weight * prior + entropy``) and
        ``fidelity_ratio`` (mean fidelity over its value at the truth, ``M / 2`` for ``M``
        measured entries: well below 1 means the samples fit the noise).

    Example:
        >>> from manifold_ps.geometry import VertexLayout
        >>> from manifold_ps.operators import Inpainting
        >>> from manifold_ps.priors import GaussianPrior
        >>> from manifold_ps.flows import ConditionalRealNVP
        >>> prior = GaussianPrior(torch.zeros(1, 6), torch.eye(6))
        >>> op = Inpainting(torch.tensor([True, True, False, True, False, True]), sigma=0.2)
        >>> flow = ConditionalRealNVP(1, VertexLayout(6), cond_channels=2, steps=2, hidden=8)
        >>> loss, terms = reverse_kl_loss(flow, prior, op, torch.zeros(3, 1, 6), n_z=2)
        >>> loss.shape, sorted(terms)
        (torch.Size([]), ['entropy', 'fidelity', 'fidelity_ratio', 'loss', 'prior'])
    """
    if n_z < 1:
        raise ValueError(f"n_z must be >= 1, got {n_z}")
    if prior_term not in ("elbo", "exact", "score"):
        raise ValueError(f"prior_term must be 'elbo', 'exact' or 'score', got {prior_term!r}")
    if entropy_gradient not in ("total", "path"):
        raise ValueError(f"entropy_gradient must be 'total' or 'path', got {entropy_gradient!r}")
    core = _core(model)
    net = core.flow if isinstance(core, AmortizedPosterior) else core
    decode = core.decode if isinstance(core, AmortizedPosterior) else None
    if decode is not None and abs(decode - t_min) > 1e-12:
        raise ValueError(f"the sampler decodes at t_min={decode}, the loss was given t_min={t_min}")
    if prior_term == "score" and decode is None:
        raise ValueError("prior_term='score' is the score of the t_min marginal: it needs a decoded sampler "
                         "(its samples are clean signals otherwise)")
    if cond is None and net.cond_channels > 0:
        cond = operator.condition(y) if getattr(core, "base", None) is None else core.prepare(y, operator)[0]
    state = core.prepare_base(y, operator) if getattr(core, "base", None) is not None else None
    if state is None:
        x, ladj = model(cond, n_z, loc=loc, z=z, batch=y.shape[0], generator=generator)
    else:
        x, ladj = model(cond, n_z, loc=loc, z=z, batch=y.shape[0], generator=generator, state=state)
    if entropy_gradient == "path":
        log_q = path_log_prob(core, x, cond, loc=loc, state=state).reshape(-1)
    batch, n = ladj.shape
    channels, vertices = x.shape[-2:]
    d = channels * vertices
    x = x.reshape(batch * n, channels, vertices)
    index = torch.arange(batch, device=y.device).repeat_interleave(n)
    op = operator.select(index)
    y_rep = y.index_select(0, index)
    if decode is None:
        fidelity = -op.log_likelihood(y_rep, x)
        if prior_term == "elbo":
            log_prior = prior.elbo(x, n_time=n_time, n_noise=n_noise, t_min=t_min, importance=importance,
                                   include_constants=include_constants, generator=generator)
        else:
            log_prior = prior.log_prob(x)
    else:  # x is the latent u = x_{t_min}: fidelity of its decoding, prior of the noised marginal
        times = x.new_full((x.shape[0],), t_min)
        decoded = prior.denoise(x, times)
        if core.likelihood == "marginal":  # log p(y | u): the decoder's error integrated out (Gaussian law)
            error = core.error_posterior(operator)
            per_draw = decoded.reshape(batch, n, channels, vertices)
            # up to its constant, as op.log_likelihood: half the residual's Mahalanobis norm under G
            fidelity = 0.5 * torch.stack([error.mahalanobis((y - per_draw[:, k]).to(error.prior.mean.dtype))
                                          for k in range(n)], 1).reshape(-1).to(x.dtype)
        else:
            fidelity = -op.log_likelihood(y_rep, decoded)
        if prior_term == "score":  # d/du log p_t(u) = (alpha D(u, t) - u) / sigma^2; the value stays 0
            alpha, var = prior.sde.alpha(times[:1]).to(x.dtype), prior.sde.std(times[:1]).to(x.dtype) ** 2
            score = ((alpha * decoded - x) / var).detach()
            log_prior = (score * (x - x.detach())).flatten(1).sum(-1)
        elif prior_term == "elbo":
            log_prior = prior.marginal_elbo(x, t_min, n_time=n_time, n_noise=n_noise,
                                            include_constants=include_constants, generator=generator)
        else:
            log_prior = prior.marginal_log_prob(x, x.new_full((x.shape[0],), t_min))
    prior_nll = -log_prior
    entropy = -ladj.reshape(-1)
    if entropy_gradient == "path":  # the value of -log|det|, the gradient of log q(x) through x only
        entropy = entropy.detach() + (log_q - log_q.detach())
    loss = (fidelity + prior_weight * prior_nll + entropy).mean() / d
    with torch.no_grad():
        measured = op.measured(y_rep).to(y.dtype).expand_as(y_rep).sum() / (batch * n)
        terms = {
            "loss": float(loss),
            "fidelity": float(fidelity.mean() / d),
            "prior": float(prior_nll.mean() / d),
            "entropy": float(entropy.mean() / d),
            "fidelity_ratio": float(fidelity.mean() / (0.5 * measured.clamp_min(1))),
        }
    return loss, terms


# -- training ------------------------------------------------------------------------------------
@torch.no_grad()
def prepare_data(
    posterior: AmortizedPosterior, y: Tensor, operator: Operator | None, *, chunk: int = 1024
) -> dict[str, Tensor]:
    """Precompute the flow inputs of a training set once: ``{"y", "index", "cond"?, "loc"?}``.

    The reconstruction (e.g. a harmonic fill) is computed once per measurement here, not per step.

    Shapes:
        ``y``: ``(N, C, V)``; ``cond``: ``(N, Cc, V)``; ``loc``: ``(N, C, V)``; ``index``: ``(N,)``.
    """
    conds, locs = [], []
    for start in range(0, y.shape[0], chunk):
        idx = torch.arange(start, min(start + chunk, y.shape[0]))
        op = operator.select(idx) if operator is not None else None
        c, l = posterior.prepare(y[idx], op)
        conds.append(c)
        locs.append(l)
    data = {"y": y, "index": torch.arange(y.shape[0])}
    if conds[0] is not None:
        data["cond"] = torch.cat(conds).cpu()
    if locs[0] is not None:
        data["loc"] = torch.cat(locs).cpu()
    return data


def _initialize_actnorm(posterior: AmortizedPosterior, data: dict[str, Tensor], n: int, seed: int) -> None:
    if all(bool(m.initialized) for m in posterior.modules() if isinstance(m, ActNorm)):
        return
    k = min(64, data["y"].shape[0])
    cond = data["cond"][:k] if "cond" in data else None
    loc = data["loc"][:k] if "loc" in data else None
    device = posterior.flow.layout.valid.device
    posterior.flow.initialize(
        cond.to(device) if cond is not None else None,
        loc.to(device) if loc is not None else None,
        n=n,
        generator=torch.Generator(device).manual_seed(seed),
    )


def train_amortized(
    posterior: AmortizedPosterior,
    prior: ScorePrior,
    y: Tensor,
    operator: Operator,
    *,
    out_dir: str | Path | None,
    n_z: int = 4,
    n_time: int = 1,
    n_noise: int = 1,
    t_min: float = T_MIN,
    importance: bool = True,
    prior_weight: float = 1.0,
    prior_term: Literal["elbo", "exact", "score"] = "elbo",
    entropy_gradient: Literal["total", "path"] = "total",
    batch_size: int = 64,
    max_steps: int = 1000,
    lr: float = 1e-3,
    seed: int = 0,
    data: dict[str, Tensor] | None = None,
    callback: Any = None,
    **trainer_kwargs: Any,
) -> Trainer:
    """Train ``posterior`` on measurements only, amortized over ``y`` (resumes from ``out_dir``).

    Args:
        posterior: The sampler to train (its flow is trained in place; the EMA weights are in
            ``trainer.ema_model``).
        prior: The diffusion prior; frozen here (``requires_grad_(False)``), gradients still flow
            through it into the samples.
        y: Training measurements ``(N, C, V)``.
        operator: Their operator with one set of per-sample parameters per row (e.g.
            ``Inpainting(masks (N, V), sigma)``); the loss always uses the true operator, while
            what the flow sees depends on ``posterior.condition`` (blind mode: ``y`` only).
        out_dir: Checkpoint folder (``None``: no checkpoints).
        n_z, n_time, n_noise, t_min, importance, prior_weight, prior_term, entropy_gradient: See
            :func:`reverse_kl_loss`.
        batch_size: Measurements per step (each with ``n_z`` flow draws).
        max_steps: Optimizer steps.
        lr: Peak learning rate.
        seed: Seeds the batches, the draws and the ActNorm initialisation.
        data: Precomputed :func:`prepare_data` output (computed here when omitted).
        callback: Passed to :meth:`~manifold_ps.training.Trainer.fit` (return ``True`` to stop,
            e.g. at a wall-clock budget; a checkpoint is written first).
        **trainer_kwargs: Forwarded to :class:`~manifold_ps.training.Trainer` (``ema_decay``,
            ``spike_guard``, ``warmup_steps``, ``lr_schedule``, ``grad_clip``, ``amp``,
            ``checkpoint_every``, ``log_every``, ``progress``, ``device``, ``config``,
            ``fingerprint``, ...).

    Returns:
        The :class:`~manifold_ps.training.Trainer` after :meth:`~manifold_ps.training.Trainer.fit`.
    """
    if data is None:
        data = prepare_data(posterior, y, operator)
    _initialize_actnorm(posterior, data, n_z, seed)
    prior.requires_grad_(False)
    prior.eval()
    trainer_kwargs.setdefault("fingerprint", posterior.fingerprint)
    elbo_kwargs = dict(n_z=n_z, n_time=n_time, n_noise=n_noise, t_min=t_min, importance=importance,
                       prior_weight=prior_weight, prior_term=prior_term, entropy_gradient=entropy_gradient)

    def loss_fn(model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
        op = operator.select(batch["index"].cpu()).to(batch["y"].device)
        return reverse_kl_loss(model, prior, op, batch["y"], cond=batch.get("cond"), loc=batch.get("loc"),
                               generator=generator, **elbo_kwargs)

    trainer = Trainer(posterior, loss_fn, data, out_dir=out_dir, batch_size=batch_size, max_steps=max_steps,
                      lr=lr, seed=seed, **trainer_kwargs)
    prior.to(trainer.device)
    trainer.fit(callback=callback)
    return trainer


def fit_single(
    posterior: AmortizedPosterior,
    prior: ScorePrior,
    y: Tensor,
    operator: Operator,
    *,
    out_dir: str | Path | None = None,
    n_z: int = 16,
    max_steps: int = 1000,
    lr: float = 1e-3,
    **kwargs: Any,
) -> Trainer:
    """Per-measurement variant (Feng et al.): fit an unconditional flow to one measurement.

    ``posterior`` must be built with ``condition="none"`` and a flow with ``cond_channels=0``
    (a reconstruction as location is allowed: it is a constant for one ``y``). Every step uses
    ``n_z`` draws of the single ``y``.

    Args:
        posterior: The unconditional sampler.
        prior: The diffusion prior.
        y: One measurement ``(1, C, V)``.
        operator: Its operator.
        out_dir: Checkpoint folder.
        n_z: Flow draws per step.
        max_steps: Optimizer steps.
        lr: Learning rate.
        **kwargs: Forwarded to :func:`train_amortized`.
    """
    if posterior.condition != "none":
        raise ValueError("fit_single needs an AmortizedPosterior with condition='none'")
    if y.ndim != 3 or y.shape[0] != 1:
        raise ValueError(f"fit_single fits one measurement: y must have shape (1, C, V), got {tuple(y.shape)}")
    return train_amortized(posterior, prior, y, operator, out_dir=out_dir, n_z=n_z, batch_size=1,
                           max_steps=max_steps, lr=lr, **kwargs)
