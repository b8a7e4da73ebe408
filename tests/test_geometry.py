"""Contract tests for every Geometry implementation, plus ordering, masks, painting and interop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from manifold_ps.geometry import (
    Geometry,
    Icosphere,
    ImageGrid,
    Mesh,
    SphereGrid,
    VertexLayout,
    from_pyg,
    geodesic_patch_mask,
    hilbert_index,
    hilbert_ordering,
    invert_permutation,
    ordering_locality,
    paint_images,
    paint_images_on,
    random_vertex_mask,
    to_pyg,
)

BUNNY = "bunny/bun_zipper_res3.ply"
_CACHE: dict[str, Geometry] = {}


def _make(name: str, data_dir: Path | None = None) -> Geometry:
    if name not in _CACHE:
        if name == "mesh":
            ico = trimesh.creation.icosphere(subdivisions=2)
            _CACHE[name] = Mesh(np.asarray(ico.vertices) * [1.0, 0.7, 1.3], ico.faces)  # ellipsoid
        elif name == "bunny":
            assert data_dir is not None
            _CACHE[name] = Mesh.from_file(data_dir / BUNNY)
        elif name == "sphere_grid":
            _CACHE[name] = SphereGrid.gasp()
        elif name == "icosphere":
            _CACHE[name] = Icosphere(3)
        elif name == "image":
            _CACHE[name] = ImageGrid(12, 9)
    return _CACHE[name]


GEOMETRIES = [
    "mesh",
    pytest.param("bunny", marks=pytest.mark.data),
    "sphere_grid",
    "icosphere",
    "image",
]


@pytest.fixture(params=GEOMETRIES)
def geometry(request: pytest.FixtureRequest) -> Geometry:
    data_dir = request.getfixturevalue("data_dir") if request.param == "bunny" else None
    return _make(request.param, data_dir)


# ---------------------------------------------------------------------------- contract
def test_laplacian_symmetric_rows_sum_to_zero(geometry: Geometry) -> None:
    L = geometry.laplacian()
    assert L.shape == (geometry.num_vertices,) * 2
    assert abs(L - L.T).max() == 0
    np.testing.assert_allclose(L @ np.ones(geometry.num_vertices), 0.0, atol=1e-10 * abs(L).max())
    assert geometry.laplacian() is L  # cached
    m = geometry.mass()
    assert m.shape == (geometry.num_vertices,) and (m > 0).all()


def test_positions_float64(geometry: Geometry) -> None:
    assert geometry.positions.dtype == torch.float64
    assert geometry.positions.shape == (geometry.num_vertices, 3)


def test_eigenbasis_m_orthonormal_sorted_psd(geometry: Geometry) -> None:
    evals, evecs = geometry.eigenbasis(12)
    assert evals.dtype == evecs.dtype == torch.float64
    assert evecs.shape == (geometry.num_vertices, 12)
    assert (evals[1:] >= evals[:-1]).all()
    assert abs(float(evals[0])) < 1e-8 * float(evals[-1])  # smallest eigenvalue ~ 0: PSD, L @ 1 = 0
    M = torch.from_numpy(geometry.mass())
    gram = evecs.T @ (M[:, None] * evecs)
    torch.testing.assert_close(gram, torch.eye(12, dtype=torch.float64), atol=1e-8, rtol=0)
    L = geometry.laplacian()
    resid = L @ evecs.numpy() - geometry.mass()[:, None] * evecs.numpy() * evals.numpy()
    assert np.abs(resid).max() < 1e-6 * max(1.0, float(evals[-1])) * geometry.mass().max()


def test_eigenbasis_deterministic_signs(geometry: Geometry) -> None:
    evals, evecs = geometry.eigenbasis(6)
    geometry._eigen_cache.clear()
    evals2, evecs2 = geometry.eigenbasis(6)
    torch.testing.assert_close(evals, evals2)
    gap = (evals[:, None] - evals[None, :]).abs() + torch.eye(6, dtype=evals.dtype)
    nondegenerate = [i for i in range(6) if bool((gap[i] > 1e-6 * (1 + evals[i])).all())]
    torch.testing.assert_close(evecs[:, nondegenerate], evecs2[:, nondegenerate], atol=1e-7, rtol=0)
    idx = evecs.abs().argmax(dim=0)
    assert (evecs[idx, torch.arange(6)] > 0).all()


@pytest.mark.parametrize("method", ["spectral", "hilbert", "identity"])
def test_ordering_is_permutation_and_layout_roundtrip(geometry: Geometry, method: str) -> None:
    perm = geometry.ordering(method)  # type: ignore[arg-type]
    V = geometry.num_vertices
    assert perm.dtype == torch.long and torch.equal(perm.sort().values, torch.arange(V))
    inv = invert_permutation(perm)
    assert torch.equal(perm[inv], torch.arange(V)) and torch.equal(inv[perm], torch.arange(V))
    layout = geometry.layout(multiple=64, ordering=method)  # type: ignore[arg-type]
    assert isinstance(layout, VertexLayout)
    x = torch.randn(2, 3, V, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(layout.from_sequence(layout.to_sequence(x)), x, rtol=0, atol=0)


def test_fingerprint_stable(geometry: Geometry) -> None:
    fp = geometry.fingerprint()
    assert isinstance(fp, str) and len(fp) == 16 and fp == geometry.fingerprint()


def test_harmonic_interpolation_keeps_observed(geometry: Geometry) -> None:
    V = geometry.num_vertices
    g = torch.Generator().manual_seed(0)
    mask = random_vertex_mask(V, 0.3, 2, generator=g)
    x = torch.randn(2, 2, V, generator=g, dtype=torch.float32)
    out = geometry.harmonic_interpolation(x, mask)
    assert out.shape == x.shape and out.dtype == x.dtype
    torch.testing.assert_close(out[:, :, mask[0]][0], x[0][:, mask[0]])
    assert torch.isfinite(out).all()
    # a constant is reproduced exactly, with or without smoothing
    c = torch.full((1, 1, V), 0.7, dtype=torch.float64)
    for s in (0.0, 1e-2):
        torch.testing.assert_close(geometry.harmonic_interpolation(c, mask[0], smoothing=s), c)


# ---------------------------------------------------------------------------- specific numerics
def test_icosphere_spectrum_l_l_plus_1() -> None:
    evals, _ = Icosphere(3).eigenbasis(9)
    expected = torch.tensor([0.0, 2, 2, 2, 6, 6, 6, 6, 6], dtype=torch.float64)
    assert abs(float(evals[0])) < 1e-8
    torch.testing.assert_close(evals[1:], expected[1:], rtol=0.01, atol=0)  # 1 % relative


def test_sphere_grid_spectrum_l_l_plus_1() -> None:
    evals, _ = SphereGrid.gasp().eigenbasis(9)
    expected = torch.tensor([2.0, 2, 2, 6, 6, 6, 6, 6], dtype=torch.float64)
    torch.testing.assert_close(evals[1:], expected, rtol=0.01, atol=0)  # 1 % relative


def test_sphere_grid_layout_and_mass() -> None:
    grid = SphereGrid.gasp()
    assert grid.num_vertices == 4140 and grid.shape == (46, 90)
    pos = grid.positions.view(46, 90, 3)
    torch.testing.assert_close(pos[0], pos[0, :1].expand(90, 3))  # north pole row: 90 copies
    torch.testing.assert_close(pos[0, 0], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    assert abs(grid.mass().sum() - 4 * np.pi) < 1e-10
    x = torch.randn(2, 3, 4140)
    assert grid.as_image(x).shape == (2, 3, 46, 90)
    assert torch.equal(grid.from_image(grid.as_image(x)), x)
    assert torch.equal(grid.ordering("serpentine").sort().values, torch.arange(4140))


def test_sphere_grid_reversed_latitudes_same_operator() -> None:
    a = SphereGrid(np.linspace(90, -90, 10), np.linspace(0, 324, 10))
    b = SphereGrid(np.linspace(-90, 90, 10), np.linspace(0, 324, 10))
    perm = torch.arange(100).view(10, 10).flip(0).reshape(-1).numpy()
    assert abs(a.laplacian()[perm][:, perm] - b.laplacian()).max() < 1e-12
    np.testing.assert_allclose(a.mass()[perm], b.mass())


def test_sphere_grid_interpolates_smooth_field() -> None:
    """Observe 40 % of the vertices of 1 + z + x*y (degree <= 2): relative L2 error < 2 %."""
    grid = SphereGrid.gasp()
    p = grid.positions
    x = (1 + p[:, 2] + p[:, 0] * p[:, 1]).view(1, 1, -1)
    mask = random_vertex_mask(grid.num_vertices, 0.6, generator=torch.Generator().manual_seed(0))
    out = grid.harmonic_interpolation(x, mask)
    assert float((out - x).norm() / x.norm()) < 0.02


def test_image_grid_linear_function_exact() -> None:
    """A linear function is discrete-harmonic at interior pixels of the Neumann 5-point stencil,
    but not at boundary pixels (the missing neighbour breaks the stencil), so the boundary pixels
    are observed here; the interior ones are observed at random (50 %)."""
    grid = ImageGrid(10, 13)
    p = grid.positions
    x = (0.3 * p[:, 0] - 1.2 * p[:, 1] + 2.0).view(1, 1, -1)
    mask = random_vertex_mask(grid.num_vertices, 0.5, generator=torch.Generator().manual_seed(3)).view(10, 13)
    mask[0], mask[-1], mask[:, 0], mask[:, -1] = True, True, True, True
    out = grid.harmonic_interpolation(x, mask.reshape(-1))
    torch.testing.assert_close(out, x, atol=1e-10, rtol=0)


def test_image_grid_views() -> None:
    grid = ImageGrid(4, 5)
    assert grid.positions[0].tolist() == [0.0, 3.0, 0.0]  # top-left pixel, y up
    assert np.all(grid.mass() == 1)
    assert grid.ordering("serpentine")[:10].tolist() == [0, 1, 2, 3, 4, 9, 8, 7, 6, 5]
    with pytest.raises(ValueError, match="serpentine"):
        Icosphere(0).ordering("serpentine")


def test_hilbert_curve_visits_neighbours() -> None:
    g = np.stack(np.meshgrid(*[np.arange(8)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    h = hilbert_index(g, bits=3)
    assert sorted(h.tolist()) == list(range(512))
    path = g[np.argsort(h)]
    assert (np.abs(np.diff(path, axis=0)).sum(axis=1) == 1).all()


def test_hilbert_ordering_more_local_than_random() -> None:
    ico = Icosphere(3)
    random_perm = torch.randperm(ico.num_vertices, generator=torch.Generator().manual_seed(0))
    assert ordering_locality(ico, hilbert_ordering(ico.positions)) < 0.3 * ordering_locality(ico, random_perm)
    assert ordering_locality(ico, hilbert_ordering(ico.positions), "geodesic") < 0.3 * ordering_locality(
        ico, random_perm, "geodesic"
    )


def test_ordering_locality_sphere_grid_geodesic_is_great_circle() -> None:
    grid = SphereGrid.gasp()
    serp = grid.ordering("serpentine")
    geo = ordering_locality(grid, serp, "geodesic")
    euc = ordering_locality(grid, serp, "euclidean")
    assert euc <= geo < 1.01 * euc


# ---------------------------------------------------------------------------- masks
@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.6, 1.0])
def test_random_mask_exact_and_reproducible(fraction: float) -> None:
    m1 = random_vertex_mask(1889, fraction, 4, generator=torch.Generator().manual_seed(5))
    m2 = random_vertex_mask(1889, fraction, 4, generator=torch.Generator().manual_seed(5))
    assert m1.dtype == torch.bool and m1.shape == (4, 1889)
    assert torch.equal(m1, m2)
    assert ((~m1).sum(dim=1) == round(fraction * 1889)).all()
    assert random_vertex_mask(10, fraction).shape == (10,)


def test_random_mask_validates() -> None:
    with pytest.raises(ValueError, match="missing_fraction"):
        random_vertex_mask(10, 1.5)
    with pytest.raises(ValueError, match="num_vertices"):
        random_vertex_mask(0, 0.5)


def test_geodesic_patch_mask_contiguous() -> None:
    ico = Icosphere(3)
    mask = geodesic_patch_mask(ico, 0, fraction=0.2)
    assert int((~mask).sum()) == round(0.2 * ico.num_vertices)
    assert not mask[0]
    # all missing vertices lie in one spherical cap around vertex 0
    p = ico.positions
    assert float((p[~mask] @ p[0]).min()) > float((p[mask] @ p[0]).max()) - 0.05
    assert geodesic_patch_mask(ico, 0, radius=0.0).sum() == ico.num_vertices - 1
    with pytest.raises(ValueError, match="exactly one"):
        geodesic_patch_mask(ico, 0)


# ---------------------------------------------------------------------------- validators
@pytest.mark.parametrize(
    ("vertices", "faces", "match"),
    [
        (np.array([[0.0, 0, 0], [1, 0, 0], [np.nan, 1, 0]]), np.array([[0, 1, 2]]), "NaN"),
        (np.array([[0.0, 0, 0], [1, 0, 0], [np.inf, 1, 0]]), np.array([[0, 1, 2]]), "NaN or infinite"),
        (np.eye(3), np.array([[0, 1, 3]]), "only 3 vertices"),
        (np.eye(3), np.array([[0, 1, -1]]), "negative"),
        (np.eye(3)[:, :2], np.array([[0, 1, 2]]), r"vertices must have shape \(V, 3\)"),
        (np.eye(3), np.array([[0, 1, 2, 0]]), r"faces must have shape \(F, 3\)"),
        (np.eye(3), np.zeros((0, 3), dtype=int), "empty"),
        (np.eye(3)[:2], np.array([[0, 1, 1]]), "at least 3 vertices"),
        (np.zeros((3, 3)), np.array([[0, 1, 2]]), "zero area"),
    ],
)
def test_mesh_validators(vertices: np.ndarray, faces: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Mesh(vertices, faces)


def test_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.ply"
    with pytest.raises(FileNotFoundError, match="nope.ply"):
        Mesh.from_file(path)


def test_signal_validators() -> None:
    grid = ImageGrid(4, 4)
    ok = torch.ones(16, dtype=torch.bool)
    with pytest.raises(ValueError, match="shape"):
        grid.harmonic_interpolation(torch.zeros(1, 15), ok)
    with pytest.raises(ValueError, match="observed_mask must have shape"):
        grid.harmonic_interpolation(torch.zeros(1, 1, 16), ok[:15])
    with pytest.raises(ValueError, match="bool"):
        grid.harmonic_interpolation(torch.zeros(1, 1, 16), ok.float())
    with pytest.raises(ValueError, match="no observed"):
        grid.harmonic_interpolation(torch.zeros(1, 1, 16), ~ok)
    with pytest.raises(ValueError, match="NaN"):
        grid.harmonic_interpolation(torch.full((1, 1, 16), float("nan")), ok)
    with pytest.raises(ValueError, match="smoothing"):
        grid.harmonic_interpolation(torch.zeros(1, 1, 16), ok, smoothing=-1.0)
    with pytest.raises(ValueError, match="vertices"):
        grid.as_image(torch.zeros(1, 1, 15))
    with pytest.raises(ValueError, match="k must be"):
        grid.eigenbasis(16)
    with pytest.raises(ValueError, match="unknown ordering"):
        grid.ordering("random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="permutation"):
        invert_permutation(torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="longitudes"):
        SphereGrid([90, 0, -90], [0, 10, 20])


# ---------------------------------------------------------------------------- mesh clean-up, painting, interop
def test_mesh_cleanup_original_ids() -> None:
    v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5], [1, 1, 0]])
    f = np.array([[0, 1, 2], [2, 1, 0], [1, 4, 2]])
    mesh = Mesh(v, f, remove_unreferenced=True, remove_duplicate_faces=True)
    assert mesh.num_vertices == 4 and mesh.num_faces == 2
    assert mesh.num_removed_duplicate_faces == 1 and mesh.num_duplicate_face_groups == 1
    assert mesh.original_ids.tolist() == [0, 1, 2, 4]
    x = torch.arange(4.0).view(1, 1, 4)
    assert mesh.scatter_to_original(x, fill=-1.0).tolist() == [[[0.0, 1.0, 2.0, -1.0, 3.0]]]
    kept = Mesh(v, f)  # unreferenced vertex 3 is tethered to its nearest referenced vertex (4)
    assert kept.nearest_referenced()[3] == 4
    mask = torch.tensor([True, True, True, False, True])
    vals = torch.tensor([[[0.0, 1.0, 2.0, 99.0, 3.0]]])
    assert float(kept.harmonic_interpolation(vals, mask)[0, 0, 3]) == pytest.approx(3.0)


def test_point_cloud_laplacian_option() -> None:
    ico = trimesh.creation.icosphere(subdivisions=2)
    mesh = Mesh(ico.vertices, ico.faces, laplacian_method="point_cloud")
    evals, _ = mesh.eigenbasis(4)
    torch.testing.assert_close(evals[1:], torch.full((3,), 2.0, dtype=torch.float64), rtol=0.1, atol=0)


def test_paint_images_shapes_and_values() -> None:
    grid = ImageGrid(8, 8)
    img = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = paint_images_on(grid, img, margin=0.0)
    assert out.shape == (3, 1, 64)
    # with no margin, pixel centres of an 8x8 grid land between image pixel centres: bilinear mean
    centre = paint_images(grid.positions, img, margin=0.0)
    torch.testing.assert_close(out, centre)
    const = paint_images(grid.positions, torch.full((1, 5, 7), 0.25, dtype=torch.float64))
    assert const.dtype == torch.float64 and torch.allclose(const, torch.tensor(0.25, dtype=torch.float64))
    with pytest.raises(ValueError, match="axis"):
        paint_images(grid.positions, img, axis="w")  # type: ignore[arg-type]


def test_pyg_roundtrip() -> None:
    ico = Icosphere(1)
    data = to_pyg(ico)
    assert data.edge_index.shape[0] == 2 and data.face.shape == (3, ico.num_faces)
    back = from_pyg(data)
    torch.testing.assert_close(back.positions, ico.positions)
    assert torch.equal(back.faces, ico.faces)
    assert back.fingerprint() == Mesh(ico.positions, ico.faces).fingerprint()
    grid_data = to_pyg(ImageGrid(3, 3))
    assert grid_data.edge_index.shape == (2, 24)
    with pytest.raises(ValueError, match="face"):
        from_pyg(grid_data)


def test_icosphere_shipped_files_match_builder() -> None:
    for level in range(5):
        v, f = Icosphere.load_or_build(level)
        vb, fb = Icosphere.build(level)
        np.testing.assert_allclose(v, vb)
        assert np.array_equal(f, fb) and v.shape[0] == 10 * 4**level + 2


# ---------------------------------------------------------------------------- real data
@pytest.mark.data
def test_bunny_res3_topology(data_dir: Path) -> None:
    bunny = _make("bunny", data_dir)
    assert isinstance(bunny, Mesh)
    assert bunny.num_vertices == 1889 and bunny.num_original_vertices == 1889
    assert bunny.num_duplicate_face_groups == 69 and bunny.num_removed_duplicate_faces == 83
    assert bunny.num_faces == 3851 - 83
    assert not bunny.referenced()[[557, 902]].any() and bunny.referenced().sum() == 1887
    # unreferenced vertices follow their nearest referenced neighbour in the low spectrum
    _, evecs = bunny.eigenbasis(12)
    near = bunny.nearest_referenced()
    torch.testing.assert_close(evecs[[557, 902]], evecs[near[[557, 902]]], atol=1e-9, rtol=1e-4)
    cleaned = Mesh.from_file(data_dir / BUNNY, remove_unreferenced=True)
    assert cleaned.num_vertices == 1887 and 557 not in cleaned.original_ids.tolist()


@pytest.mark.data
def test_bunny_raw_keeps_duplicates(data_dir: Path) -> None:
    raw = Mesh.from_file(data_dir / BUNNY, clean=False)
    assert raw.num_faces == 3851 and raw.num_vertices == 1889


@pytest.mark.data
def test_bunny_obj_watertight(data_dir: Path) -> None:
    path = data_dir / "bunny/bunny_1889.obj"
    mesh = Mesh.from_file(path)
    assert mesh.num_vertices == 1889 and mesh.num_faces == 3774 and mesh.num_removed_duplicate_faces == 0
    assert trimesh.Trimesh(mesh.positions.numpy(), mesh.faces.numpy(), process=False).is_watertight
    assert mesh.referenced().all()


@pytest.mark.data
def test_bunny_hilbert_beats_file_order(data_dir: Path) -> None:
    bunny = _make("bunny", data_dir)
    file_order = ordering_locality(bunny, bunny.ordering("identity"))
    assert ordering_locality(bunny, bunny.ordering("hilbert")) < 0.5 * file_order
    mask = geodesic_patch_mask(bunny, 0, fraction=0.1)
    assert int((~mask).sum()) == 189
