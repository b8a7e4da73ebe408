"""Global 2 m temperature on the GASP 4-degree grid (46 x 90 = 4140 vertices).

Three sources, all returned as :class:`TemperatureData` with values normalised by the GASP
train-split range, ``(T - 202.66 K) / (320.93 K - 202.66 K)`` (not clipped: the IPSL stand-in dips
slightly below 0):

* the paper's ERA5 set (GASP ``era5_temp2m_16x_{train,val,test}`` folders of per-time-step ``.npz``
  files), read by :func:`load_gasp` when present (it is distributed only through Google Drive);
* the gridded NetCDF stand-ins in ``t2m/`` (:func:`load_gridded_temperature`), clearly labelled as
  such: NCAR CSM annual means, CMIP6 IPSL-CM6A-LR monthly means, and 24 real ERA5 snapshots;
* one real ERA5 field in ``era5/`` (:func:`load_era5_field`), both as a GASP ``.npz`` and as the
  original 0.25-degree NetCDF subsampled with stride 16.

Vertex order is row-major over (latitude from +90 to -90, longitude from 0 to 356).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from torch import Tensor

from .paths import resolve_file, search_roots
from .signals import SignalDataset

__all__ = [
    "T_MIN",
    "T_MAX",
    "GASP_LATITUDES",
    "GASP_LONGITUDES",
    "GRIDDED_DATASETS",
    "TemperatureData",
    "to_kelvin",
    "from_kelvin",
    "check_gasp_grid",
    "read_gasp_npz",
    "load_gasp_folder",
    "load_gasp",
    "load_gridded_temperature",
    "load_era5_field",
]

T_MIN = 202.66
"""GASP normalisation: train-split minimum in K (maps to 0)."""
T_MAX = 320.93
"""GASP normalisation: train-split maximum in K (maps to 1)."""
GASP_LATITUDES = np.linspace(90.0, -90.0, 46)
"""The GASP grid latitudes, 90 to -90 in 4-degree steps."""
GASP_LONGITUDES = np.linspace(0.0, 356.0, 90)
"""The GASP grid longitudes, 0 to 356 in 4-degree steps."""
GASP_URL = "https://github.com/EmilienDupont/neural-function-distributions"

Split = Literal["train", "val", "test"]
_T = TypeVar("_T", np.ndarray, Tensor, float)

GRIDDED_DATASETS: dict[str, tuple[str, str, bool]] = {
    "t2m_4deg": (
        "t2m/t2m_4deg.nc",
        "ncar-csm-trefht-annual (ERA5 stand-in: NCAR climate-model annual means)",
        False,
    ),
    "t2m_4deg_ipsl_cm6a_lr_monthly_coarse": (
        "t2m/t2m_4deg_ipsl_cm6a_lr_monthly_coarse.nc",
        "cmip6-ipsl-cm6a-lr-monthly (ERA5 stand-in: CMIP6 monthly means, 9x18-degree source)",
        False,
    ),
    "t2m_4deg_era5_sample24": (
        "t2m/t2m_4deg_era5_sample24.nc",
        "era5-sample24 (real ERA5, 24 snapshots of March 2026)",
        True,
    ),
}
"""Name -> (path relative to the data root, description, is real ERA5)."""
_ALIASES = {
    "ncar": "t2m_4deg",
    "ipsl": "t2m_4deg_ipsl_cm6a_lr_monthly_coarse",
    "era5_sample24": "t2m_4deg_era5_sample24",
}


def from_kelvin(t: _T) -> _T:
    """Kelvin -> GASP-normalised values.

    Example:
        >>> round(from_kelvin(320.93), 6), round(from_kelvin(202.66), 6)
        (1.0, 0.0)
    """
    return (t - T_MIN) / (T_MAX - T_MIN)


def to_kelvin(x: _T) -> _T:
    """GASP-normalised values -> Kelvin (inverse of :func:`from_kelvin`).

    Example:
        >>> round(to_kelvin(from_kelvin(288.15)), 6)
        288.15
    """
    return x * (T_MAX - T_MIN) + T_MIN


@dataclass(frozen=True, eq=False)
class TemperatureData:
    """Temperature fields on the GASP grid, normalised to the GASP range.

    Attributes:
        values: Normalised temperatures, ``(N, 1, 4140)`` float32 (use :meth:`kelvin` for K).
        latitudes: ``(46,)`` float64, 90 to -90.
        longitudes: ``(90,)`` float64, 0 to 356.
        name: Which dataset this is (stand-ins say so, e.g. ``"cmip6-ipsl-cm6a-lr-monthly (ERA5 stand-in ...)"``).
        is_era5: Whether the fields are real ERA5 (False for the climate-model stand-ins).
        source: The file or folder read.
        kelvin_range: ``(T_MIN, T_MAX)``, the Kelvin values of 0 and 1.
        time: ``(N,)`` datetime64 or ``None``.
        member: ``(N,)`` ensemble member names, or ``None`` when the file has none.
        split: ``(N,)`` split labels (``"train"``/``"val"``/``"test"``), or ``None``.
        attrs: Global attributes of the file (title, source, licence, ...).
    """

    values: Tensor
    latitudes: np.ndarray
    longitudes: np.ndarray
    name: str
    is_era5: bool
    source: str
    kelvin_range: tuple[float, float] = (T_MIN, T_MAX)
    time: np.ndarray | None = None
    member: np.ndarray | None = None
    split: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.values.shape[0]

    def kelvin(self) -> Tensor:
        """The fields in Kelvin, ``(N, 1, 4140)`` float32."""
        return to_kelvin(self.values)

    def positions(self) -> np.ndarray:
        """Unit-sphere coordinates of the 4140 vertices, ``(4140, 3)`` float64, in vertex order."""
        lat, lon = np.meshgrid(np.deg2rad(self.latitudes), np.deg2rad(self.longitudes), indexing="ij")
        xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)
        return xyz.reshape(-1, 3)

    def dataset(self) -> SignalDataset:
        """The values as a :class:`SignalDataset`."""
        return SignalDataset(self.values, name=self.name)


def check_gasp_grid(latitudes: np.ndarray, longitudes: np.ndarray, source: str) -> None:
    """Raise ``ValueError`` unless the grid is ``linspace(90, -90, 46) x linspace(0, 356, 90)``.

    Example:
        >>> check_gasp_grid(GASP_LATITUDES, GASP_LONGITUDES, "x")
        >>> check_gasp_grid(GASP_LATITUDES[::-1], GASP_LONGITUDES, "x.nc")
        Traceback (most recent call last):
        ...
        ValueError: x.nc: latitude is not the GASP grid linspace(90, -90, 46) ...
    """
    for label, got, want in (("latitude", latitudes, GASP_LATITUDES), ("longitude", longitudes, GASP_LONGITUDES)):
        got = np.asarray(got, dtype=np.float64)
        if got.shape != want.shape or not np.allclose(got, want, atol=1e-4):
            spec = "linspace(90, -90, 46)" if label == "latitude" else "linspace(0, 356, 90)"
            head = np.array2string(got.ravel()[:3], precision=2)
            raise ValueError(f"{source}: {label} is not the GASP grid {spec} (shape {got.shape}, starts {head})")


def _check_values(kelvin: np.ndarray, source: str) -> None:
    if kelvin.ndim != 3 or kelvin.shape[1:] != (46, 90):
        raise ValueError(f"{source}: temperature must have shape (N, 46, 90), got {kelvin.shape}")
    if not np.isfinite(kelvin).all():
        bad = int((~np.isfinite(kelvin)).sum())
        raise ValueError(f"{source}: temperature contains {bad} NaN or infinite value(s)")


def _normalise(kelvin: np.ndarray) -> Tensor:
    values = from_kelvin(kelvin.astype(np.float64)).astype(np.float32)
    return torch.from_numpy(values.reshape(len(values), 1, 46 * 90))


def read_gasp_npz(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read one GASP per-time-step ``.npz`` and check its grid.

    Args:
        path: The file (keys ``latitude``, ``longitude``, ``temperature`` in K).

    Returns:
        ``(latitudes, longitudes, temperature)``, the latter in Kelvin.

    Shapes:
        latitudes ``(46,)``, longitudes ``(90,)``, temperature ``(46, 90)``.
    """
    with np.load(path) as data:
        missing = {"latitude", "longitude", "temperature"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: not a GASP .npz, missing keys {sorted(missing)}")
        lat, lon, t = data["latitude"], data["longitude"], data["temperature"]
    check_gasp_grid(lat, lon, str(path))
    _check_values(t[None], str(path))
    return lat.astype(np.float64), lon.astype(np.float64), t


def load_gasp_folder(folder: str | os.PathLike[str], *, name: str | None = None) -> TemperatureData:
    """Read every ``.npz`` of a GASP folder (sorted by file name) into one :class:`TemperatureData`.

    Args:
        folder: E.g. ``.../era5_temp2m_16x_test``.
        name: Dataset name (default: the folder name).

    Returns:
        The fields, in file-name order.
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.npz"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .npz files")
    fields = [read_gasp_npz(f)[2] for f in files]
    split = folder.name.rsplit("_", 1)[-1]
    return TemperatureData(
        values=_normalise(np.stack(fields)),
        latitudes=GASP_LATITUDES.copy(),
        longitudes=GASP_LONGITUDES.copy(),
        name=name or f"gasp-{folder.name} (ERA5, the paper's data)",
        is_era5=True,
        source=str(folder),
        split=np.full(len(files), split) if split in ("train", "val", "test") else None,
        attrs={"files": [f.name for f in files]},
    )


def load_gasp(split: Split, root: str | os.PathLike[str] | None = None) -> TemperatureData:
    """Load the paper's ERA5 split from ``<root>/era5/era5_temp2m_16x_<split>/`` (GASP layout).

    Args:
        split: ``"train"`` (8510 fields), ``"val"`` (1166) or ``"test"`` (2420).
        root: Data root (default: ``$MANIFOLD_PS_DATA``, then the cache).

    Returns:
        The fields.

    Raises:
        FileNotFoundError: The folder is absent; the message says where it looked and where the
            data can be obtained (GASP's Google Drive link, not downloadable automatically).
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    relative = f"era5/era5_temp2m_16x_{split}"
    roots = search_roots(root)
    for folder in roots:
        if (folder / relative).is_dir():
            return load_gasp_folder(folder / relative)
    raise FileNotFoundError(
        f"GASP ERA5 folder {relative!r} not found; looked in {', '.join(str(r / relative) for r in roots)}. "
        f"It is distributed only through the Google Drive link in {GASP_URL} (README): download it and "
        f"put the folder there, or set MANIFOLD_PS_DATA. Offline stand-ins: load_gridded_temperature()."
    )


def _resolve_gridded(
    path_or_name: str | os.PathLike[str],
    root: str | os.PathLike[str] | None,
    download: bool,
    verify: bool | None,
) -> tuple[Path, str, bool]:
    key = str(path_or_name)
    key = _ALIASES.get(key, key)
    if key in GRIDDED_DATASETS:
        relative, description, is_era5 = GRIDDED_DATASETS[key]
        return resolve_file(relative, root=root, download=download, verify=verify), description, is_era5
    path = Path(path_or_name)
    if not path.exists():
        raise FileNotFoundError(
            f"{key!r} is neither an existing file nor a known dataset "
            f"(known: {', '.join(list(GRIDDED_DATASETS) + list(_ALIASES))})"
        )
    for relative, description, is_era5 in GRIDDED_DATASETS.values():
        if path.name == Path(relative).name:
            return path, description, is_era5
    return path, f"{path.stem} (unregistered file)", False


def load_gridded_temperature(
    path_or_name: str | os.PathLike[str],
    split: Split | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    verify: bool | None = None,
) -> TemperatureData:
    """Load a ``t2m(time, latitude, longitude)`` NetCDF file on the GASP grid (the ``t2m/`` files).

    Args:
        path_or_name: A file path, or a name from :data:`GRIDDED_DATASETS` (``"t2m_4deg"``,
            ``"t2m_4deg_ipsl_cm6a_lr_monthly_coarse"``, ``"t2m_4deg_era5_sample24"``) or an alias
            (``"ncar"``, ``"ipsl"``, ``"era5_sample24"``).
        split: Keep only this split (by the file's ``split`` coordinate); ``None`` keeps all.
        root: Data root for names.
        download: Fetch a missing registry file (these derived files have no public source).
        verify: Checksum policy, see :func:`~manifold_ps.datasets.resolve_file`.

    Returns:
        The fields, normalised with the GASP constants.

    Raises:
        ValueError: Wrong grid, NaN values, or a split the file lacks (the message names the file).

    Shapes:
        values: ``(N, 1, 4140)`` float32.
    """
    import xarray as xr

    if split is not None and split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val', 'test' or None, got {split!r}")
    path, description, is_era5 = _resolve_gridded(path_or_name, root, download, verify)
    with xr.open_dataset(path) as ds:
        if "t2m" not in ds:
            raise ValueError(f"{path}: no variable 't2m' (variables: {list(ds.data_vars)})")
        da = ds["t2m"]
        if da.dims != ("time", "latitude", "longitude"):
            raise ValueError(f"{path}: t2m must have dims (time, latitude, longitude), got {da.dims}")
        check_gasp_grid(ds["latitude"].values, ds["longitude"].values, str(path))
        labels = ds["split"].values.astype(str) if "split" in ds.coords else None
        keep = slice(None)
        if split is not None:
            if labels is None:
                raise ValueError(f"{path}: has no 'split' coordinate, cannot select split={split!r}")
            keep = np.flatnonzero(labels == split)
            if keep.size == 0:
                raise ValueError(f"{path}: split {split!r} is empty")
        kelvin = np.asarray(da.values)[keep]
        _check_values(kelvin, str(path))
        time = ds["time"].values[keep]
        member = ds["member"].values.astype(str)[keep] if "member" in ds.coords else None
        attrs = dict(ds.attrs)
    return TemperatureData(
        values=_normalise(kelvin),
        latitudes=GASP_LATITUDES.copy(),
        longitudes=GASP_LONGITUDES.copy(),
        name=description,
        is_era5=is_era5,
        source=str(path),
        time=time,
        member=member,
        split=labels[keep] if labels is not None else None,
        attrs=attrs,
    )


def load_era5_field(
    source: Literal["npz", "nc"] = "npz",
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    verify: bool | None = None,
) -> TemperatureData:
    """The single real ERA5 field of 2012-12-01 14:00 UTC in ``era5/``, on the GASP grid.

    Args:
        source: ``"npz"`` (GASP per-time-step format) or ``"nc"`` (the 0.25-degree NetCDF,
            subsampled with stride 16, which reproduces the GASP grid; the two agree exactly).
        root: Data root.
        download: Fetch a missing file (only the ``.nc`` has a public source).
        verify: Checksum policy.

    Returns:
        One field, ``values`` of shape ``(1, 1, 4140)``.
    """
    time = np.array(["2012-12-01T14:00"], dtype="datetime64[ns]")
    if source == "npz":
        path = resolve_file("era5/era5_t2m_20121201T1400_4deg.npz", root=root, download=download, verify=verify)
        _, _, kelvin = read_gasp_npz(path)
    elif source == "nc":
        import xarray as xr

        path = resolve_file("era5/era5_t2m_20121201T1400_0p25deg.nc", root=root, download=download, verify=verify)
        with xr.open_dataset(path) as ds:
            da = ds["t2m"]
            if da.shape != (1, 721, 1440):
                raise ValueError(f"{path}: expected t2m of shape (1, 721, 1440), got {da.shape}")
            check_gasp_grid(ds["latitude"].values[::16], ds["longitude"].values[::16], str(path))
            kelvin = np.asarray(da.values[0, ::16, ::16], dtype=np.float32)
            time = ds["valid_time"].values
    else:
        raise ValueError(f"source must be 'npz' or 'nc', got {source!r}")
    kelvin = kelvin[None]
    _check_values(kelvin, str(path))
    return TemperatureData(
        values=_normalise(kelvin),
        latitudes=GASP_LATITUDES.copy(),
        longitudes=GASP_LONGITUDES.copy(),
        name="era5-20121201T1400 (real ERA5, one field)",
        is_era5=True,
        source=str(path),
        time=time,
    )
