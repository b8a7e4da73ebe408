"""Measurements: simulated from clean signals with a named operator, or a user's ``y`` plus mask.

A measurement file holds ``y`` and, for masked data, a boolean ``mask`` (``True`` = observed),
either in one file (``.npz`` / ``.pt`` keys or NetCDF variables ``y`` and ``mask``) or in two. A
``y`` with NaN at the unobserved entries needs no mask: the mask is where ``y`` is finite. The
measurements that ``manifold-ps train-flow`` stores in its folder are read too.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from .._files import atomic_open
from ..geometry import Geometry, random_vertex_mask
from ..operators import Denoising, HeatBlur, Inpainting, Operator, operator_from_config
from ._signals import as_signals, read_array

__all__ = ["OPERATORS", "MEASUREMENTS_FORMAT", "Measurements", "make_operator", "simulate_measurements",
           "load_measurements"]

OperatorName = Literal["inpainting", "denoising", "heat-blur"]
OPERATORS: tuple[str, ...] = ("inpainting", "denoising", "heat-blur")
"""Operators that measurements can be simulated with."""
MEASUREMENTS_FORMAT = "manifold_ps.measurements/1"
"""Value of the ``"format"`` key of a saved :class:`Measurements`."""


@dataclass
class Measurements:
    """Measurements ``y`` of signals on a geometry and their operator.

    Attributes:
        y: Measurements ``(N, C, V)``, float32 (zero where unobserved).
        operator: Their operator, one set of parameters per row (e.g. one mask each).
        x: The clean signals when they were simulated (for evaluation only), else ``None``.
        description: How they were made (operator, missing fraction, noise, source file, hash).

    Shapes:
        y, x: ``(N, C, V)``.
    """

    y: Tensor
    operator: Operator
    x: Tensor | None = None
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def reconstruct(self) -> Literal["harmonic", "adjoint"]:
        """The cheap reconstruction the flow starts from: harmonic fill for masks, else ``A^T y``."""
        return "harmonic" if isinstance(self.operator, Inpainting) else "adjoint"

    @property
    def mask(self) -> Tensor | None:
        """Observed vertices ``(N, V)`` for masking operators, else ``None``."""
        if not isinstance(self.operator, Inpainting):
            return None
        return self.operator.mask.expand(self.y.shape[0], -1)

    def save(self, path: str | os.PathLike[str], geometry: Geometry) -> Path:
        """Write the measurements (and the geometry's fingerprint) to ``path`` atomically."""
        blob = {"format": MEASUREMENTS_FORMAT, "fingerprint": geometry.fingerprint(), "y": self.y,
                "operator": self.operator.config(), "x": self.x, "description": self.description}
        with atomic_open(path) as fh:
            torch.save(blob, fh)
        return Path(path)


def _sha(*tensors: Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def make_operator(name: str, geometry: Geometry, n: int, *, missing: float = 0.3, sigma: float = 0.1,
                  blur_time: float = 1e-3, generator: torch.Generator | None = None) -> Operator:
    """The operator ``name`` for ``n`` measurements on ``geometry``.

    Args:
        name: ``"inpainting"`` (a random mask per measurement with ``missing`` of the vertices
            hidden), ``"denoising"`` or ``"heat-blur"`` (heat diffusion for ``blur_time``
            through the first 64 Laplacian eigenvectors, fewer on geometries under 65 vertices).
        geometry: The geometry.
        n: Number of measurements.
        missing: Missing fraction of ``"inpainting"``, in ``[0, 1)``.
        sigma: Noise standard deviation.
        blur_time: Diffusion time of ``"heat-blur"``.
        generator: Draws the masks.

    Returns:
        The operator.

    Example:
        >>> from manifold_ps.geometry import ImageGrid
        >>> op = make_operator("inpainting", ImageGrid(4, 5), 3, missing=0.4)
        >>> tuple(op.mask.shape), int((~op.mask).sum())
        ((3, 20), 24)
    """
    V = geometry.num_vertices
    if name == "inpainting":
        if not 0.0 <= missing < 1.0:
            raise ValueError(f"missing must lie in [0, 1), got {missing}")
        return Inpainting(random_vertex_mask(V, missing, batch=n, generator=generator), sigma)
    if name == "denoising":
        return Denoising(V, sigma)
    if name == "heat-blur":
        return HeatBlur.from_geometry(geometry, blur_time, k=min(64, V - 1), sigma=sigma).float()
    raise ValueError(f"unknown operator {name!r}; choose one of {list(OPERATORS)}")


def simulate_measurements(signals: Tensor, geometry: Geometry, operator: str = "inpainting", *,
                          missing: float = 0.3, sigma: float = 0.1, blur_time: float = 1e-3, seed: int = 0,
                          source: str = "signals") -> Measurements:
    """Measure clean signals with a named operator (masks and noise seeded by ``seed``).

    Args:
        signals: Clean signals ``(N, C, V)``.
        geometry: Their geometry.
        operator: ``"inpainting"``, ``"denoising"`` or ``"heat-blur"`` (see :func:`make_operator`).
        missing: Missing fraction of ``"inpainting"``.
        sigma: Noise standard deviation.
        blur_time: Diffusion time of ``"heat-blur"``.
        seed: Seeds the masks and the noise: the same call gives the same measurements.
        source: Where the signals came from (kept in the description).

    Returns:
        The measurements, with ``x`` the clean signals.

    Example:
        >>> from manifold_ps.geometry import ImageGrid
        >>> m = simulate_measurements(torch.rand(4, 1, 6), ImageGrid(2, 3), missing=0.5, sigma=0.0)
        >>> m.y.shape, int(m.mask.sum())
        (torch.Size([4, 1, 6]), 12)
    """
    x = as_signals(signals, geometry, source=source).x
    g = torch.Generator().manual_seed(seed)
    op = make_operator(operator, geometry, x.shape[0], missing=missing, sigma=sigma, blur_time=blur_time, generator=g)
    y = op(x, generator=g)
    description: dict[str, Any] = {"operator": operator, "sigma_y": float(sigma), "seed": int(seed), "source": source,
                                   "signals_sha256": _sha(x)}
    if operator == "inpainting":
        description["missing_fraction"] = float(missing)
    if operator == "heat-blur":
        description["blur_time"] = float(blur_time)
    return Measurements(y, op, x, description)


def _stored(blob: dict[str, Any], path: Path, geometry: Geometry, which: str | None) -> Measurements:
    if blob.get("fingerprint") not in (None, geometry.fingerprint()):
        raise ValueError(f"{path} was made for another geometry (fingerprint {blob.get('fingerprint')!r}, "
                         f"this one is {geometry.fingerprint()!r})")
    if blob.get("format") == MEASUREMENTS_FORMAT:
        return Measurements(blob["y"].float(), operator_from_config(blob["operator"]),
                            None if blob.get("x") is None else blob["x"].float(), dict(blob.get("description", {})))
    if "sets" in blob:  # a benchmark task folder's measurements
        name = which or "train"
        if name not in blob["sets"]:
            raise ValueError(f"{path} has the measurement sets {sorted(blob['sets'])}, not {name!r}")
        s = blob["sets"][name]
        return Measurements(s["y"].float(), operator_from_config(s["operator"]), s["x"].float(), {"set": name})
    if "train_y" in blob:  # written by train-flow --workload bunny-mnist
        name = which or "test"
        if name not in ("train", "test"):
            raise ValueError(f"{path} has the measurement sets ['test', 'train'], not {name!r}")
        x = blob.get("test_x") if name == "test" else None
        return Measurements(blob[f"{name}_y"].float(), operator_from_config(blob[f"{name}_operator"]),
                            None if x is None else x.float(), {"set": name})
    raise ValueError(f"{path} is a torch file but not a measurements file (keys {sorted(blob)[:8]}); save y and "
                     "mask as arrays (keys 'y' and 'mask') or write it with Measurements.save")


def load_measurements(path: str | os.PathLike[str], geometry: Geometry, *, mask: str | os.PathLike[str] | None = None,
                      sigma: float | None = None, operator: dict[str, Any] | None = None,
                      which: str | None = None) -> Measurements:
    """A user's measurements (``y`` plus mask) or stored ones, checked against ``geometry``.

    Args:
        path: ``.npz`` / ``.pt`` / ``.nc`` file with ``y`` (and ``mask``), a ``.npy`` of ``y``, or a
            ``measurements.pt`` written by :meth:`Measurements.save` or ``manifold-ps train-flow``.
        geometry: The geometry.
        mask: A separate mask file (bool or 0/1, ``(N, V)`` or ``(V,)``; ``True`` = observed).
        sigma: Noise standard deviation of ``y`` (default: the one stored with ``operator``).
        operator: The operator description a sampler was trained with (``AmortizedPosterior.
            operator_config``): its type is used when no mask is given (e.g. denoising).
        which: The set of a stored file with several (``"train"``, ``"test"``).

    Returns:
        The measurements (``x`` is ``None`` unless the file stores clean signals).

    Raises:
        ValueError: naming the file for a wrong shape (found and expected), NaN at observed
            entries, a mask of another shape, or a missing noise level.

    Example:
        >>> import pathlib, tempfile
        >>> from manifold_ps.geometry import ImageGrid
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "meas.npz"
        >>> y = np.array([[0.5, np.nan, 0.2, 0.1, np.nan, 0.3]])
        >>> np.savez(path, y=y)
        >>> m = load_measurements(path, ImageGrid(2, 3), sigma=0.1)
        >>> m.mask.tolist(), m.y[0, 0, 1].item()
        ([[True, False, True, True, False, True]], 0.0)
    """
    path = Path(path)
    if path.suffix.lower() in (".pt", ".pth") and path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"{path} could not be read ({type(err).__name__}: {err})") from None
        if isinstance(blob, dict) and ("format" in blob or "sets" in blob or "train_y" in blob):
            return _stored(blob, path, geometry, which)
    y_arr, dims = read_array(path, "y" if path.suffix.lower() not in (".npy",) else None)
    y = as_signals(y_arr, geometry, source=str(path), dims=dims, allow_nan=True).x
    mask_t: Tensor | None = None
    if mask is not None:
        m_arr, m_dims = read_array(mask, "mask" if Path(mask).suffix.lower() not in (".npy",) else None)
        mask_t = _as_mask(m_arr, m_dims, geometry, y, str(mask))
    else:
        try:
            m_arr, m_dims = read_array(path, "mask")
        except ValueError:
            m_arr = None
        if m_arr is not None and path.suffix.lower() != ".npy":
            mask_t = _as_mask(m_arr, m_dims, geometry, y, str(path))
    nan = ~torch.isfinite(y)
    if mask_t is None and bool(nan.any()):
        mask_t = ~nan.any(1)  # NaN marks the unobserved vertices
    if mask_t is not None:
        observed_nan = nan & mask_t[:, None, :]
        if bool(observed_nan.any()):
            raise ValueError(f"{path}: y is NaN at {int(observed_nan.sum())} observed entries (mask True); "
                             "mark them unobserved in the mask or fill them")
        y = torch.where(mask_t[:, None, :], y.nan_to_num(0.0), torch.zeros((), dtype=y.dtype))
    kind = (operator or {}).get("type", "Inpainting" if mask_t is not None else "Denoising")
    if sigma is None:
        sigma = (operator or {}).get("sigma")
        if sigma is None:
            raise ValueError(f"{path}: the noise level of y is unknown; give sigma (--sigma)")
    op: Operator
    if kind == "Inpainting":
        if mask_t is None:
            raise ValueError(f"{path} has no mask (variable 'mask', a --mask file, or NaN at unobserved entries), "
                             "but the operator is masking")
        op = Inpainting(mask_t, float(sigma))
    elif kind == "Denoising":
        op = Denoising(geometry.num_vertices, float(sigma))
    else:
        op = operator_from_config({**(operator or {}), "sigma": float(sigma)})
    return Measurements(y, op, None, {"operator": kind, "sigma_y": float(sigma), "source": str(path),
                                      "sha256": _sha(y, mask_t if mask_t is not None else torch.zeros(0))})


def _as_mask(arr: np.ndarray, dims: tuple[str, ...] | None, geometry: Geometry, y: Tensor, source: str) -> Tensor:
    V = geometry.num_vertices
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{source}: the mask must be boolean or 0/1 (True = observed), found other values")
        arr = arr.astype(bool)
    m = as_signals(arr, geometry, source=f"{source} (mask)", dims=dims).x.bool()  # (N or 1, C or 1, V)
    m = m.all(1)
    if m.shape[0] not in (1, y.shape[0]):
        raise ValueError(f"{source}: the mask has {m.shape[0]} rows but y has {y.shape[0]} measurements")
    return m.expand(y.shape[0], V).clone()
