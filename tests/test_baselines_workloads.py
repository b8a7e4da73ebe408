"""Every baseline runs through the shared protocol on the real workload geometries (bunny mesh,
46 x 90 sphere grid) with their operators, using an untrained tiny prior and a few steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from manifold_ps.baselines import DPS, MCG, HarmonicInterpolation, REDDiff, TweedieDenoiser
from manifold_ps.datasets import bunny_path
from manifold_ps.geometry import Geometry, Mesh, SphereGrid
from manifold_ps.operators import Denoising, RandomInpainting
from manifold_ps.priors import build_prior
from manifold_ps.sampling import PosteriorSampler


def _geometry(kind: str, request: pytest.FixtureRequest) -> Geometry:
    if kind == "bunny":
        data_dir: Path = request.getfixturevalue("data_dir")
        return Mesh.from_file(bunny_path("res3", root=data_dir))
    return SphereGrid.gasp()


@pytest.mark.parametrize(
    ("kind", "num_vertices", "missing", "sigma"),
    [pytest.param("bunny", 1889, 0.3, 0.1, marks=pytest.mark.data), ("sphere", 4140, 0.6, 0.05)],
    ids=["bunny-mnist", "era5-sphere"],
)
def test_all_baselines_run_on_the_workload(kind: str, num_vertices: int, missing: float, sigma: float,
                                           request: pytest.FixtureRequest) -> None:
    geometry = _geometry(kind, request)
    assert geometry.num_vertices == num_vertices
    prior = build_prior(geometry, preset="tiny", ordering="identity")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, num_vertices, generator=g)
    masking = RandomInpainting(num_vertices, (missing, missing), sigma).draw(2, generator=g)
    denoising = Denoising(num_vertices, sigma)
    runs: list[tuple[PosteriorSampler, torch.nn.Module, int]] = [
        (DPS(prior, steps=2), masking, 2),
        (MCG(prior, steps=2), masking, 2),
        (REDDiff(prior, steps=2), masking, 2),
        (HarmonicInterpolation(geometry), masking, 0),
        (TweedieDenoiser(prior), denoising, 1),
    ]
    for sampler, op, nfe in runs:
        y = op(x, generator=g)
        out = sampler.sample(y, op, 2, generator=torch.Generator().manual_seed(1))
        assert out.shape == (2, 2, 1, num_vertices) and out.dtype == y.dtype, type(sampler).__name__
        assert torch.isfinite(out).all() and sampler.nfe == nfe, type(sampler).__name__
