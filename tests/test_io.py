"""manifold_ps.io: geometry descriptions, signal files in every format, measurement files, the
geometry saved beside a model, and the posterior dataset; the CLI's --help covers every option."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from manifold_ps.geometry import Icosphere, ImageGrid, Mesh, SphereGrid
from manifold_ps.io import (grid_from_dataset, load_geometry, load_measurements, load_signals, read_geometry,
                            save_geometry, simulate_measurements)


def _write(path: Path, x: np.ndarray) -> Path:
    import xarray as xr

    if path.suffix == ".npy":
        np.save(path, x)
    elif path.suffix == ".npz":
        np.savez(path, signals=x, other=np.zeros(2))
    elif path.suffix == ".pt":
        torch.save({"x": torch.from_numpy(x)}, path)
    else:
        xr.Dataset({"field": (("sample", "vertex"), x)}).to_netcdf(path)
    return path


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt", ".nc"])
def test_signals_from_every_format(tmp_path: Path, suffix: str) -> None:
    x = np.random.default_rng(0).normal(size=(5, 12))
    s = load_signals(_write(tmp_path / f"x{suffix}", x), ImageGrid(3, 4))
    assert s.x.shape == (5, 1, 12) and s.x.dtype == torch.float32 and s.original_dtype == "float64"
    np.testing.assert_allclose(s.x[:, 0].numpy(), x, rtol=1e-6)
    assert s.data_range == pytest.approx((x.min(), x.max()), rel=1e-6)


def test_zarr_is_an_optional_extra(tmp_path: Path) -> None:
    import xarray as xr

    xr.Dataset({"field": (("sample", "vertex"), np.ones((2, 12)))}).to_zarr(tmp_path / "x.zarr", consolidated=False)
    assert load_signals(tmp_path / "x.zarr", ImageGrid(3, 4)).x.shape == (2, 1, 12)


def test_ambiguous_arrays_ask_for_a_name(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 12)), b=np.zeros((2, 12)))
    with pytest.raises(ValueError, match=r"two.npz holds several arrays \['a', 'b'\]"):
        load_signals(tmp_path / "two.npz", ImageGrid(3, 4))
    assert load_signals(tmp_path / "two.npz", ImageGrid(3, 4), variable="b").x.shape == (2, 1, 12)


@pytest.mark.parametrize("kwargs", [{"icosphere": 1}, {"image": "3x4"}, {"grid": "nc"}, {"mesh": "ply"}],
                         ids=["icosphere", "image", "grid", "mesh"])
def test_geometry_saved_beside_a_model_rebuilds_the_same(tmp_path: Path, kwargs: dict) -> None:
    import trimesh
    import xarray as xr

    if kwargs.get("grid"):
        xr.Dataset(coords={"latitude": np.linspace(90, -90, 5), "longitude": np.arange(-180, 180, 60.0)}).to_netcdf(
            tmp_path / "g.nc")
        kwargs = {"grid": tmp_path / "g.nc"}
    if kwargs.get("mesh"):
        trimesh.creation.icosphere(subdivisions=1).export(tmp_path / "m.ply")
        kwargs = {"mesh": tmp_path / "m.ply"}
    geometry = load_geometry(**kwargs)
    again = read_geometry(save_geometry(geometry, tmp_path / "geometry.npz"))
    assert type(again) is type(geometry) and again.fingerprint() == geometry.fingerprint()


def test_geometry_descriptions_are_validated(tmp_path: Path) -> None:
    import xarray as xr

    with pytest.raises(ValueError, match="exactly one geometry"):
        load_geometry(icosphere=1, image="2x2")
    with pytest.raises(ValueError, match="image size must be HxW"):
        load_geometry(image="32")
    xr.Dataset(coords={"lat": [10.0, 20.0], "lon": [0.0, 10.0, 20.0]}).to_netcdf(tmp_path / "patch.nc")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'patch.nc'}: the axes 'lat' / 'lon' are not a regular global grid"):
        grid_from_dataset(tmp_path / "patch.nc")
    xr.Dataset(coords={"north": [10.0, 20.0]}).to_netcdf(tmp_path / "none.nc")
    with pytest.raises(ValueError, match=rf"{tmp_path / 'none.nc'}: found no latitude coordinate"):
        grid_from_dataset(tmp_path / "none.nc")
    assert isinstance(load_geometry(icosphere=0), Icosphere) and isinstance(load_geometry(image=(2, 3)), ImageGrid)


def test_grid_signals_in_lat_lon_layout(tmp_path: Path) -> None:
    grid = SphereGrid(np.linspace(-60, 60, 3), np.arange(0, 360, 90.0))
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.save(tmp_path / "x.npy", x)
    np.testing.assert_array_equal(load_signals(tmp_path / "x.npy", grid).x.numpy(), x.reshape(2, 1, 12))


def test_user_measurements_y_and_mask_files(tmp_path: Path) -> None:
    grid = ImageGrid(2, 3)
    y = np.random.default_rng(0).normal(size=(4, 6))
    mask = np.random.default_rng(1).random((4, 6)) < 0.5
    np.save(tmp_path / "y.npy", np.where(mask, y, 123.0))  # garbage where unobserved: zeroed
    np.save(tmp_path / "mask.npy", mask.astype(np.int8))
    m = load_measurements(tmp_path / "y.npy", grid, mask=tmp_path / "mask.npy", sigma=0.2)
    assert m.operator.sigma == 0.2 and torch.equal(m.mask, torch.from_numpy(mask))
    np.testing.assert_allclose(m.y[:, 0].numpy(), np.where(mask, y, 0.0), rtol=1e-6)
    with pytest.raises(ValueError, match=r"y.npy: the noise level of y is unknown; give sigma"):
        load_measurements(tmp_path / "y.npy", grid, mask=tmp_path / "mask.npy")
    # without a mask and without NaN: denoising measurements
    assert type(load_measurements(tmp_path / "y.npy", grid, sigma=0.1).operator).__name__ == "Denoising"


@pytest.mark.parametrize("operator", ["denoising", "heat-blur"])
def test_other_operators_through_the_api(tmp_path: Path, operator: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from manifold_ps.api import sample_posterior, train_posterior, train_prior_on
    from manifold_ps.benchmarking import pipeline
    from manifold_ps.config import build_config

    grid = ImageGrid(3, 4)
    x = torch.rand(16, 1, 12, generator=torch.Generator().manual_seed(0))
    cfg = build_config("smoke", overrides={"prior.train_steps": 1, "prior.batch_size": 4, "flow.train_steps": 1,
                                           "flow.batch_size": 4})
    prior = train_prior_on(grid, x, cfg, tmp_path / "prior")
    meas = simulate_measurements(x, grid, operator, sigma=0.05, blur_time=0.5)
    if operator == "heat-blur":  # the Gaussian base's dense path, refused above DENSE_LIMIT signal entries
        monkeypatch.setattr(pipeline, "DENSE_LIMIT", 8)
        with pytest.raises(ValueError, match=r"a dense \(12 x 12\) HeatBlur posterior .*set flow.base='fill'"):
            train_posterior(prior, meas, cfg, tmp_path / "flow", geometry=grid)
        monkeypatch.undo()
    posterior = train_posterior(prior, meas, cfg, tmp_path / "flow", geometry=grid)
    assert posterior.operator_config["type"] == {"denoising": "Denoising", "heat-blur": "HeatBlur"}[operator]
    assert posterior.base is not None  # the exact Gaussian posterior as base, for the blur too
    stored = load_measurements(tmp_path / "flow" / "measurements.pt", grid)
    assert sample_posterior(posterior, stored.y[:2], stored.operator, n=4).mean.shape == (2, 1, 12)


def _actions(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [(name, action) for name, p in sub.choices.items() for action in p._actions]


def test_help_explains_every_option() -> None:
    from manifold_ps.cli import build_parser

    parser = build_parser()
    missing = [f"{name} {a.option_strings}" for name, a in _actions(parser)
               if a.option_strings and not a.help and a.dest != "help"]
    assert not missing, f"options without help: {missing}"
    commands = {name for name, _ in _actions(parser)}
    assert commands == {"train-prior", "train-flow", "sample"}
