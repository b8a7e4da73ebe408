"""A user's own data end to end, in seconds: a mesh file and a signal file written here, through
the command line (train-prior -> train-flow -> sample -> NetCDF), the Python API in three calls,
and a regular lat/lon grid given as NetCDF."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from manifold_ps.cli import main

TINY = ["--profile", "smoke", "--no-progress", "--device", "cpu", "--set", "prior.batch_size=8",
        "--set", "flow.batch_size=4"]


def _fields(positions: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Smooth random fields: random low-order polynomials of the positions, float64, (n, V)."""
    rng = np.random.default_rng(seed)
    coef = rng.normal(size=(n, 4))
    return coef[:, :1] + coef[:, 1:] @ positions.T * 0.5


@pytest.fixture
def mesh_files(tmp_path: Path) -> tuple[Path, Path]:
    mesh = trimesh.creation.icosphere(subdivisions=1)
    path = tmp_path / "ball.ply"
    mesh.export(path)
    from manifold_ps.geometry import Mesh

    signals = _fields(Mesh.from_file(path).positions.numpy(), 24)
    np.save(tmp_path / "fields.npy", signals)  # float64, (24, 42): converted and reshaped
    return path, tmp_path / "fields.npy"


def test_cli_end_to_end_on_a_mesh_file(mesh_files: tuple[Path, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    import xarray as xr

    mesh, signals = mesh_files
    prior_dir, flow_dir = tmp_path / "prior", tmp_path / "flow"
    assert main(["train-prior", "--mesh", str(mesh), "--signals", str(signals), "--out", str(prior_dir),
                 "--steps", "3", *TINY]) == 0
    data = json.loads((prior_dir / "data.json").read_text())
    assert data["signals"]["shape"] == [24, 1, 42] and data["signals"]["dtype"] == "float64"
    assert data["signals"]["data_range"][0] < data["signals"]["data_range"][1]
    assert main(["train-flow", "--prior", str(prior_dir / "prior.pt"), "--signals", str(signals),
                 "--operator", "inpainting", "--missing", "0.3", "--sigma", "0.1", "--out", str(flow_dir),
                 "--set", "flow.train_steps=2", *TINY]) == 0
    saved = json.loads((flow_dir / "config.json").read_text())
    assert saved["measurements"]["missing_fraction"] == 0.3 and saved["flow"]["train_steps"] == 2
    # the measurements train-flow stored, and a user's y + mask file
    y = np.where(np.random.default_rng(1).random((3, 42)) < 0.5, np.nan, np.load(signals)[:3])
    np.savez(tmp_path / "new.npz", y=y)
    for i, meas in enumerate((flow_dir / "measurements.pt", tmp_path / "new.npz")):
        out = tmp_path / f"post{i}.nc"
        plot = ["--plot", str(tmp_path / "post.png")] if i else []
        assert main(["sample", "--posterior", str(flow_dir / "posterior.pt"), "--measurements", str(meas),
                     "--first", "3", "--n", "8", "--out", str(out), "--device", "cpu", *plot]) == 0
        with xr.open_dataset(out) as ds:
            assert dict(ds["mean"].sizes) == {"measurement": 3, "channel": 1, "vertex": 42}
            assert ds["std"].shape == (3, 1, 42) and ds["draws"].shape == (3, 4, 1, 42)
            assert ds["vertex"].values.tolist() == list(range(42)) and "vertex_x" in ds.coords
            assert bool(np.isfinite(ds["mean"].values).all()) and float(ds["std"].min()) >= 0
    observed = xr.open_dataset(tmp_path / "post1.nc")["observed"].values.astype(bool)
    np.testing.assert_array_equal(observed, ~np.isnan(y))
    assert (tmp_path / "post.png").stat().st_size > 0


def test_rerun_resumes_and_refuses_other_data(mesh_files: tuple[Path, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    mesh, signals = mesh_files
    args = ["train-prior", "--mesh", str(mesh), "--signals", str(signals), "--out", str(tmp_path / "p"), *TINY]
    assert main([*args, "--steps", "2"]) == 0
    capsys.readouterr()
    assert main([*args, "--steps", "3"]) == 0
    assert "resuming from step 2 of 3" in capsys.readouterr().err
    other = tmp_path / "other.npy"
    np.save(other, np.load(signals)[:20])
    with pytest.raises(ValueError, match=r"signals\.sha256 .* -> .*signals\.shape \[24, 1, 42\] -> \[20, 1, 42\]"):
        main(["train-prior", "--mesh", str(mesh), "--signals", str(other), "--out", str(tmp_path / "p"), *TINY,
              "--steps", "3"])


def test_python_api_in_three_calls(mesh_files: tuple[Path, Path], tmp_path: Path) -> None:
    from manifold_ps.api import sample_posterior, train_posterior, train_prior_on
    from manifold_ps.config import build_config
    from manifold_ps.flows import AmortizedPosterior
    from manifold_ps.geometry import Mesh
    from manifold_ps.io import load_measurements, load_signals, simulate_measurements
    from manifold_ps.priors import DiffusionPrior

    mesh_path, signals_path = mesh_files
    mesh = Mesh.from_file(mesh_path)
    signals = load_signals(signals_path, mesh)
    config = build_config("smoke", overrides={"prior.train_steps": 3, "prior.batch_size": 8,
                                              "flow.train_steps": 2, "flow.batch_size": 4})
    prior = train_prior_on(mesh, signals, config, tmp_path / "prior")
    assert isinstance(prior, DiffusionPrior) and (tmp_path / "prior" / "prior.pt").is_file()
    meas = simulate_measurements(signals.x, mesh, "inpainting", missing=0.3, sigma=0.1)
    posterior = train_posterior(prior, meas, config, tmp_path / "flow", geometry=mesh)
    assert isinstance(posterior, AmortizedPosterior) and (tmp_path / "flow" / "posterior.pt").is_file()
    stored = load_measurements(tmp_path / "flow" / "measurements.pt", mesh)
    torch.testing.assert_close(stored.y, meas.y)
    out = sample_posterior(posterior, meas.y[:2].double(), meas.operator.select(torch.arange(2)), n=8)
    assert out.mean.shape == (2, 1, 42) and out.draws.shape == (2, 4, 1, 42) and out.mean.dtype == torch.float32


def test_cli_on_a_lat_lon_grid_netcdf(tmp_path: Path) -> None:
    import xarray as xr

    lat, lon = np.linspace(-75.0, 75.0, 6), np.arange(0.0, 360.0, 45.0)
    rng = np.random.default_rng(0)
    field = rng.normal(size=(20, 1, 1)) + np.cos(np.deg2rad(lat))[None, :, None] * rng.normal(size=(20, 1, 8))
    # dims in the file's own order (lon before lat): the reader puts (lat, lon) last itself
    ds = xr.Dataset({"t2m": (("time", "lon", "lat"), field.transpose(0, 2, 1))},
                    coords={"time": np.arange(20), "lat": lat, "lon": lon})
    ds.to_netcdf(tmp_path / "t2m.nc")
    prior_dir, flow_dir = tmp_path / "prior", tmp_path / "flow"
    assert main(["train-prior", "--grid", str(tmp_path / "t2m.nc"), "--signals", str(tmp_path / "t2m.nc"),
                 "--out", str(prior_dir), "--steps", "2", *TINY]) == 0
    assert main(["train-flow", "--prior", str(prior_dir / "prior.pt"), "--signals", str(tmp_path / "t2m.nc"),
                 "--out", str(flow_dir), "--set", "flow.train_steps=2", *TINY]) == 0
    assert main(["sample", "--posterior", str(flow_dir / "posterior.pt"), "--measurements",
                 str(flow_dir / "measurements.pt"), "--first", "2", "--n", "4", "--draws", "2",
                 "--out", str(tmp_path / "post.nc"), "--device", "cpu"]) == 0
    with xr.open_dataset(tmp_path / "post.nc") as post:
        assert dict(post["mean"].sizes) == {"measurement": 2, "channel": 1, "lat": 6, "lon": 8}
        np.testing.assert_allclose(post["lat"].values, lat)
        np.testing.assert_allclose(post["lon"].values, lon)
        assert post["std"].shape == (2, 1, 6, 8) and post["draws"].shape == (2, 2, 1, 6, 8)
        # the stored y is the file's field in (lat, lon) order, measured: observed values match it
        y, obs = post["y"].values[:, 0], post["observed"].values.astype(bool)
    truth = ds["t2m"].transpose("time", "lat", "lon").values[:2]
    assert np.abs(y[obs] - truth[obs]).max() < 1.0  # noise sigma 0.1


def test_flow_rerun_with_other_measurements_is_refused_and_keeps_the_stored_ones(
        mesh_files: tuple[Path, Path], tmp_path: Path) -> None:
    from manifold_ps.api import train_posterior, train_prior_on
    from manifold_ps.config import build_config
    from manifold_ps.geometry import Mesh
    from manifold_ps.io import load_measurements, load_signals, simulate_measurements

    mesh = Mesh.from_file(mesh_files[0])
    x = load_signals(mesh_files[1], mesh).x
    config = build_config("smoke", overrides={"prior.train_steps": 1, "prior.batch_size": 8,
                                              "flow.train_steps": 1, "flow.batch_size": 4})
    prior = train_prior_on(mesh, x, config, tmp_path / "prior")
    first = simulate_measurements(x, mesh, missing=0.3)
    train_posterior(prior, first, config, tmp_path / "flow", geometry=mesh)
    with pytest.raises(ValueError, match=r"measurements.missing_fraction 0.3 -> 0.5.*flow"):
        train_posterior(prior, simulate_measurements(x, mesh, missing=0.5), config, tmp_path / "flow", geometry=mesh)
    torch.testing.assert_close(load_measurements(tmp_path / "flow" / "measurements.pt", mesh).y, first.y)


def test_train_flow_on_a_prior_folder_without_geometry_says_what_to_give(mesh_files: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    """Prior folders written before geometry.npz existed: the geometry is asked for, then used."""
    mesh, signals = mesh_files
    assert main(["train-prior", "--mesh", str(mesh), "--signals", str(signals), "--out", str(tmp_path / "p"),
                 "--steps", "1", *TINY]) == 0
    (tmp_path / "p" / "geometry.npz").unlink()
    flow = ["train-flow", "--prior", str(tmp_path / "p" / "prior.pt"), "--signals", str(signals),
            "--out", str(tmp_path / "f"), "--set", "flow.train_steps=1", *TINY]
    with pytest.raises(ValueError, match=r"no geometry.npz beside .*prior.pt: give the geometry of the prior again"):
        main(flow)
    assert main([*flow, "--mesh", str(mesh)]) == 0
