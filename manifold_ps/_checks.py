"""Input validation shared by every layer (private).

Every public entry point validates its tensors at the boundary with these helpers and raises
:class:`ValueError` naming the argument and the problem. ``assert`` is never used for user input.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_finite", "check_signal", "check_generator_device", "check_data_range", "clip_bounds"]


def check_finite(x: Tensor, name: str) -> Tensor:
    """Raise if ``x`` holds NaN or infinite values.

    Args:
        x: Any tensor.
        name: Name of the argument, used in the error message.

    Returns:
        ``x`` itself, so the call can be chained.
    """
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s)")
    return x


def check_signal(x: Tensor, num_vertices: int, name: str = "x", *, channels: int | None = None) -> Tensor:
    """Validate a vertex signal of shape ``(B, C, V)``.

    Args:
        x: Signal to check.
        num_vertices: The number of vertices ``V`` the signal must have.
        name: Name of the argument, used in error messages.
        channels: If given, the number of channels ``C`` the signal must have.

    Returns:
        ``x`` itself.

    Shapes:
        x: ``(B, C, V)``.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 3:
        raise ValueError(f"{name} must have shape (batch, channels, vertices), got {tuple(x.shape)}")
    if x.shape[-1] != num_vertices:
        raise ValueError(
            f"{name} has {x.shape[-1]} vertices but the geometry has {num_vertices} (shape {tuple(x.shape)})"
        )
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} has {x.shape[1]} channels, expected {channels}")
    return check_finite(x, name)


def check_generator_device(generator: torch.Generator | None, device: torch.device) -> None:
    """Raise if a generator lives on another device type than the tensors it will draw for."""
    if generator is not None and generator.device.type != torch.device(device).type:
        raise ValueError(
            f"generator is on {generator.device.type} but the tensors are on {torch.device(device).type}"
        )


def check_data_range(data_range: object) -> tuple[float, float]:
    """Validate a data range ``(low, high)`` with ``low < high``; return it as floats."""
    try:
        low, high = (float(v) for v in data_range)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"data_range must be a pair (low, high) of numbers, got {data_range!r}") from None
    if not low < high:  # also refuses NaN
        raise ValueError(f"data_range must have low < high, got {data_range!r}")
    return low, high


def clip_bounds(clip_denoised: bool, data_range: tuple[float, float] | None) -> tuple[float, float] | None:
    """The validated ``(low, high)`` to clamp Tweedie estimates to, or None when ``clip_denoised`` is off.

    Shared by the ancestral prior sampler and the DPS / MCG baselines. A given ``data_range`` is
    validated even when clipping is off.
    """
    bounds = None if data_range is None else check_data_range(data_range)
    if not clip_denoised:
        return None
    if bounds is None:
        raise ValueError("clip_denoised=True needs data_range=(low, high), the range to clip the estimate to")
    return bounds
