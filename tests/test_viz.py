"""Figures render to non-blank PNGs of the expected size."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from manifold_ps.geometry import ImageGrid, Mesh, SphereGrid
from manifold_ps.viz import (
    calibration_figure,
    offline_coastlines,
    plot_image,
    plot_mesh_signal,
    plot_sphere_map,
    posterior_row_figure,
)
from manifold_ps.viz import plots


def _check_png(fig, path: Path, dpi: int = 50) -> None:
    fig.savefig(path, dpi=dpi)
    img = imread(path)
    w, h = fig.get_size_inches() * dpi
    assert img.shape[:2] == (round(h), round(w))
    assert float(img[..., :3].std()) > 0.01, "the figure is blank"


@pytest.fixture(scope="module")
def bunny(data_dir: Path) -> Mesh:
    return Mesh.from_file(data_dir / "bunny" / "bun_zipper_res3.ply")


@pytest.mark.data
def test_mesh_signal(bunny: Mesh, tmp_path: Path) -> None:
    values = bunny.positions[:, 1].clone()
    values[::5] = float("nan")  # missing vertices are drawn grey
    _check_png(plot_mesh_signal(bunny.positions, bunny.faces, values), tmp_path / "mesh.png")
    with pytest.raises(ValueError, match="values"):
        plot_mesh_signal(bunny.positions, bunny.faces, values[:10])


def test_sphere_map(tmp_path: Path) -> None:
    g = SphereGrid.gasp()
    z = g.positions[:, 2]
    _check_png(plot_sphere_map(z, g.latitudes, g.longitudes), tmp_path / "map.png")
    _check_png(plot_sphere_map(z.reshape(46, 90), g.latitudes, g.longitudes, coastlines=False), tmp_path / "m2.png")


def test_image(tmp_path: Path) -> None:
    _check_png(plot_image(torch.rand(64)), tmp_path / "img.png")
    with pytest.raises(ValueError, match="shape"):
        plot_image(torch.rand(10))


@pytest.mark.parametrize("kind", ["mesh", "sphere", "image"])
def test_posterior_row(kind: str, tmp_path: Path, data_dir: Path) -> None:
    if kind == "mesh":
        geo = Mesh.from_file(data_dir / "bunny" / "bun_zipper_res4.ply")
        kw = dict(vertices=geo.positions, faces=geo.faces)
    elif kind == "sphere":
        geo = SphereGrid.gasp()
        kw = dict(latitudes=geo.latitudes, longitudes=geo.longitudes)
    else:
        geo = ImageGrid(8, 6)
        kw = dict(image_shape=(8, 6))
    v = geo.num_vertices
    truth = torch.rand(v, generator=torch.Generator().manual_seed(0))
    observed = torch.rand(v) > 0.3
    fig = posterior_row_figure(truth, truth * observed, torch.rand(4, v), truth, torch.rand(v) * 0.1, kind=kind,
                               observed=observed, title=kind, **kw)
    assert len(fig.axes) == 7  # truth, measurement, 2 samples, mean, |mean - truth|, std
    _check_png(fig, tmp_path / f"row_{kind}.png")
    no_truth = posterior_row_figure(None, truth * observed, torch.rand(4, v), truth, torch.rand(v) * 0.1, kind=kind,
                                    observed=observed, **kw)
    assert [ax.get_title() for ax in no_truth.axes] == ["measurement", "sample 1", "sample 2", "mean", "std"]
    with pytest.raises(ValueError, match=kind):
        posterior_row_figure(truth, truth, truth[None], truth, truth, kind=kind)



def test_error_and_std_share_one_colour_scale() -> None:
    truth = torch.zeros(16)
    mean = torch.full((16,), 0.5)  # error 0.5 everywhere
    std = torch.linspace(0.0, 0.25, 16)
    fig = posterior_row_figure(truth, truth, mean[None], mean, std, kind="image", image_shape=(4, 4))
    scales = {ax.get_title(): ax.images[0].get_clim() for ax in fig.axes}
    assert scales["|mean - truth|"] == scales["std"] == (0.0, 0.5)


def test_calibration_figure(tmp_path: Path) -> None:
    curves = {"ours": ([0.5, 0.8, 0.9, 0.95], [0.4, 0.7, 0.8, 0.85]),
              "gaussian": ([0.5, 0.9], [0.45, 0.88]), "gaussian (exact normal)": ([0.5, 0.9], [0.5, 0.9])}
    fig = calibration_figure({"all vertices": curves, "missing vertices": {"ours": curves["ours"]}}, ncols=2,
                             title="w")
    assert [ax.get_title() for ax in fig.axes] == ["all vertices", "missing vertices"]
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert set(lines) == {"calibrated", *curves}
    assert list(lines["ours"].get_ydata()) == [0.4, 0.7, 0.8, 0.85]
    # the exact-normal curve is dashed in its method's colour; a method keeps its colour across panels
    assert lines["gaussian (exact normal)"].get_linestyle() == "--"
    assert lines["gaussian (exact normal)"].get_color() == lines["gaussian"].get_color()
    assert fig.axes[1].get_lines()[1].get_color() == lines["ours"].get_color()
    _check_png(fig, tmp_path / "calibration.png")
    # a title longer than one panel's figure is wide is wrapped inside it, not cut at its edges
    long = "image-restoration: flow ablation, 32 held-out measurements, 128 draws per measurement"
    fig = calibration_figure({"all vertices": curves}, title=long)
    fig.canvas.draw()
    box = fig._suptitle.get_window_extent()
    assert "\n" in fig._suptitle.get_text() and fig._suptitle.get_text().replace("\n", " ") == long
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height
    with pytest.raises(ValueError, match="2 levels but 1"):
        calibration_figure({"p": {"m": ([0.5, 0.9], [0.5])}})
    with pytest.raises(ValueError, match="at least one panel"):
        calibration_figure({})


@pytest.mark.parametrize("up", ["x", "y", "z"])
def test_mesh_camera_rotates_without_mirroring(up: str) -> None:
    v = np.eye(3)
    p = plots._up_rotation(v, up)  # rows: where the data's x, y, z axes go
    assert np.linalg.det(p) == pytest.approx(1.0)  # a rotation: the mesh is never mirrored
    assert np.allclose(p["xyz".index(up)], [0, 0, 1])  # the data's up axis points up on screen
    with pytest.raises(ValueError, match="up"):
        plots._up_rotation(v, "w")  # type: ignore[arg-type]


def test_sphere_map_never_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cartopy_io = pytest.importorskip("cartopy.io")

    def no_network(*args, **kwargs):
        raise AssertionError("cartopy tried to download data")

    monkeypatch.setattr(cartopy_io.Downloader, "acquire_resource", no_network)
    g = SphereGrid.gasp()
    z = g.positions[:, 2].clone()
    z[::7] = float("nan")  # missing cells stay blank
    _check_png(plot_sphere_map(z, g.latitudes, g.longitudes), tmp_path / "coast.png")
    robinson = plot_sphere_map(z, g.latitudes, g.longitudes, projection="robinson")  # not drawn: ~4 s on CPU
    assert type(robinson.axes[0].projection).__name__ == "Robinson"
    # without coastline data on disk the map is drawn without them
    monkeypatch.setattr(plots, "offline_coastlines", lambda: None)
    _check_png(plot_sphere_map(z, g.latitudes, g.longitudes), tmp_path / "bare.png")
    with pytest.raises(ValueError, match="grid"):
        plot_sphere_map(z[:-1], g.latitudes, g.longitudes)


def test_offline_coastlines_respects_cartopy_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("cartopy")
    shp = tmp_path / "shapefiles" / "gshhs" / "c" / "GSHHS_c_L1.shp"
    shp.parent.mkdir(parents=True)
    shp.touch()
    monkeypatch.setenv("CARTOPY_DATA_DIR", str(tmp_path))
    assert offline_coastlines() == shp


def test_sphere_map_without_cartopy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("cartopy", "cartopy.crs"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    assert offline_coastlines() is None
    g = SphereGrid.gasp()
    fig = plot_sphere_map(g.positions[:, 2], g.latitudes, g.longitudes)
    _check_png(fig, tmp_path / "plain.png")
    assert fig.axes[0].name == "rectilinear"
