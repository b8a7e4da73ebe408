"""Tests of manifold_ps.datasets: real-data facts from the data README, checksums, errors, download."""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import struct
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from manifold_ps import datasets as ds

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
SMALL_FILE = "mnist/t10k-labels-idx1-ubyte.gz"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the user cache at a temporary folder so no test writes outside tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg_cache")))


# ------------------------------------------------------------------------------------------------
# Real data (MANIFOLD_PS_DATA)


@pytest.mark.data
@pytest.mark.parametrize("relative", sorted(ds.REGISTRY))
def test_registry_checksum(data_dir: Path, relative: str) -> None:
    path = data_dir / relative
    assert path.is_file(), f"{relative} missing from {data_dir}"
    entry = ds.REGISTRY[relative]
    assert path.stat().st_size == entry.size
    assert ds.sha256_file(path) == entry.sha256


def test_registry_entries_are_well_formed() -> None:
    for path, entry in ds.REGISTRY.items():
        assert path == entry.path and len(entry.sha256) == 64 and entry.size > 0 and entry.license
        assert entry.urls or entry.note, path
        for url in entry.urls:
            assert url.startswith("https://")


@pytest.mark.data
@pytest.mark.parametrize(
    ("split", "counts", "mean_pixel"),
    [("train", MNIST_TRAIN_COUNTS, 33.3184), ("test", MNIST_TEST_COUNTS, 33.7912)],
)
def test_mnist(data_dir: Path, split: str, counts: list[int], mean_pixel: float) -> None:
    images, labels = ds.load_mnist(split, data_dir)  # type: ignore[arg-type]
    assert images.shape == (sum(counts), 28, 28) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.bincount().tolist() == counts
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    assert float(images.double().mean()) == pytest.approx(mean_pixel / 255, abs=1e-6)


@pytest.mark.data
def test_mnist_padded_32(data_dir: Path) -> None:
    padded, labels = ds.mnist_padded_32("test", data_dir)
    images, _ = ds.load_mnist("test", data_dir)
    assert padded.shape == (10000, 32, 32) and labels.shape == (10000,)
    torch.testing.assert_close(padded[:, 2:30, 2:30], images)
    assert float(padded.sum()) == pytest.approx(float(images.sum()))


@pytest.mark.data
@pytest.mark.parametrize(
    ("resolution", "num_vertices", "num_faces"),
    [("res3", 1889, 3851), ("obj1889", 1889, 3774), ("res4", 453, 948), ("res2", 8171, 16301)],
)
def test_bunny(data_dir: Path, resolution: str, num_vertices: int, num_faces: int) -> None:
    vertices, faces = ds.load_bunny(resolution, data_dir)  # type: ignore[arg-type]
    assert vertices.shape == (num_vertices, 3) and vertices.dtype == np.float64
    assert faces.shape == (num_faces, 3) and faces.dtype == np.int64
    assert faces.min() >= 0 and faces.max() < num_vertices
    # README bounding box of the Stanford bunny (scanner frame, y up).
    assert np.all(vertices.min(0) > [-0.1, 0.03, -0.07]) and np.all(vertices.max(0) < [0.07, 0.19, 0.065])
    if resolution == "res3":  # vertices 557 and 902 appear in no face
        assert sorted(set(range(num_vertices)) - set(faces.ravel().tolist())) == [557, 902]


@pytest.mark.data
def test_bunny_path_suffix(data_dir: Path) -> None:
    assert ds.bunny_path("res3", data_dir).name == "bun_zipper_res3.ply"
    assert ds.bunny_path("obj1889", data_dir).suffix == ".obj"
    with pytest.raises(ValueError, match="resolution"):
        ds.bunny_path("res9", data_dir)  # type: ignore[arg-type]


@pytest.mark.data
@pytest.mark.parametrize(
    ("name", "sizes", "is_era5", "has_member", "label"),
    [
        ("t2m_4deg", (616, 88, 176), False, True, "stand-in"),
        ("ipsl", (2160, 324, 612), False, True, "cmip6-ipsl-cm6a-lr-monthly"),
        ("t2m_4deg_era5_sample24", (17, 2, 5), True, False, "real ERA5"),
    ],
)
def test_gridded_temperature(
    data_dir: Path, name: str, sizes: tuple[int, int, int], is_era5: bool, has_member: bool, label: str
) -> None:
    data = ds.load_gridded_temperature(name, root=data_dir)
    assert data.values.shape == (sum(sizes), 1, 4140) and data.values.dtype == torch.float32
    assert [int((data.split == s).sum()) for s in ("train", "val", "test")] == list(sizes)
    assert data.is_era5 is is_era5 and label in data.name
    assert (data.member is not None) is has_member and len(data.time) == sum(sizes)
    np.testing.assert_allclose(data.latitudes, np.linspace(90, -90, 46))
    np.testing.assert_allclose(data.longitudes, np.linspace(0, 356, 90))
    assert data.kelvin_range == (ds.T_MIN, ds.T_MAX)
    kelvin = data.kelvin()
    assert 195.0 < float(kelvin.min()) and float(kelvin.max()) < 320.0  # README min/max per file
    test = ds.load_gridded_temperature(name, "test", root=data_dir)
    assert len(test) == sizes[2] and set(test.split.tolist()) == {"test"}
    torch.testing.assert_close(test.values, data.values[-sizes[2]:])


@pytest.mark.data
def test_era5_field_npz_and_nc_agree(data_dir: Path) -> None:
    npz = ds.load_era5_field("npz", data_dir)
    nc = ds.load_era5_field("nc", data_dir)
    assert npz.values.shape == nc.values.shape == (1, 1, 4140)
    torch.testing.assert_close(npz.values, nc.values, rtol=0, atol=0)
    assert float(npz.values.min()) == pytest.approx(0.2196, abs=1e-4)
    assert float(npz.values.max()) == pytest.approx(0.9143, abs=1e-4)
    assert float(npz.kelvin().min()) == pytest.approx(228.63, abs=0.01)
    assert str(nc.time[0]).startswith("2012-12-01T14:00")
    pos = npz.positions()
    np.testing.assert_allclose(np.linalg.norm(pos, axis=1), 1.0)
    np.testing.assert_allclose(pos[0], [0.0, 0.0, 1.0], atol=1e-12)  # first vertex is the north pole


@pytest.mark.data
def test_gasp_folder_reader(data_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "era5" / "era5_temp2m_16x_test"
    folder.mkdir(parents=True)
    for i in range(3):
        shutil.copy(data_dir / "era5/era5_t2m_20121201T1400_4deg.npz", folder / f"{i:05d}.npz")
    data = ds.load_gasp("test", root=tmp_path)
    assert data.values.shape == (3, 1, 4140) and data.is_era5 and data.split.tolist() == ["test"] * 3
    torch.testing.assert_close(data.values[1:2], ds.load_era5_field("npz", data_dir).values)
    with pytest.raises(FileNotFoundError, match="neural-function-distributions"):
        ds.load_gasp("train", root=tmp_path)


@pytest.mark.data
def test_olivetti(data_dir: Path) -> None:
    faces, subjects = ds.load_olivetti(32, data_dir)
    assert faces.shape == (400, 32, 32) and faces.dtype == torch.float32
    assert 0.0 <= float(faces.min()) and float(faces.max()) <= 242 / 255
    assert subjects.bincount().tolist() == [10] * 40
    full, _ = ds.load_olivetti(64, data_dir)
    assert float(full.max()) == pytest.approx(242 / 255)
    torch.testing.assert_close(faces, torch.nn.functional.avg_pool2d(full[:, None], 2)[:, 0])
    # Upright (not transposed): the mean face is left-right symmetric, not top-bottom symmetric.
    mean = full.mean(0)
    assert float((mean - mean.flip(1)).abs().mean()) < 0.5 * float((mean - mean.flip(0)).abs().mean())


@pytest.mark.data
def test_bunny_mnist(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from manifold_ps.geometry import painting

    vertices, _ = ds.load_bunny("res3", data_dir)
    kwargs = dict(root=data_dir, num_samples=64, cache_dir=tmp_path / "cache", chunk_size=20)
    first = ds.BunnyMNIST(vertices, "test", **kwargs)
    assert first.signals.shape == (64, 1, 1889) and first.signals.dtype == torch.float32
    assert 0.0 <= float(first.signals.min()) and float(first.signals.max()) <= 1.0
    assert float(first.signals.max()) > 0.5  # digits are visible
    assert first.labels.shape == (64,) and first.cache_path is not None and first.cache_path.exists()
    images, labels = ds.load_mnist("test", data_dir)
    expected = painting.paint_images(torch.from_numpy(vertices), images[:64], axis="z", margin=0.05)
    torch.testing.assert_close(first.signals, expected)
    torch.testing.assert_close(first.labels, labels[:64])

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("painting should come from the cache")

    monkeypatch.setattr(painting, "paint_images", boom)
    again = ds.BunnyMNIST(vertices, "test", **kwargs)
    torch.testing.assert_close(again.signals, first.signals)
    other_key = ds.BunnyMNIST.cache_key(torch.from_numpy(vertices), "test", 64, {"axis": "x", "margin": 0.05})
    assert other_key != first.cache_path.stem
    assert len(again) == 64 and again[0].shape == (1, 1889)


# ------------------------------------------------------------------------------------------------
# Errors


def test_missing_file_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MANIFOLD_PS_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as info:
        ds.load_mnist("test")
    message = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in message
    assert str(tmp_path / "nowhere") in message and "MANIFOLD_PS_DATA" in message
    assert "download=True" in message and "https://" in message
    with pytest.raises(FileNotFoundError, match="no public download"):
        ds.load_gridded_temperature("t2m_4deg")


def test_cache_root_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("MANIFOLD_PS_DATA", raising=False)
    assert ds.cache_root() == tmp_path / "manifold_ps" == ds.data_root()
    assert ds.search_roots() == [tmp_path / "manifold_ps"]
    monkeypatch.setenv("MANIFOLD_PS_DATA", str(tmp_path / "d"))
    assert ds.search_roots() == [tmp_path / "d", tmp_path / "manifold_ps"]


@pytest.mark.data
def test_corrupt_file_is_rejected(data_dir: Path, tmp_path: Path) -> None:
    source = data_dir / "mnist/t10k-images-idx3-ubyte.gz"
    target = tmp_path / "mnist/t10k-images-idx3-ubyte.gz"
    target.parent.mkdir()
    target.write_bytes(source.read_bytes()[:100_000])
    shutil.copy(data_dir / SMALL_FILE, tmp_path / SMALL_FILE)
    with pytest.raises(ValueError, match="corrupt or incomplete download") as info:
        ds.load_mnist("test", tmp_path)
    message = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in message and ds.REGISTRY["mnist/t10k-images-idx3-ubyte.gz"].sha256 in message
    assert ds.sha256_file(target) in message
    # Without the checksum the IDX reader itself reports the truncation.
    with pytest.raises(ValueError, match="truncated"):
        ds.load_mnist("test", tmp_path, verify=False)


def test_idx_errors(tmp_path: Path) -> None:
    good = struct.pack(">IIII", 0x0803, 2, 2, 2) + bytes(range(8))
    np.testing.assert_array_equal(ds.parse_idx(good), np.arange(8, dtype=np.uint8).reshape(2, 2, 2))
    raw = tmp_path / "x-idx3-ubyte"
    raw.write_bytes(good)
    zipped = tmp_path / "x-idx3-ubyte.gz"
    zipped.write_bytes(gzip.compress(good))
    np.testing.assert_array_equal(ds.read_idx(raw), ds.read_idx(zipped))
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x12\x34\x08\x03" + good[4:]))
    with pytest.raises(ValueError, match=r"bad\.gz: bad IDX magic 0x12340803"):
        ds.read_idx(bad)
    with pytest.raises(ValueError, match="truncated"):
        ds.parse_idx(good[:-1])
    with pytest.raises(ValueError, match="trailing"):
        ds.parse_idx(good + b"\x00")
    with pytest.raises(ValueError, match="truncated IDX header"):
        ds.parse_idx(good[:9])
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(good)[:-6])
    with pytest.raises(ValueError, match="broken.gz: corrupt or truncated gzip"):
        ds.read_idx(broken)


def _write_t2m(path: Path, lat: np.ndarray, values: np.ndarray) -> None:
    import xarray as xr

    lon = np.linspace(0, 356, 90)
    xr.Dataset(
        {"t2m": (("time", "latitude", "longitude"), values.astype(np.float32))},
        coords={"time": np.arange(len(values)), "latitude": lat, "longitude": lon,
                "split": ("time", np.array(["train"] * len(values)))},
    ).to_netcdf(path)


def test_gridded_temperature_validation(tmp_path: Path) -> None:
    lat = np.linspace(90, -90, 46)
    good = tmp_path / "good.nc"
    _write_t2m(good, lat, np.full((2, 46, 90), 288.0))
    data = ds.load_gridded_temperature(good)
    assert data.values.shape == (2, 1, 4140) and "unregistered" in data.name
    torch.testing.assert_close(data.kelvin(), torch.full((2, 1, 4140), 288.0))
    with pytest.raises(ValueError, match="split 'val' is empty"):
        ds.load_gridded_temperature(good, "val")
    flipped = tmp_path / "flipped.nc"
    _write_t2m(flipped, lat[::-1], np.full((1, 46, 90), 288.0))
    with pytest.raises(ValueError, match="flipped.nc: latitude is not the GASP grid"):
        ds.load_gridded_temperature(flipped)
    nan = tmp_path / "nan.nc"
    values = np.full((1, 46, 90), 288.0)
    values[0, 3, 4] = np.nan
    _write_t2m(nan, lat, values)
    with pytest.raises(ValueError, match="nan.nc: temperature contains 1 NaN"):
        ds.load_gridded_temperature(nan)


def test_gasp_npz_validation(tmp_path: Path) -> None:
    path = tmp_path / "0.npz"
    np.savez(path, latitude=np.linspace(90, -90, 46), longitude=np.linspace(0, 360, 90),
             temperature=np.zeros((46, 90)))
    with pytest.raises(ValueError, match="longitude is not the GASP grid"):
        ds.read_gasp_npz(path)
    np.savez(path, latitude=np.zeros(46))
    with pytest.raises(ValueError, match="missing keys"):
        ds.read_gasp_npz(path)


def test_kelvin_round_trip() -> None:
    t = torch.linspace(200, 330, 11, dtype=torch.float64)
    torch.testing.assert_close(ds.to_kelvin(ds.from_kelvin(t)), t)
    assert ds.from_kelvin(ds.T_MIN) == 0.0 and ds.from_kelvin(ds.T_MAX) == 1.0


def test_signal_dataset_validation() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, V\)"):
        ds.SignalDataset(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="labels"):
        ds.SignalDataset(torch.zeros(3, 1, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="floating"):
        ds.SignalDataset(torch.zeros(3, 1, 4, dtype=torch.int64))


def test_olivetti_size_validation() -> None:
    with pytest.raises(ValueError, match="divide 64"):
        ds.load_olivetti(30)


# ------------------------------------------------------------------------------------------------
# Download (local HTTP server standing in for the public mirrors)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture
def http_mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.data
def test_download_verifies(data_dir: Path, tmp_path: Path, http_mirror: tuple[str, Path]) -> None:
    base_url, served = http_mirror
    (served / "mnist").mkdir()
    shutil.copy(data_dir / SMALL_FILE, served / SMALL_FILE)
    root = tmp_path / "root"
    path = ds.download(SMALL_FILE, root, base_url=base_url)
    assert path == root / SMALL_FILE
    assert ds.verify(path) == path
    assert ds.read_idx(path).shape == (10000,)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left over


@pytest.mark.data
def test_download_accepts_recompressed_gzip(data_dir: Path, tmp_path: Path, http_mirror: tuple[str, Path]) -> None:
    # A mirror may serve a differently compressed .gz (e.g. LeCun's originals): same content is accepted.
    base_url, served = http_mirror
    (served / "mnist").mkdir()
    content = gzip.decompress((data_dir / SMALL_FILE).read_bytes())
    (served / SMALL_FILE).write_bytes(gzip.compress(content, compresslevel=9, mtime=0))
    path = ds.download(SMALL_FILE, tmp_path / "root", base_url=base_url)
    assert ds.read_idx(path).shape == (10000,)


@pytest.mark.data
def test_download_rejects_corrupt(data_dir: Path, tmp_path: Path, http_mirror: tuple[str, Path]) -> None:
    base_url, served = http_mirror
    (served / "mnist").mkdir()
    (served / SMALL_FILE).write_bytes((data_dir / SMALL_FILE).read_bytes()[:-100])
    root = tmp_path / "root"
    with pytest.raises(ValueError, match="corrupt or incomplete download") as info:
        ds.download(SMALL_FILE, root, base_url=base_url)
    assert ds.REGISTRY[SMALL_FILE].sha256 in str(info.value) and base_url in str(info.value)
    assert list((root / "mnist").iterdir()) == []  # no partial file left behind


def test_download_missing_on_server(tmp_path: Path, http_mirror: tuple[str, Path]) -> None:
    base_url, _ = http_mirror
    with pytest.raises(OSError, match="404"):
        ds.download(SMALL_FILE, tmp_path / "root", base_url=base_url)
    assert list((tmp_path / "root" / "mnist").iterdir()) == []
    with pytest.raises(FileNotFoundError, match="cannot be downloaded"):
        ds.download("t2m/t2m_4deg.nc", tmp_path / "root")


@pytest.mark.data
def test_resolve_file_downloads_into_cache(
    data_dir: Path, tmp_path: Path, http_mirror: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    base_url, served = http_mirror
    (served / "mnist").mkdir()
    shutil.copy(data_dir / SMALL_FILE, served / SMALL_FILE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("MANIFOLD_PS_DATA", raising=False)
    from manifold_ps.datasets import paths

    monkeypatch.setattr(paths, "_download", functools.partial(ds.download, base_url=base_url))
    with pytest.raises(FileNotFoundError):
        ds.resolve_file(SMALL_FILE)
    path = ds.resolve_file(SMALL_FILE, download=True)
    assert path == tmp_path / "xdg/manifold_ps" / SMALL_FILE
    assert ds.resolve_file(SMALL_FILE, verify=True) == path
