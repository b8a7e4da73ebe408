"""The Olivetti / AT&T ORL faces (400 images, 40 subjects), a small real face set for image grids."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import Tensor

from .paths import resolve_file

__all__ = ["OLIVETTI_FILE", "read_olivetti", "load_olivetti"]

OLIVETTI_FILE = "faces/olivettifaces.mat"
"""Path relative to the data root."""


def read_olivetti(path: str | os.PathLike[str]) -> np.ndarray:
    """Read ``olivettifaces.mat`` as upright uint8 images.

    Args:
        path: The MATLAB file (variable ``faces``, uint8 ``[4096, 400]``, one image per column).

    Returns:
        Upright images.

    Shapes:
        ``(400, 64, 64)`` uint8.
    """
    from scipy.io import loadmat

    mat = loadmat(path)
    if "faces" not in mat:
        raise ValueError(f"{path}: no variable 'faces' (found {sorted(k for k in mat if not k.startswith('__'))})")
    faces = np.asarray(mat["faces"])
    if faces.shape != (4096, 400):
        raise ValueError(f"{path}: 'faces' must have shape (4096, 400), got {faces.shape}")
    return np.ascontiguousarray(faces.T.reshape(400, 64, 64).transpose(0, 2, 1))


def load_olivetti(
    size: int = 32,
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    verify: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Load the Olivetti faces scaled by 1/255 and area-downsampled (average pooling) to ``size``.

    Args:
        size: Output side; must divide 64 (64 keeps the original resolution).
        root: Data root.
        download: Fetch a missing file.
        verify: Checksum policy, see :func:`~manifold_ps.datasets.resolve_file`.

    Returns:
        ``(images, subjects)``: 10 consecutive images per subject.

    Shapes:
        images: ``(400, size, size)`` float32 in [0, 1]; subjects: ``(400,)`` int64 in 0..39.
    """
    if size < 1 or 64 % size:
        raise ValueError(f"size must divide 64, got {size}")
    images = read_olivetti(resolve_file(OLIVETTI_FILE, root=root, download=download, verify=verify))
    x = torch.from_numpy(images).to(torch.float32).div_(255.0)
    factor = 64 // size
    x = x.reshape(400, size, factor, size, factor).mean(dim=(2, 4))
    return x, torch.arange(400, dtype=torch.int64) // 10
