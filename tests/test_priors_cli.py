"""The ``manifold-ps train-prior`` command on real data (smoke profile, a few steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from manifold_ps.cli import main
from manifold_ps.priors import DiffusionPrior
from manifold_ps.training import load_checkpoint


@pytest.mark.data
def test_train_prior_cli_smoke_and_resume(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        args = ["train-prior", "--workload", "bunny-mnist", "--profile", "smoke", "--out", str(tmp_path),
                "--num-samples", "32", "--batch-size", "8", "--no-progress", "--device", "cpu"]
        assert main([*args, "--steps", "2"]) == 0
        assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
        assert main([*args, "--steps", "4"]) == 0  # rerun: resumes from step 2
    finally:
        torch.set_num_threads(previous)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 4 and len(state["history"]["step"]) == 2  # log_every=5: logged at 2 and 4
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    prior = DiffusionPrior.load(summary["prior"], num_vertices=1889, fingerprint=summary["fingerprint"])
    assert prior.num_vertices == 1889
    with pytest.raises(ValueError, match="1889 vertices"):
        DiffusionPrior.load(summary["prior"], num_vertices=4140)
