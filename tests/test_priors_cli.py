"""The ``manifold-ps`` command line on real data (smoke profile, a few steps): train-prior runs the
benchmark's prior stage with the same configuration, train-flow distils it; both resume and
refuse a rerun whose settings differ."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from manifold_ps.cli import main
from manifold_ps.priors import DiffusionPrior
from manifold_ps.training import load_checkpoint


@pytest.mark.data
def test_train_prior_cli_smoke_and_resume(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train-prior", "--workload", "bunny-mnist", "--profile", "smoke", "--out", str(tmp_path),
            "--num-samples", "32", "--batch-size", "8", "--no-progress", "--device", "cpu"]
    assert main([*args, "--steps", "2"]) == 0
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
    assert main([*args, "--train-steps", "4"]) == 0  # rerun with a longer schedule: resumes from step 2
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 4 and len(state["history"]["step"]) == 2  # logged at the end of each run
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["prior"]["train_steps"] == 4 and saved["prior"]["train_size"] == 32
    assert saved["prior"]["warmup_steps"] == 0 and saved["prior"]["ema_decay"] == 0.9  # resolved, not None
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    prior = DiffusionPrior.load(summary["prior"], num_vertices=1889, fingerprint=summary["fingerprint"])
    assert prior.num_vertices == 1889
    with pytest.raises(ValueError, match="1889 vertices"):
        DiffusionPrior.load(summary["prior"], num_vertices=4140)
    # the case: another parameterisation into the same folder is refused, naming the field
    with pytest.raises(ValueError, match=rf"prior.parameterization 'x0' -> 'edm'.*{tmp_path.name}"):
        main([*args, "--train-steps", "4", "--parameterization", "edm"])


@pytest.mark.data
def test_stop_step_limits_a_run_and_a_larger_one_continues_it(data_dir: Path, tmp_path: Path) -> None:
    args = ["train-prior", "--workload", "bunny-mnist", "--profile", "smoke", "--out", str(tmp_path),
            "--num-samples", "32", "--batch-size", "8", "--no-progress", "--device", "cpu", "--steps", "6"]
    assert main([*args, "--set", "prior.stop_step=2"]) == 0
    assert json.loads((tmp_path / "complete").read_text())["steps"] == 2
    assert main([*args, "--set", "prior.stop_step=3"]) == 0  # a finished run, continued
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3
    assert json.loads((tmp_path / "complete").read_text())["steps"] == 3
    assert main(args) == 0  # no stop_step: the finished run is loaded as it is, as after a minutes cap
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3
    with pytest.raises(ValueError, match=rf"trained for 3 steps, past prior.stop_step=2; delete {tmp_path}"):
        main([*args, "--set", "prior.stop_step=2"])


@pytest.mark.data
def test_cli_and_benchmark_train_the_same_smoke_prior(data_dir: Path, tmp_path: Path) -> None:
    from manifold_ps.benchmarking.pipeline import stage_prior
    from manifold_ps.benchmarking.workloads import bunny_mnist
    from manifold_ps.config import get_profile

    assert main(["train-prior", "--workload", "bunny-mnist", "--profile", "smoke", "--out", str(tmp_path / "cli"),
                 "--no-progress", "--device", "cpu"]) == 0
    config = get_profile("smoke")
    stage_prior(bunny_mnist(config), config, tmp_path / "bench", device=torch.device("cpu"), progress=False)
    cli = json.loads((tmp_path / "cli" / "config.json").read_text())
    bench = json.loads((tmp_path / "bench" / "prior" / "config.json").read_text())
    assert cli == bench
    a = DiffusionPrior.load(tmp_path / "cli" / "prior.pt").state_dict()
    b = DiffusionPrior.load(tmp_path / "bench" / "prior" / "prior.pt").state_dict()
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # same settings, same seed: the same weights


@pytest.mark.data
def test_train_flow_cli_sets_t_min_and_refuses_other_measurements(data_dir: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    prior = tmp_path / "prior"
    base = ["--profile", "smoke", "--no-progress", "--device", "cpu"]
    assert main(["train-prior", "--workload", "bunny-mnist", "--out", str(prior), "--steps", "4", *base]) == 0
    toml = tmp_path / "run.toml"
    toml.write_text("[flow]\ntrain_steps = 3\nlr = 0.002\n[eval]\nn_posterior = 2\n")
    flow = ["train-flow", "--prior", str(prior / "prior.pt"), "--out", str(tmp_path / "flow"), *base,
            "--config", str(toml), "--set", "flow.lr=0.001"]
    assert main([*flow, "--t-min", "0.02"]) == 0
    report = json.loads((tmp_path / "flow" / "report.json").read_text())
    assert report["steps"] == 3 and report["n_posterior"] == 2
    saved = json.loads((tmp_path / "flow" / "config.json").read_text())
    assert saved["measurements"]["missing_fraction"] == 0.3 and saved["task"] == "inpainting"
    # the flow section is what the benchmark pipeline resolves for the same settings
    from manifold_ps.config import apply_overrides, get_profile

    from manifold_ps.benchmarking.pipeline import flow_record
    from manifold_ps.benchmarking.workloads import bunny_mnist

    same = apply_overrides(get_profile("smoke"), {"flow.train_steps": 3, "flow.lr": 1e-3, "flow.t_min": 0.02})
    workload = bunny_mnist(same)
    assert saved["flow"] == flow_record(workload, workload.tasks[0], same)["flow"]
    # the record leaves out only the decoded-sampler fields at their defaults (older runs stay resumable)
    assert {k: v for k, v in asdict(same.flow.resolved()).items() if k not in saved["flow"]} == {
        "decode": False, "decoder_noise": False, "base": "fill", "base_rank": 256}
    assert saved["flow"]["t_min"] == 0.02 and saved["flow"]["layers"] == 2 and saved["flow"]["warmup_steps"] == 0
    with pytest.raises(ValueError, match=r"flow.t_min 0.02 -> 0.03, measurements.missing_fraction 0.3 -> 0.7"):
        main([*flow, "--missing", "0.7"])


@pytest.mark.data
def test_cli_and_benchmark_train_the_same_smoke_flow(data_dir: Path, tmp_path: Path) -> None:
    """train-flow --workload is the benchmark's measurement and flow stages: same files, same weights."""
    from manifold_ps.benchmarking.pipeline import stage_flow, stage_measurements
    from manifold_ps.benchmarking.workloads import bunny_mnist
    from manifold_ps.config import apply_overrides, get_profile
    from manifold_ps.flows import AmortizedPosterior

    base = ["--profile", "smoke", "--no-progress", "--device", "cpu"]
    assert main(["train-prior", "--workload", "bunny-mnist", "--out", str(tmp_path / "prior"), "--steps", "2",
                 *base]) == 0
    assert main(["train-flow", "--workload", "bunny-mnist", "--prior", str(tmp_path / "prior" / "prior.pt"),
                 "--out", str(tmp_path / "cli"), "--set", "flow.train_steps=3", *base]) == 0
    config = apply_overrides(get_profile("smoke"), {"flow.train_steps": 3})
    workload = bunny_mnist(config)
    task = workload.tasks[0]
    prior = DiffusionPrior.load(tmp_path / "prior" / "prior.pt", geometry=workload.geometry)
    train, _ = stage_measurements(workload, task, config, tmp_path / "bench")
    stage_flow(workload, task, config, prior, train, tmp_path / "bench", device=torch.device("cpu"), progress=False)
    bench = tmp_path / "bench" / task.name
    assert json.loads((tmp_path / "cli" / "config.json").read_text()) == json.loads((bench / "config.json").read_text())
    a, b = (AmortizedPosterior.load(p / "posterior.pt").state_dict() for p in (tmp_path / "cli", bench))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
