"""Shared fixtures: device, seeded generator, and the real data folder.

Real-data tests use the ``data_dir`` fixture. When the folder named by ``MANIFOLD_PS_DATA`` is
missing they *fail* with a message saying how to point at it; they never skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    # Tests use tiny tensors: one thread avoids oversubscription on shared cores (measured ~80x
    # slower with 2 threads while other processes run).
    torch.set_num_threads(1)


@pytest.fixture(params=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = os.environ.get("MANIFOLD_PS_DATA")
    if not root:
        pytest.fail(
            "MANIFOLD_PS_DATA is not set: real-data tests need it to point at the data folder "
            "(e.g. export MANIFOLD_PS_DATA=../shared/data)"
        )
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        pytest.fail(f"MANIFOLD_PS_DATA={root} is not a folder (resolved to {path})")
    return path
