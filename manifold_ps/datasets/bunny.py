"""The Stanford bunny meshes, and MNIST digits painted on a mesh (the bunny-MNIST workload).

The paper's 1889-vertex bunny is Stanford's ``bun_zipper_res3.ply`` (not a clean manifold: two
unreferenced vertices, duplicated triangles); ``bunny_1889.obj`` is a clean watertight decimation
with the same vertex count (its vertices do not correspond to res3's). The readers here return
plain numpy arrays so they do not depend on :mod:`manifold_ps.geometry`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
import torch
from torch import Tensor

from .._files import atomic_open
from .mnist import MNIST_FILES, load_mnist
from .paths import cache_root, resolve_file
from .registry import REGISTRY
from .signals import SignalDataset

__all__ = ["BUNNY_FILES", "bunny_path", "read_ply", "read_obj", "load_bunny", "BunnyMNIST"]

BunnyResolution = Literal["res3", "obj1889", "full", "res2", "res4"]

BUNNY_FILES: dict[str, str] = {
    "res3": "bunny/bun_zipper_res3.ply",
    "obj1889": "bunny/bunny_1889.obj",
    "full": "bunny/bun_zipper.ply",
    "res2": "bunny/bun_zipper_res2.ply",
    "res4": "bunny/bun_zipper_res4.ply",
}
"""Resolution name -> path relative to the data root."""


def bunny_path(
    resolution: BunnyResolution = "res3",
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    verify: bool | None = None,
) -> Path:
    """Path of a bunny mesh file (``.ply`` or ``.obj``), verified against the registry.

    Args:
        resolution: ``"res3"`` (1889 v, the paper's), ``"obj1889"`` (clean 1889 v), ``"full"``
            (35947 v), ``"res2"`` (8171 v) or ``"res4"`` (453 v).
        root: Data root.
        download: Fetch a missing file.
        verify: Checksum policy, see :func:`~manifold_ps.datasets.resolve_file`.

    Returns:
        The file path.
    """
    if resolution not in BUNNY_FILES:
        raise ValueError(f"resolution must be one of {sorted(BUNNY_FILES)}, got {resolution!r}")
    return resolve_file(BUNNY_FILES[resolution], root=root, download=download, verify=verify)


def read_ply(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read an ASCII PLY triangle mesh (as in the Stanford repository).

    Args:
        path: The ``.ply`` file.

    Returns:
        ``(vertices, faces)``; every vertex is kept, including unreferenced ones.

    Shapes:
        vertices: ``(V, 3)`` float64; faces: ``(F, 3)`` int64.
    """
    path = Path(path)
    with open(path, "r", encoding="ascii") as f:
        if f.readline().strip() != "ply":
            raise ValueError(f"{path}: not a PLY file")
        counts: dict[str, int] = {}
        order: list[str] = []
        properties: dict[str, list[str]] = {}
        current = ""
        while True:
            line = f.readline()
            if not line:
                raise ValueError(f"{path}: PLY header has no end_header")
            words = line.split()
            if not words:
                continue
            if words[0] == "format" and words[1] != "ascii":
                raise ValueError(f"{path}: only ASCII PLY is supported, got format {words[1]}")
            if words[0] == "element":
                current = words[1]
                counts[current] = int(words[2])
                order.append(current)
                properties[current] = []
            elif words[0] == "property":
                properties[current].append(words[-1])
            elif words[0] == "end_header":
                break
        if order[:2] != ["vertex", "face"]:
            raise ValueError(f"{path}: expected vertex then face elements, got {order}")
        nv, nf = counts["vertex"], counts["face"]
        xyz = [properties["vertex"].index(c) for c in "xyz"]
        lines = f.read().split("\n")
    if len(lines) < nv + nf:
        raise ValueError(f"{path}: truncated: header promises {nv} vertices and {nf} faces")
    vertices = np.array([lines[i].split() for i in range(nv)], dtype=np.float64)[:, xyz]
    face_rows = np.array([lines[nv + i].split()[:4] for i in range(nf)], dtype=np.int64)
    if not np.all(face_rows[:, 0] == 3):
        raise ValueError(f"{path}: only triangle faces are supported")
    faces = face_rows[:, 1:]
    _check_faces(path, faces, nv)
    return vertices, faces


def read_obj(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read the ``v`` and ``f`` lines of a triangle ``.obj`` file (1-based indices).

    Args:
        path: The ``.obj`` file.

    Returns:
        ``(vertices, faces)``.

    Shapes:
        vertices: ``(V, 3)`` float64; faces: ``(F, 3)`` int64 (0-based).
    """
    path = Path(path)
    vertices: list[list[str]] = []
    faces: list[list[str]] = []
    with open(path, "r", encoding="ascii") as f:
        for line in f:
            words = line.split()
            if not words:
                continue
            if words[0] == "v":
                vertices.append(words[1:4])
            elif words[0] == "f":
                if len(words) != 4:
                    raise ValueError(f"{path}: only triangle faces are supported, got {line.strip()!r}")
                faces.append([w.split("/")[0] for w in words[1:]])
    v = np.array(vertices, dtype=np.float64).reshape(-1, 3)
    fa = np.array(faces, dtype=np.int64).reshape(-1, 3) - 1
    _check_faces(path, fa, len(v))
    return v, fa


def _check_faces(path: Path, faces: np.ndarray, num_vertices: int) -> None:
    if faces.size and (faces.min() < 0 or faces.max() >= num_vertices):
        raise ValueError(f"{path}: face indices outside [0, {num_vertices})")


def load_bunny(
    resolution: BunnyResolution = "res3",
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    verify: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Load a Stanford bunny mesh as arrays.

    Args:
        resolution: See :func:`bunny_path`.
        root: Data root.
        download: Fetch a missing file.
        verify: Checksum policy.

    Returns:
        ``(vertices, faces)`` in the scanner frame (y up), all vertices kept.

    Shapes:
        vertices: ``(V, 3)`` float64; faces: ``(F, 3)`` int64. ``res3``: V = 1889, F = 3851.
    """
    path = bunny_path(resolution, root, download=download, verify=verify)
    return read_obj(path) if path.suffix == ".obj" else read_ply(path)


def _paint(positions: Tensor, images: Tensor, paint_kwargs: Mapping[str, Any]) -> Tensor:
    from manifold_ps.geometry.painting import paint_images

    out = paint_images(positions, images, **paint_kwargs)
    out = torch.as_tensor(out, dtype=torch.float32)
    if out.ndim == 2:
        out = out.unsqueeze(1)
    if out.ndim != 3 or out.shape[0] != images.shape[0] or out.shape[1] != 1 or out.shape[2] != positions.shape[0]:
        raise ValueError(
            f"paint_images returned shape {tuple(out.shape)}, expected ({images.shape[0]}, 1, {positions.shape[0]})"
        )
    return out


class BunnyMNIST(SignalDataset):
    """MNIST digits painted on the vertices of a mesh (the paper's bunny-MNIST signals).

    The painting (:func:`manifold_ps.geometry.painting.paint_images`) is done in chunks once and
    cached to ``cache_dir/<key>.pt``, where the key hashes the positions, the split, the number of
    digits, the painting parameters and the MNIST checksums.

    Args:
        positions: Vertex positions.
        split: ``"train"`` (60000) or ``"test"`` (10000).
        root: Data root for MNIST.
        num_samples: Use only the first ``num_samples`` digits of the split.
        cache_dir: Folder for the cached signals (default ``cache_root() / "bunny_mnist"``);
            ``False`` disables the cache.
        chunk_size: Digits painted per call.
        download: Fetch missing MNIST files.
        **paint_kwargs: Forwarded to ``paint_images``; ``axis="z"`` (frontal view of the y-up
            bunny) and ``margin=0.05`` unless given.

    Shapes:
        positions: ``(V, 3)``; ``signals``: ``(N, 1, V)`` float32 in [0, 1]; ``labels``: ``(N,)`` int64.
    """

    def __init__(
        self,
        positions: Tensor | np.ndarray,
        split: Literal["train", "test"] = "train",
        *,
        root: str | os.PathLike[str] | None = None,
        num_samples: int | None = None,
        cache_dir: str | os.PathLike[str] | Literal[False] | None = None,
        chunk_size: int = 4096,
        download: bool = False,
        **paint_kwargs: Any,
    ) -> None:
        positions = torch.as_tensor(np.asarray(positions), dtype=torch.float64)
        if positions.ndim != 2 or positions.shape[1] != 3:
            raise ValueError(f"positions must have shape (V, 3), got {tuple(positions.shape)}")
        if split not in MNIST_FILES:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if num_samples is not None and num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        paint_kwargs = {"axis": "z", "margin": 0.05, **paint_kwargs}
        key = self.cache_key(positions, split, num_samples, paint_kwargs)
        path = None
        if cache_dir is not False:
            path = Path(cache_dir if cache_dir is not None else cache_root() / "bunny_mnist") / f"{key}.pt"
        if path is not None and path.exists():
            blob = torch.load(path, map_location="cpu", weights_only=True)
            signals, labels = blob["signals"], blob["labels"]
        else:
            images, labels = load_mnist(split, root, download=download)
            if num_samples is not None:
                images, labels = images[:num_samples], labels[:num_samples]
            signals = torch.cat(
                [_paint(positions, images[i : i + chunk_size], paint_kwargs) for i in range(0, len(images), chunk_size)]
            )
            if path is not None:
                with atomic_open(path) as handle:
                    torch.save({"signals": signals, "labels": labels, "key": key}, handle)
        super().__init__(signals, labels, name=f"bunny-mnist-{split}")
        self.cache_path = path
        self.split = split

    @staticmethod
    def cache_key(
        positions: Tensor, split: str, num_samples: int | None, paint_kwargs: Mapping[str, Any]
    ) -> str:
        """Hex key of the cached signals for these inputs.

        Example:
            >>> pos = torch.zeros(4, 3, dtype=torch.float64)
            >>> len(BunnyMNIST.cache_key(pos, "test", 8, {"axis": 1}))
            24
        """
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(positions.detach().cpu().numpy(), dtype=np.float64).tobytes())
        meta = {
            "split": split,
            "num_samples": num_samples,
            "paint": {k: _fingerprint(paint_kwargs[k]) for k in sorted(paint_kwargs)},
            "mnist": [REGISTRY[f].sha256 for f in MNIST_FILES[split]],
            "version": 1,
        }
        h.update(json.dumps(meta, sort_keys=True).encode())
        return h.hexdigest()[:24]


def _fingerprint(value: Any) -> str:
    if isinstance(value, (Tensor, np.ndarray)):
        array = np.ascontiguousarray(torch.as_tensor(value).detach().cpu().numpy())
        return f"{array.dtype}{array.shape}:" + hashlib.sha256(array.tobytes()).hexdigest()
    return repr(value)

