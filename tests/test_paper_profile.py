"""The ``paper`` profile builds: its prior and flow at full size, one optimizer step each on a
batch of 2 through the same API as every run (CPU, under a minute), so the GPU path cannot rot
unseen."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from manifold_ps.api import train_posterior, train_prior_on
from manifold_ps.config import apply_overrides, get_profile
from manifold_ps.geometry import SphereGrid
from manifold_ps.io import simulate_measurements


@pytest.mark.slow
def test_paper_prior_and_flow_take_one_step_each(tmp_path: Path) -> None:
    paper = get_profile("paper")
    config = apply_overrides(paper, {"prior.train_steps": 1, "prior.batch_size": 2, "flow.train_steps": 1,
                                     "flow.batch_size": 2})
    grid = SphereGrid.gasp()  # the largest geometry of the paper (4140 vertices)
    x = torch.rand(2, 1, grid.num_vertices, generator=torch.Generator().manual_seed(0))
    prior = train_prior_on(grid, x, config, tmp_path / "prior", device="cpu")
    assert type(prior.network).__name__ == "UNet1d" and prior.parameterization == "edm"
    assert sum(p.numel() for p in prior.parameters()) > 1_000_000  # the paper preset, not a tiny stand-in
    meas = simulate_measurements(x, grid, "inpainting", missing=0.3, sigma=0.1)
    posterior = train_posterior(prior, meas, config, tmp_path / "flow", geometry=grid, device="cpu")
    built = posterior.flow.config()
    assert (built["steps"], built["hidden"], built["blocks"]) == (paper.flow.layers, paper.flow.hidden, paper.flow.blocks)
    assert posterior.metadata["train_steps"] == 1
    assert posterior.sample(meas.y, meas.operator, 1).shape == (2, 1, 1, grid.num_vertices)
