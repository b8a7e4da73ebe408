"""Bad input at the boundary: each error has the right type and names the file or field, and
says what to do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from manifold_ps.api import output_folder, resolve_device, train_posterior, train_prior_on
from manifold_ps.config import build_config
from manifold_ps.flows import AmortizedPosterior, ConditionalRealNVP
from manifold_ps.geometry import ImageGrid, Mesh
from manifold_ps.io import Measurements, load_measurements, load_signals, simulate_measurements
from manifold_ps.operators import Inpainting
from manifold_ps.priors import DiffusionPrior, build_prior, train_prior

TINY = build_config("smoke", overrides={"prior.train_steps": 2, "prior.batch_size": 4, "flow.train_steps": 1,
                                        "flow.batch_size": 4})


def test_obj_face_indexing_a_missing_vertex(tmp_path: Path) -> None:
    path = tmp_path / "bad.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 5\n")
    with pytest.raises(ValueError, match=rf"{path}.*indexes a vertex that does not exist"):
        Mesh.from_file(path)


@pytest.mark.parametrize("content", ["", "this is not a mesh\n"], ids=["empty", "text"])
def test_empty_or_text_ply(tmp_path: Path, content: str) -> None:
    path = tmp_path / "mesh.ply"
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"{path} could not be read as a PLY file"):
        Mesh.from_file(path)


@pytest.mark.parametrize("suffix", [".off", ".stl", ".obj"])
def test_other_mesh_formats_load(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"ico{suffix}"
    trimesh.creation.icosphere(subdivisions=1).export(path)
    assert Mesh.from_file(path).num_vertices == 42  # STL corners merged back into shared vertices


def test_signals_of_another_shape_name_file_and_shapes(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((5, 7)))
    with pytest.raises(ValueError, match=rf"{path}: found an array of shape \(5, 7\), expected \(N, 12\)"):
        load_signals(path, ImageGrid(3, 4))


def test_nan_signals_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    x = np.zeros((4, 12))
    x[2, 3] = np.nan
    np.savez(path, signals=x)
    with pytest.raises(ValueError, match=rf"{path} contains 1 NaN"):
        load_signals(path, ImageGrid(3, 4))


def test_float64_signals_are_converted_not_a_crash(tmp_path: Path) -> None:
    grid = ImageGrid(3, 4)
    x = torch.rand(8, 1, 12, dtype=torch.float64)
    prior = build_prior(grid, preset="tiny", network="mlp", parameterization="x0")
    trained = train_prior(prior, x, out_dir=None, steps=1, batch_size=4, progress=False, ema_decay=None)
    assert next(trained.parameters()).dtype == torch.float32
    assert train_prior_on(grid, x, TINY, tmp_path).num_vertices == 12


def test_measurements_and_operator_of_other_sizes(tmp_path: Path) -> None:
    grid = ImageGrid(4, 8)
    prior = build_prior(grid, preset="tiny", network="mlp", parameterization="x0")
    meas = simulate_measurements(torch.rand(32, 1, 32), grid, missing=0.3)
    short = Measurements(meas.y[:31], meas.operator, None, {})
    with pytest.raises(ValueError, match="31 measurements y but the operator holds 32 masks"):
        train_posterior(prior, short, TINY, tmp_path, geometry=grid)


def test_prior_made_for_another_vertex_order(tmp_path: Path) -> None:
    ico = trimesh.creation.icosphere(subdivisions=1)
    mesh = Mesh(ico.vertices, ico.faces)
    perm = np.random.default_rng(0).permutation(42)
    inverse = np.argsort(perm)
    shuffled = Mesh(ico.vertices[perm], inverse[ico.faces])
    prior = build_prior(mesh, preset="tiny", network="mlp", parameterization="x0")
    meas = simulate_measurements(torch.rand(8, 1, 42), shuffled)
    with pytest.raises(ValueError, match="another mesh or vertex order"):
        train_posterior(prior, meas, TINY, tmp_path, geometry=shuffled)


@pytest.fixture
def saved_files(tmp_path: Path) -> tuple[Path, Path]:
    grid = ImageGrid(2, 4)
    prior = build_prior(grid, preset="tiny", network="mlp", parameterization="x0")
    flow = ConditionalRealNVP(1, prior.layout, cond_channels=2, steps=1, hidden=4)
    post = AmortizedPosterior(flow, fingerprint=grid.fingerprint())
    return prior.save(tmp_path / "prior.pt"), post.save(tmp_path / "posterior.pt")


def test_each_loader_names_the_other_kind_of_file(saved_files: tuple[Path, Path]) -> None:
    prior, posterior = saved_files
    with pytest.raises(ValueError, match=rf"{posterior} is a posterior sampler file.*load it with AmortizedPosterior.load"):
        DiffusionPrior.load(posterior)
    with pytest.raises(ValueError, match=rf"{prior} is a diffusion prior file.*load it with DiffusionPrior.load"):
        AmortizedPosterior.load(prior)


def test_files_of_another_version_or_bare_state_dicts_say_how_to_convert(saved_files: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    prior, _ = saved_files
    blob = torch.load(prior, weights_only=True)
    old = tmp_path / "old.pt"
    torch.save({**blob, "format": "manifold_ps.prior/0"}, old)
    with pytest.raises(ValueError, match=rf"{old} was written in format version 0.*save it again, or retrain"):
        DiffusionPrior.load(old)
    bare = tmp_path / "bare.pt"
    torch.save(blob["state_dict"], bare)
    with pytest.raises(ValueError, match=rf"{bare} is not a file saved by manifold_ps.*load_state_dict"):
        DiffusionPrior.load(bare)


def test_cuda_on_a_cpu_build_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU build, on any machine
    with pytest.raises(ValueError, match="'cuda'.*(no CUDA support|no CUDA GPU)"):
        resolve_device("cuda")
    from manifold_ps.cli import console_main

    np.save(tmp_path / "x.npy", np.random.rand(8, 12))
    code = console_main(["train-prior", "--image", "3x4", "--signals", str(tmp_path / "x.npy"), "--out",
                         str(tmp_path / "run"), "--device", "cuda"])
    assert code == 2 and "manifold-ps train-prior: error: device 'cuda'" in capsys.readouterr().err


def test_unwritable_out_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=rf"cannot write to the output folder {blocker / 'run'}"):
        output_folder(blocker / "run")
    from manifold_ps.cli import console_main

    np.save(tmp_path / "x.npy", np.random.rand(8, 12))
    code = console_main(["train-prior", "--image", "3x4", "--signals", str(tmp_path / "x.npy"), "--out",
                         str(blocker / "run"), "--device", "cpu"])
    assert code == 2 and f"cannot write to the output folder {blocker / 'run'}" in capsys.readouterr().err


def test_corrupt_checkpoint_names_the_file_and_what_to_do(tmp_path: Path) -> None:
    grid = ImageGrid(3, 4)
    x = torch.rand(8, 1, 12)
    cfg = build_config("smoke", overrides={"prior.train_steps": 2, "prior.batch_size": 4})
    train_prior_on(grid, x, cfg, tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"\x80garbage")
    (tmp_path / "complete").unlink()
    with pytest.raises(ValueError, match=rf"checkpoint {tmp_path / 'checkpoint.pt'} could not be read.*delete it"):
        train_prior_on(grid, x, build_config("smoke", overrides={"prior.train_steps": 3, "prior.batch_size": 4}),
                       tmp_path)


def test_user_measurements_with_nan_at_observed_entries(tmp_path: Path) -> None:
    y = np.zeros((2, 12))
    y[0, 1] = np.nan
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "mask.npy", np.ones((2, 12), dtype=bool))
    with pytest.raises(ValueError, match=rf"{tmp_path / 'y.npy'}: y is NaN at 1 observed entries"):
        load_measurements(tmp_path / "y.npy", ImageGrid(3, 4), mask=tmp_path / "mask.npy", sigma=0.1)
    np.save(tmp_path / "mask.npy", np.ones((3, 12), dtype=bool))
    with pytest.raises(ValueError, match=rf"{tmp_path / 'mask.npy'}: the mask has 3 rows but y has 2"):
        load_measurements(tmp_path / "y.npy", ImageGrid(3, 4), mask=tmp_path / "mask.npy", sigma=0.1)


def test_todays_stored_measurements_load(tmp_path: Path) -> None:
    """The two layouts written today: train-flow --workload (train_y/test_y) and a benchmark task folder (sets)."""
    grid = ImageGrid(2, 3)
    op = Inpainting(torch.ones(4, 6, dtype=torch.bool), 0.1)
    y = torch.rand(4, 1, 6)
    torch.save({"seed": 0, "fingerprint": grid.fingerprint(), "train_y": y, "test_y": y[:2], "test_x": y[:2],
                "train_operator": op.config(), "test_operator": op.select(torch.arange(2)).config(), "blind": False},
               tmp_path / "cli.pt")
    assert load_measurements(tmp_path / "cli.pt", grid).y.shape == (2, 1, 6)  # the held-out set by default
    assert load_measurements(tmp_path / "cli.pt", grid, which="train").y.shape == (4, 1, 6)
    torch.save({"seed": 0, "fingerprint": grid.fingerprint(), "sets": {"train": {"x": y, "y": y, "operator": op.config()}}},
               tmp_path / "bench.pt")
    assert load_measurements(tmp_path / "bench.pt", grid).x.shape == (4, 1, 6)
    with pytest.raises(ValueError, match=rf"{tmp_path / 'bench.pt'} was made for another geometry"):
        load_measurements(tmp_path / "bench.pt", ImageGrid(3, 2))
