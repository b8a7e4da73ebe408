"""MNIST in the standard IDX format (gzip or raw), as float tensors in [0, 1].

IDX: a big-endian magic ``0x0000TTNN`` (``TT`` the element type, ``NN`` the number of dimensions),
then one big-endian uint32 per dimension, then the data, row-major.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .paths import resolve_file

__all__ = ["MNIST_FILES", "read_idx", "parse_idx", "load_mnist", "mnist_padded_32"]

MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("mnist/train-images-idx3-ubyte.gz", "mnist/train-labels-idx1-ubyte.gz"),
    "test": ("mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz"),
}
"""Split -> (images, labels) paths relative to the data root."""

_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode the bytes of an (uncompressed) IDX file.

    Args:
        data: The file's bytes.
        name: Name used in error messages (e.g. the file path).

    Returns:
        The array, in native byte order.

    Raises:
        ValueError: Bad magic, or data shorter / longer than the header says.

    Example:
        >>> import struct
        >>> parse_idx(struct.pack(">IIB", 0x0801, 1, 7)).tolist()
        [7]
        >>> parse_idx(b"\\x01\\x02\\x08\\x01")
        Traceback (most recent call last):
        ...
        ValueError: IDX data: bad IDX magic 0x01020801 ...not an IDX file?
    """
    if len(data) < 4:
        raise ValueError(f"{name}: only {len(data)} bytes, too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    type_code, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise ValueError(
            f"{name}: bad IDX magic 0x{magic:08x} (expected 0x0000TTNN with TT one of "
            f"{', '.join(f'0x{t:02x}' for t in _IDX_TYPES)} and NN >= 1); not an IDX file?"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: truncated IDX header ({len(data)} bytes, need {header})")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_TYPES[type_code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(
            f"{name}: IDX data {kind}: header says shape {shape} of {dtype.name} "
            f"({expected} bytes in all), file has {len(data)} bytes"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file, gzip-compressed (detected by its magic bytes) or raw.

    Args:
        path: The file.

    Returns:
        The array (e.g. uint8 ``(60000, 28, 28)`` for MNIST training images).

    Raises:
        ValueError: Corrupt gzip stream, bad magic or truncated data (the message names the file).
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as error:
            raise ValueError(f"{path}: corrupt or truncated gzip stream ({error})") from error
    return parse_idx(raw, str(path))


def load_mnist(
    split: Literal["train", "test"],
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    verify: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Load an MNIST split, scaled to [0, 1] by ``x / 255``.

    Args:
        split: ``"train"`` (60000 digits) or ``"test"`` (10000).
        root: Data root (default: ``$MANIFOLD_PS_DATA``, then the cache).
        download: Fetch missing files from the public mirrors.
        verify: Checksum policy, see :func:`~manifold_ps.datasets.resolve_file`.

    Returns:
        ``(images, labels)``.

    Shapes:
        images: ``(N, 28, 28)`` float32 in [0, 1]; labels: ``(N,)`` int64 in 0..9.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    image_file, label_file = MNIST_FILES[split]
    images = read_idx(resolve_file(image_file, root=root, download=download, verify=verify))
    labels = read_idx(resolve_file(label_file, root=root, download=download, verify=verify))
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"{image_file}: expected uint8 (N, 28, 28) images, got {images.dtype} {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{label_file}: {labels.shape} labels for {images.shape[0]} images")
    x = torch.from_numpy(images).to(torch.float32).div_(255.0)
    return x, torch.from_numpy(labels).to(torch.int64)


def mnist_padded_32(
    split: Literal["train", "test"],
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    verify: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """MNIST zero-padded from 28 x 28 to 32 x 32 (2 pixels on each side), for the image workload.

    Args:
        split: ``"train"`` or ``"test"``.
        root: Data root.
        download: Fetch missing files.
        verify: Checksum policy.

    Returns:
        ``(images, labels)``.

    Shapes:
        images: ``(N, 32, 32)`` float32 in [0, 1]; labels: ``(N,)`` int64.
    """
    images, labels = load_mnist(split, root, download=download, verify=verify)
    return torch.nn.functional.pad(images, (2, 2, 2, 2)), labels
