"""Paint 2-D images onto a surface by planar projection (MNIST-on-bunny)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_finite
from .base import Geometry

__all__ = ["paint_images", "paint_images_on", "project_to_plane"]

Axis = Literal["x", "y", "z"]
# (u, v) plane axes for each viewing axis; v is "up" in the image.
_PLANE = {"z": (0, 1), "x": (2, 1), "y": (0, 2)}


def project_to_plane(positions: Tensor, axis: Axis = "z", margin: float = 0.05) -> Tensor:
    """Normalised image-plane coordinates of vertices, in ``[-1, 1]`` (``grid_sample`` convention).

    The projection drops ``axis``; the bounding box of the projected points is centred and scaled
    uniformly (aspect ratio kept) so its longer side spans ``2 * (1 - margin)``. ``v`` grows up,
    i.e. towards image row 0.

    Returns:
        ``(V, 2)`` tensor ``(gx, gy)`` on the device/dtype of ``positions``.
    """
    if axis not in _PLANE:
        raise ValueError(f"axis must be 'x', 'y' or 'z', got {axis!r}")
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be in [0, 1), got {margin!r}")
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (V, 3), got {tuple(positions.shape)}")
    check_finite(positions, "positions")
    iu, iv = _PLANE[axis]
    uv = positions[:, [iu, iv]]
    lo, hi = uv.min(dim=0).values, uv.max(dim=0).values
    half = (hi - lo).max().clamp_min(torch.finfo(uv.dtype).tiny) / 2 / (1 - margin)
    g = (uv - (lo + hi) / 2) / half
    return torch.stack([g[:, 0], -g[:, 1]], dim=-1)


def paint_images(positions: Tensor, images: Tensor, *, axis: Axis = "z", margin: float = 0.05) -> Tensor:
    """Sample each image at the projected vertex positions (bilinear, ``align_corners=False``,
    border padding: a point beyond the outermost pixel centres takes the edge pixel value).

    For the Stanford bunny (y up) ``axis="z"`` is a frontal view onto the x-y plane.

    Args:
        positions: Vertex positions ``(V, 3)``.
        images: Image batch ``(B, H, W)`` (or ``(B, 1, H, W)``).
        axis: Viewing axis dropped by the projection.
        margin: Fraction of the image half-width left free around the projected bounding box.

    Returns:
        ``(B, 1, V)`` on the device/dtype of ``images``.

    Example:
        >>> pos = torch.tensor([[-1.0, 1.0, 0.0], [1.0, -1.0, 0.0]])
        >>> img = torch.zeros(1, 4, 4); img[0, 0, 0] = 1.0
        >>> paint_images(pos, img, margin=0.0)
        tensor([[[1., 0.]]])
    """
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or not images.is_floating_point():
        raise ValueError(f"images must be a floating (B, H, W) batch, got {tuple(images.shape)} {images.dtype}")
    grid = project_to_plane(torch.as_tensor(positions).to(images), axis, margin)
    B = images.shape[0]
    grid = grid.view(1, 1, -1, 2).expand(B, -1, -1, -1)
    out = F.grid_sample(images[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, 0, :]


def paint_images_on(geometry: Geometry, images: Tensor, axis: Axis = "z", margin: float = 0.05) -> Tensor:
    """:func:`paint_images` with ``geometry.positions``: ``(B, H, W) -> (B, 1, V)``."""
    return paint_images(geometry.positions, images, axis=axis, margin=margin)
