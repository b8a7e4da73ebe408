"""Forward models ``y = A(x) + sigma * n`` acting on vertex signals ``(B, C, V)``.

The shape follows deepinv's ``Physics``: :meth:`Operator.A` is the noiseless forward map,
:meth:`Operator.forward` adds Gaussian noise, and linear operators add
:meth:`LinearOperator.A_adjoint`. Per-sample parameters (a mask per measurement) are buffers
indexed with :meth:`Operator.select`; ``forward`` never stores its arguments.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .._checks import check_generator_device, check_signal

__all__ = ["Operator", "LinearOperator", "operator_from_config", "register_operator"]

_REGISTRY: dict[str, type["Operator"]] = {}


def register_operator(cls: type["Operator"]) -> type["Operator"]:
    """Class decorator: make an operator reconstructible by :func:`operator_from_config`."""
    _REGISTRY[cls.__name__] = cls
    return cls


def operator_from_config(config: dict[str, Any]) -> "Operator":
    """Rebuild an operator from :meth:`Operator.config` output.

    Raises:
        ValueError: if the configuration names an unknown operator type.
    """
    kind = config.get("type")
    if kind not in _REGISTRY:
        raise ValueError(f"unknown operator type {kind!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[kind]._from_config(config)


class Operator(nn.Module):
    """Base class of forward models with additive white Gaussian noise.

    Args:
        num_vertices: Number of vertices ``V`` of the input signals.
        sigma: Standard deviation of the measurement noise (``sigma >= 0``).

    Shapes:
        ``x``: ``(B, C, V)``; ``y``: operator-dependent, ``(B, C, V)`` for vertex-shaped
        measurements (masking, denoising, blur), ``(B, C, M)`` otherwise.
    """

    linear: ClassVar[bool] = False

    def __init__(self, num_vertices: int, sigma: float) -> None:
        super().__init__()
        if num_vertices < 1:
            raise ValueError(f"num_vertices must be positive, got {num_vertices}")
        if not (sigma >= 0.0 and float(sigma) < float("inf")):
            raise ValueError(f"sigma must be a finite non-negative number, got {sigma}")
        self.num_vertices = int(num_vertices)
        self.sigma = float(sigma)

    # -- the model -----------------------------------------------------------------------------
    def A(self, x: Tensor) -> Tensor:  # noqa: N802 - the physics notation
        """Noiseless forward map."""
        raise NotImplementedError  # abstract

    def measured(self, y: Tensor) -> Tensor:
        """Boolean (broadcastable to ``y``) telling which entries of ``y`` are measurements."""
        return torch.ones((), dtype=torch.bool, device=y.device)

    def forward(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Simulate a noisy measurement ``y = A(x) + sigma * n``, zero where nothing is measured.

        Args:
            x: Clean signals.
            generator: Source of the noise.

        Returns:
            Noisy measurement.
        """
        check_signal(x, self.num_vertices, "x")
        check_generator_device(generator, x.device)
        ax = self.A(x)
        noise = torch.randn(ax.shape, generator=generator, device=ax.device, dtype=ax.dtype)
        return (ax + self.sigma * noise) * self.measured(ax).to(ax.dtype)

    def residual(self, y: Tensor, x: Tensor) -> Tensor:
        """Measurement residual ``y - A(x)`` on measured entries (zero elsewhere)."""
        ax = self.A(x)
        if ax.shape[1:] != y.shape[1:]:
            raise ValueError(f"y has shape {tuple(y.shape)} but A(x) has shape {tuple(ax.shape)}")
        return (y - ax) * self.measured(ax).to(ax.dtype)

    def log_likelihood(self, y: Tensor, x: Tensor) -> Tensor:
        """Gaussian log-likelihood up to its constant: ``-||y - A(x)||^2 / (2 sigma^2)``.

        Returns:
            Tensor of shape ``(B,)``.
        """
        if self.sigma == 0.0:
            raise ValueError("log_likelihood needs sigma > 0")
        r = self.residual(y, x)
        return -r.square().flatten(1).sum(-1) / (2 * self.sigma**2)

    # -- conditioning --------------------------------------------------------------------------
    def condition(self, y: Tensor) -> Tensor:
        """Vertex-shaped features of ``y`` that a conditional network reads: ``(B, Cc, V)``."""
        return y

    def condition_channels(self, channels: int) -> int:
        """Number of channels ``Cc`` of :meth:`condition` for signals with ``channels`` channels."""
        return channels

    # -- batching and serialisation --------------------------------------------------------------
    def select(self, index: Tensor) -> "Operator":
        """The operator of a sub-batch (per-sample parameters indexed by ``index``)."""
        return self

    def config(self) -> dict[str, Any]:
        """JSON/torch-serialisable description; :func:`operator_from_config` inverts it."""
        return {"type": type(self).__name__, "num_vertices": self.num_vertices, "sigma": self.sigma}

    @classmethod
    def _from_config(cls, config: dict[str, Any]) -> "Operator":
        kwargs = {k: v for k, v in config.items() if k != "type"}
        return cls(**kwargs)

    def extra_repr(self) -> str:
        return f"num_vertices={self.num_vertices}, sigma={self.sigma}"


class LinearOperator(Operator):
    """Operator whose noiseless part is linear; adds the adjoint ``A_adjoint``.

    Shapes:
        ``A``: ``(B, C, V) -> (B, C, M)``; ``A_adjoint``: ``(B, C, M) -> (B, C, V)``.
    """

    linear: ClassVar[bool] = True

    def A_adjoint(self, y: Tensor) -> Tensor:  # noqa: N802
        """Adjoint of :meth:`A` for the Euclidean inner products of inputs and outputs."""
        raise NotImplementedError  # abstract
