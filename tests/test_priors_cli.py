"""The ``manifold-ps`` command line on real data (smoke profile, a few steps): train-prior runs the
benchmark's prior stage with the same configuration, train-flow distils it; both resume and
refuse a rerun whose settings differ; the posterior draws and flow PSNRs are bit-identical through
the benchmark script, the command line and the Python API."""

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
    with pytest.raises(ValueError, match=rf"prior.parameterization 'wiener' -> 'edm'.*{tmp_path.name}"):
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
    # a decoded sampler (the default) records every field; the paper's method leaves out the
    # decoded-sampler fields at their values before they existed (older runs stay resumable)
    assert set(asdict(same.flow.resolved())) == set(saved["flow"]) and saved["flow"]["decode"] is True
    paper = apply_overrides(same, {"flow.decode": False, "flow.base": "fill", "flow.prior_term": "elbo"})
    assert {k: v for k, v in asdict(paper.flow.resolved()).items()
            if k not in flow_record(workload, workload.tasks[0], paper)["flow"]} == {
        "decode": False, "decoder_noise": False, "base": "fill", "base_rank": 256, "base_precision": "float64",
        "likelihood": "denoised"}
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


@pytest.mark.data
def test_smoke_results_are_bit_identical_through_the_benchmark_the_cli_and_the_api(data_dir: Path, tmp_path: Path,
                                                                                     monkeypatch: pytest.MonkeyPatch
                                                                                     ) -> None:
    """benchmarks/bunny_mnist.py, manifold-ps (train-prior, train-flow, sample) and manifold_ps.api
    (train_prior_on, train_posterior, sample_posterior) at the smoke profile, each training its
    own prior and flow: the same posterior draws, mean and std on the same held-out measurements
    with the benchmark's evaluation seed, and the benchmark's reported flow PSNRs are those of the
    API's samples. A workload's own profile setting (``PROFILE_DEFAULTS``, here a flow learning
    rate) reaches the benchmark and the CLI alike: the API is given it explicitly."""
    import xarray as xr

    from manifold_ps.api import sample_posterior, train_posterior, train_prior_on
    from manifold_ps.benchmarking.cli import benchmark_main
    from manifold_ps.benchmarking.evaluate import scored_psnr
    from manifold_ps.benchmarking.pipeline import TIMING_REPEATS, score_posterior
    from manifold_ps.benchmarking.workloads import PROFILE_DEFAULTS, bunny_mnist
    from manifold_ps.config import apply_overrides, get_profile
    from manifold_ps.flows import AmortizedPosterior
    from manifold_ps.io import load_measurements

    # several sampler calls per set (4 measurements in batches of 3, 8 draws in chunks of 3): how
    # the draws are split over calls has to agree too
    sampling = {"eval.batch_size": "3", "eval.chunk": "3"}
    own = {"flow.lr": 2.5 * get_profile("smoke").flow.lr}  # the workload's own setting of the profile
    monkeypatch.setitem(PROFILE_DEFAULTS, "bunny-mnist", {"smoke": own})
    config = apply_overrides(get_profile("smoke"), {**own, **sampling})
    seed = config.seed + config.eval.seed_offset  # the benchmark's evaluation draws
    n, batch, chunk = config.eval.n_posterior, config.eval.batch_size, config.eval.chunk
    assert batch < config.eval.n_eval and chunk < n

    bench = tmp_path / "bench"
    doc = benchmark_main("bunny_mnist", bunny_mnist, ["--profile", "smoke", "--out", str(bench), "--device", "cpu",
                                                      "--no-progress", "--no-figures",
                                                      *(a for k, v in sampling.items() for a in ("--set", f"{k}={v}"))])
    reported = {e["protocol"]["evaluation"].split(" ")[0]: e["methods"] for e in doc["evaluations"]}
    workload = bunny_mnist(config)
    geometry, stored = workload.geometry, bench / "inpainting" / "measurements.pt"
    train, held = (load_measurements(stored, geometry, which=w) for w in ("train", "heldout"))
    # what the benchmark's evaluation drew (score_posterior is the first to use its generator)
    flow = AmortizedPosterior.load(bench / "inpainting" / "posterior.pt")
    _, drawn = score_posterior(flow, held.x, held.y, held.operator, n_posterior=n, batch_size=batch, chunk=chunk,
                               generator=torch.Generator().manual_seed(seed))

    cli = tmp_path / "cli"
    base = ["--profile", "smoke", "--no-progress", "--device", "cpu"]
    assert main(["train-prior", "--workload", "bunny-mnist", "--out", str(cli / "prior"), *base]) == 0
    assert main(["train-flow", "--workload", "bunny-mnist", "--prior", str(cli / "prior" / "prior.pt"),
                 "--out", str(cli / "flow"), *base]) == 0
    for folder in (bench / "inpainting", cli / "flow"):
        assert json.loads((folder / "config.json").read_text())["flow"]["lr"] == own["flow.lr"], folder
    assert main(["sample", "--posterior", str(cli / "flow" / "posterior.pt"), "--measurements",
                 str(cli / "flow" / "measurements.pt"), "--set", "heldout", "--n", str(n), "--batch-size", str(batch),
                 "--chunk", str(chunk), "--seed", str(seed), "--out", str(cli / "posterior.nc"),
                 "--device", "cpu"]) == 0
    with xr.open_dataset(cli / "posterior.nc") as ds:
        from_cli = {k: torch.from_numpy(ds[k].values) for k in ("mean", "std", "draws")}

    api = tmp_path / "api"
    prior = train_prior_on(geometry, workload.prior_train, config, api / "prior", device="cpu")
    posterior = train_posterior(prior, train, config, api / "flow", geometry=geometry, device="cpu")

    def api_samples(y, operator):  # noqa: ANN001, ANN202
        return sample_posterior(posterior, y, operator, n, batch_size=batch, chunk=chunk,
                                generator=torch.Generator().manual_seed(seed))

    out = api_samples(held.y, held.operator)
    kept = out.draws.shape[1]
    for name, value in (("mean", drawn.mean), ("std", drawn.std), ("draws", drawn.kept[:, :kept])):
        assert torch.equal(getattr(out, name), value), name
        assert torch.equal(from_cli[name], value), name
    # the benchmark's reported flow PSNRs are the API's samples scored, on both evaluation sets
    # (the paper's protocol: the first n_eval training measurements)
    first = torch.arange(config.eval.n_eval)
    paper = api_samples(train.y[first], train.operator.select(first))
    for name, s, x in (("heldout", out, held.x), ("paper", paper, train.x[first])):
        assert reported[name]["aps_n128"]["psnr"] == float(scored_psnr(s.mean, x, workload.data_range).mean())
        assert reported[name]["aps_n1"]["psnr"] == float(scored_psnr(s.draws[:, 0], x, workload.data_range).mean())
        # the N = 1 time is the median of the timing passes, whose range is recorded beside it
        one = reported[name]["aps_n1"]
        assert one["timing_repeats"] == TIMING_REPEATS
        assert one["seconds_per_sample_min"] <= one["seconds_per_sample"] <= one["seconds_per_sample_max"]
