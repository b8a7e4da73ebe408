"""Conditional RealNVP over vertex signals: ``x = loc(y) + G(z, y)``, ``z ~ N(0, I)``.

Architecture (the paper's section 4.2, with a location, bounded scales and zero-initialised layers):

* ``steps`` flow steps (24 as in the paper), each ``ActNorm -> AffineCoupling(even) ->
  AffineCoupling(odd) -> FixedPermutation``, then a learned per-channel output scale that starts
  at ``init_scale`` (small noise around the location at the start of training), then (for a
  conditional flow) a per-vertex affine map read from the context, computed once per
  measurement (observed and missing vertices need very different spreads).
* The couplings are 1-D convolutional networks over the locality-ordered, padded sequence that
  read the untouched half and a context computed once per measurement from the condition
  (for masking: ``y``, the mask and a cheap reconstruction), optionally with geometry features
  such as Laplacian eigenvectors.
* An optional location ``loc`` (``(B, C, V)``, e.g. a harmonic fill of the observed values) is
  added to the output: the flow models the residual around a cheap reconstruction.

The public API takes and returns natural signals ``(B, C, V)``; internally everything runs on
sequences ``(B, C, L)`` whose padded positions stay exactly zero and carry no log-determinant,
and the base distribution is the standard normal over the ``C * V`` valid coordinates.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from .._checks import check_generator_device, check_signal
from ..geometry.layout import VertexLayout
from .bijections import ActNorm, AffineCoupling, ConditionalAffine, Bijection, Composite, ElementwiseScale, FixedPermutation, coupling_mask
from .conditioner import ConditionEncoder, CouplingNet

__all__ = ["ConditionalRealNVP", "ConditionalFlow"]


class ConditionalRealNVP(nn.Module):
    """Conditional RealNVP normalizing flow on the vertices of a geometry.

    Args:
        channels: Signal channels ``C``.
        layout: The :class:`~manifold_ps.geometry.VertexLayout` (ordering and padding) to run on;
            it is copied into the flow and saved with it.
        cond_channels: Channels ``Cc`` of the condition ``(B, Cc, V)``; 0 for an unconditional
            flow (the per-measurement variant).
        steps: Flow steps (two couplings each).
        hidden: Width of the coupling networks.
        blocks: Residual blocks per coupling network.
        kernel_size: Odd convolution kernel size.
        context_channels: Channels of the shared condition encoding.
        encoder_hidden: Width of the condition encoder.
        encoder_blocks: Residual blocks of the condition encoder.
        dilations: Dilations of the coupling networks, cycled over the steps.
        patch: Positions folded into channels inside the coupling networks (see
            :class:`~manifold_ps.flows.conditioner.CouplingNet`); 8 makes CPU training several
            times faster.
        geometry_features: Optional ``(V, k)`` per-vertex features (e.g. Laplacian eigenvectors)
            given to the condition encoder; stored as a buffer.
        scale_bound: Bound on each coupling's log-scale (``s = b tanh(raw / b)``).
        init_scale: Initial value of the learned output scale.
        split: Coupling split, see :func:`~manifold_ps.flows.bijections.coupling_mask`.
        permutation_window: Window of the fixed locality-preserving permutations.
        seed: Seed of the fixed permutations.

    Shapes:
        cond ``(B, Cc, V)``, loc ``(B, C, V)``; samples ``(B, n, C, V)``.

    Example:
        >>> layout = VertexLayout(10, multiple=4)
        >>> flow = ConditionalRealNVP(1, layout, cond_channels=2, steps=2, hidden=8)
        >>> x, ladj = flow(torch.randn(3, 2, 10), n=5)
        >>> x.shape, ladj.shape
        (torch.Size([3, 5, 1, 10]), torch.Size([3, 5]))
        >>> lp = flow.flow(torch.randn(3, 2, 10)).log_prob(torch.randn(4, 3, 1, 10))
        >>> lp.shape
        torch.Size([4, 3])
    """

    geometry_features: Tensor | None

    def __init__(
        self,
        channels: int,
        layout: VertexLayout,
        cond_channels: int,
        *,
        steps: int = 24,
        hidden: int = 32,
        blocks: int = 1,
        kernel_size: int = 3,
        context_channels: int = 16,
        encoder_hidden: int = 32,
        encoder_blocks: int = 2,
        dilations: tuple[int, ...] = (1, 2, 4, 8),
        patch: int = 1,
        geometry_features: Tensor | None = None,
        scale_bound: float = 2.0,
        init_scale: float = 1.0,
        split: Literal["checkerboard", "channels"] = "checkerboard",
        permutation_window: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if channels < 1 or cond_channels < 0 or steps < 1:
            raise ValueError(f"need channels >= 1, cond_channels >= 0, steps >= 1; got {channels}, {cond_channels}, {steps}")
        if not isinstance(layout, VertexLayout):
            raise ValueError(f"layout must be a VertexLayout, got {type(layout).__name__}")
        self.channels = int(channels)
        self.cond_channels = int(cond_channels)
        self.num_vertices = layout.num_vertices
        self.layout = VertexLayout(layout.num_vertices, layout.perm.cpu(), layout.length)
        length = self.layout.length
        valid = self.layout.valid
        k = 0
        if geometry_features is not None:
            geometry_features = torch.as_tensor(geometry_features)
            if geometry_features.ndim != 2 or geometry_features.shape[0] != self.num_vertices:
                raise ValueError(
                    f"geometry_features must have shape (V={self.num_vertices}, k), got {tuple(geometry_features.shape)}"
                )
            k = geometry_features.shape[1]
            feats = self.layout.to_sequence(geometry_features.T[None].float())[0]
            self.register_buffer("geometry_features", feats)
        else:
            self.geometry_features = None
        self._config: dict[str, Any] = {
            "channels": self.channels,
            "num_vertices": self.num_vertices,
            "length": length,
            "cond_channels": self.cond_channels,
            "steps": steps,
            "hidden": hidden,
            "blocks": blocks,
            "kernel_size": kernel_size,
            "context_channels": context_channels,
            "encoder_hidden": encoder_hidden,
            "encoder_blocks": encoder_blocks,
            "dilations": list(dilations),
            "patch": int(patch),
            "geometry_features_dim": k,
            "scale_bound": scale_bound,
            "init_scale": init_scale,
            "split": split,
            "permutation_window": permutation_window,
            "seed": seed,
        }
        conditional = self.cond_channels + k > 0
        # condition channels + geometry features + a validity indicator
        self.encoder = (
            ConditionEncoder(self.cond_channels + k + 1, context_channels, hidden=encoder_hidden, blocks=encoder_blocks,
                             kernel_size=kernel_size)
            if conditional
            else None
        )
        ctx = context_channels if conditional else 0
        layers: list[Bijection] = []
        for i in range(steps):
            dilation = dilations[i % len(dilations)]
            layers.append(ActNorm(channels, valid))
            for parity in (0, 1):
                net = CouplingNet(channels, ctx, hidden=hidden, blocks=blocks, kernel_size=kernel_size, dilation=dilation,
                                  patch=patch)
                layers.append(AffineCoupling(coupling_mask(channels, length, parity, split), valid, net, scale_bound))
            layers.append(FixedPermutation(valid, permutation_window, seed=seed * 1000 + i))
        layers.append(ElementwiseScale(channels, valid, init_scale))
        if conditional:
            layers.append(ConditionalAffine(channels, valid, ctx, scale_bound, kernel_size))
        self.transform = Composite(layers)

    # -- configuration ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Constructor arguments (tensors excluded; they live in the state dict)."""
        return dict(self._config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ConditionalRealNVP":
        """Build an untrained flow with the architecture of :meth:`config` (load the state next)."""
        cfg = dict(config)
        layout = VertexLayout(cfg.pop("num_vertices"), None, cfg.pop("length"))
        k = cfg.pop("geometry_features_dim")
        feats = torch.zeros(layout.num_vertices, k) if k else None
        cfg["dilations"] = tuple(cfg["dilations"])
        return cls(cfg.pop("channels"), layout, cfg.pop("cond_channels"), geometry_features=feats, **cfg)

    @property
    def num_dims(self) -> int:
        """Dimension ``C * V`` of the flow (valid coordinates)."""
        return self.channels * self.num_vertices

    @property
    def conditional(self) -> bool:
        """Whether the flow reads a context (condition or geometry features)."""
        return self.encoder is not None

    # -- internals -------------------------------------------------------------------------------
    def context(self, cond: Tensor | None, batch: int = 1) -> Tensor | None:
        """Encode the condition once per measurement: ``(B, Cc, V) -> (B, H, L)`` (or ``None``)."""
        if self.encoder is None:
            if cond is not None and cond.shape[1] > 0:
                raise ValueError("this flow is unconditional (cond_channels=0) but a condition was given")
            return None
        parts = []
        if self.cond_channels:
            if cond is None:
                raise ValueError(f"this flow needs a condition with {self.cond_channels} channels")
            check_signal(cond, self.num_vertices, "cond", channels=self.cond_channels)
            batch = cond.shape[0]
            parts.append(self.layout.to_sequence(cond))
        ref = parts[0] if parts else self.layout.valid.float()
        valid = self.layout.valid.to(ref.dtype).expand(batch, 1, -1)
        if self.geometry_features is not None:
            parts.append(self.geometry_features.to(ref.dtype).expand(batch, -1, -1))
        parts.append(valid)
        return self.encoder(torch.cat(parts, dim=1)) * valid

    def _batch(self, cond: Tensor | None, loc: Tensor | None, batch: int | None) -> int:
        for t in (cond, loc):
            if t is not None:
                return t.shape[0]
        return 1 if batch is None else int(batch)

    def _param_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _check_loc(self, loc: Tensor | None, batch: int) -> None:
        if loc is not None:
            check_signal(loc, self.num_vertices, "loc", channels=self.channels)
            if loc.shape[0] != batch:
                raise ValueError(f"loc has batch {loc.shape[0]}, the condition has {batch}")

    # -- generative direction ----------------------------------------------------------------------
    def forward(
        self,
        cond: Tensor | None = None,
        n: int = 1,
        *,
        loc: Tensor | None = None,
        z: Tensor | None = None,
        batch: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw ``n`` samples per condition in one batched pass and their ``log|det dG/dz|``.

        Args:
            cond: Condition ``(B, Cc, V)`` (``None`` for an unconditional flow).
            n: Samples per condition.
            loc: Optional location added to the output (the residual parameterisation).
            z: Optional base draws ``(B, n, C, V)``; drawn from ``N(0, I)`` if omitted.
            batch: Batch size of an unconditional flow without ``loc``.
            generator: Source of ``z``.

        Returns:
            ``(x, ladj)`` with shapes ``(B, n, C, V)`` and ``(B, n)``; differentiable.
        """
        b = self._batch(cond, loc, batch)
        self._check_loc(loc, b)
        ref = cond if cond is not None else loc
        dtype = ref.dtype if ref is not None else self._param_dtype()
        device = self.layout.valid.device
        if z is None:
            if n < 1:
                raise ValueError(f"n must be >= 1, got {n}")
            check_generator_device(generator, device)
            z = torch.randn(b, n, self.channels, self.num_vertices, generator=generator, device=device, dtype=dtype)
        elif z.ndim != 4 or z.shape[0] != b or z.shape[2:] != (self.channels, self.num_vertices):
            raise ValueError(f"z must have shape ({b}, n, {self.channels}, {self.num_vertices}), got {tuple(z.shape)}")
        n = z.shape[1]
        h = self.context(cond, b)
        zs = self.layout.to_sequence(z.reshape(b * n, self.channels, self.num_vertices))
        xs, ladj = self.transform.call_and_ladj(zs, h)
        x = self.layout.from_sequence(xs).reshape(b, n, self.channels, self.num_vertices)
        if loc is not None:
            x = x + loc[:, None]
        return x, ladj.reshape(b, n)

    def inverse_and_ladj(
        self, x: Tensor, cond: Tensor | None = None, *, loc: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Map samples back to the base space.

        Args:
            x: Samples ``(B, n, C, V)``.
            cond: Condition ``(B, Cc, V)``.
            loc: The location used in the forward direction.

        Returns:
            ``(z, log|det dz/dx|)`` with shapes ``(B, n, C, V)`` and ``(B, n)``.
        """
        if x.ndim != 4 or x.shape[2:] != (self.channels, self.num_vertices):
            raise ValueError(f"x must have shape (B, n, {self.channels}, {self.num_vertices}), got {tuple(x.shape)}")
        b, n = x.shape[:2]
        if cond is not None and cond.shape[0] != b:
            raise ValueError(f"x has batch {b}, cond has {cond.shape[0]}")
        self._check_loc(loc, b)
        if loc is not None:
            x = x - loc[:, None]
        h = self.context(cond, b)
        xs = self.layout.to_sequence(x.reshape(b * n, self.channels, self.num_vertices))
        zs, ladj = self.transform.inverse_and_ladj(xs, h)
        z = self.layout.from_sequence(zs).reshape(b, n, self.channels, self.num_vertices)
        return z, ladj.reshape(b, n)

    def fixed_permutations(self, x: Tensor, *, inverse: bool = False) -> Tensor:
        """The flow's fixed permutations alone, in order (or their inverse): what the flow does
        while every learned layer is the identity (couplings and conditional affine at zero,
        ActNorm unset, ``init_scale`` 1). ``(B, n, C, V) -> (B, n, C, V)``.

        A sampler whose flow input is not isotropic (a mixture's draw ``w``) feeds the flow
        ``fixed_permutations(w, inverse=True)``, so that its untrained flow returns ``w``.
        """
        b, n = x.shape[:2]
        s = self.layout.to_sequence(x.reshape(b * n, self.channels, self.num_vertices))
        perms = [layer for layer in self.transform.layers if isinstance(layer, FixedPermutation)]
        for layer in (reversed(perms) if inverse else perms):
            s, _ = layer.inverse_and_ladj(s) if inverse else layer.call_and_ladj(s)
        return self.layout.from_sequence(s).reshape(x.shape)

    def base_log_prob(self, z: Tensor) -> Tensor:
        """Standard normal log-density over the ``C * V`` coordinates: ``(..., C, V) -> (...)``."""
        return -0.5 * z.square().flatten(-2).sum(-1) - 0.5 * self.num_dims * math.log(2 * math.pi)

    def log_prob(self, x: Tensor, cond: Tensor | None = None, *, loc: Tensor | None = None) -> Tensor:
        """Exact ``log q(x | cond)``: ``(B, n, C, V) -> (B, n)``."""
        z, ladj = self.inverse_and_ladj(x, cond, loc=loc)
        return self.base_log_prob(z) + ladj

    def flow(self, cond: Tensor | None = None, loc: Tensor | None = None, *, batch: int | None = None) -> "ConditionalFlow":
        """The distribution ``q(x | cond)`` (zuko's ``flow(c)`` contract)."""
        return ConditionalFlow(self, cond, loc, batch=batch)

    @torch.no_grad()
    def initialize(self, cond: Tensor | None = None, loc: Tensor | None = None, *, n: int = 4,
                   generator: torch.Generator | None = None) -> None:
        """Run the data-dependent initialisation of the ActNorm layers on a batch (train mode)."""
        was_training = self.training
        self.train()
        self(cond, n, loc=loc, generator=generator)
        self.train(was_training)


class ConditionalFlow(Distribution):
    """``q(x | cond)`` of a :class:`ConditionalRealNVP`: a torch distribution with batch shape
    ``(B,)`` and event shape ``(C, V)``, and draws of shape ``sample_shape + (B, C, V)``.

    All draws of one call go through the flow in one batched pass.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}
    has_rsample = True

    def __init__(self, model: ConditionalRealNVP, cond: Tensor | None, loc: Tensor | None, *, batch: int | None = None) -> None:
        self.model = model
        self.cond = cond
        self.loc = loc
        b = model._batch(cond, loc, batch)
        super().__init__(torch.Size([b]), torch.Size([model.channels, model.num_vertices]), validate_args=False)

    def _draw(self, sample_shape: torch.Size, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        shape = torch.Size(sample_shape)
        n = max(1, math.prod(shape))
        b = self.batch_shape[0]
        x, ladj = self.model(self.cond, n, loc=self.loc, batch=b, generator=generator)
        return x.movedim(1, 0).reshape(*shape, *x.shape[:1], *x.shape[2:]), ladj.movedim(1, 0).reshape(*shape, b)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size(), *,
                generator: torch.Generator | None = None) -> Tensor:
        """Differentiable draws ``sample_shape + (B, C, V)``."""
        return self._draw(torch.Size(sample_shape), generator)[0]

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size(), *,
               generator: torch.Generator | None = None) -> Tensor:
        """Draws without gradient, ``sample_shape + (B, C, V)``."""
        with torch.no_grad():
            return self.rsample(sample_shape, generator=generator)

    def rsample_and_log_prob(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size(), *,
                             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draws and their exact log-density in one pass (``log N(z) - log|det dG/dz|``)."""
        shape = torch.Size(sample_shape)
        n = max(1, math.prod(shape))
        b = self.batch_shape[0]
        device = self.model.layout.valid.device
        ref = self.cond if self.cond is not None else self.loc
        dtype = ref.dtype if ref is not None else self.model._param_dtype()
        z = torch.randn(b, n, self.model.channels, self.model.num_vertices, generator=generator, device=device, dtype=dtype)
        x, ladj = self.model(self.cond, n, loc=self.loc, z=z, batch=b)
        logp = self.model.base_log_prob(z) - ladj
        return (x.movedim(1, 0).reshape(*shape, b, *x.shape[2:]), logp.movedim(1, 0).reshape(*shape, b))

    def log_prob(self, value: Tensor) -> Tensor:
        """Exact log-density of ``value`` of shape ``sample_shape + (B, C, V)``."""
        b = self.batch_shape[0]
        if value.ndim < 3 or value.shape[-3:] != (b, self.model.channels, self.model.num_vertices):
            raise ValueError(f"value must end with shape ({b}, {self.model.channels}, {self.model.num_vertices}), got {tuple(value.shape)}")
        shape = value.shape[:-3]
        x = value.reshape(-1, *value.shape[-3:]).movedim(0, 1)
        return self.model.log_prob(x, self.cond, loc=self.loc).movedim(1, 0).reshape(*shape, b)
