"""The benchmark scripts end to end at the smoke profile: schema, methods, resume."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest

from manifold_ps.benchmarking import validate_results

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "bunny_mnist": ("aps_n1", "aps_n128", "gaussian_draw", "gaussian_mean", "dps", "mcg", "harmonic", "reddiff"),
    "era5_imputation": ("aps_n1", "aps_n128", "gaussian_draw", "gaussian_mean", "dps", "mcg", "harmonic", "reddiff"),
    "image_restoration": ("aps_n1", "aps_n128", "gaussian_draw", "gaussian_mean", "dps", "reddiff"),
}
ITERATIVE = ("dps", "mcg", "reddiff")


def _run(script: str, out: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> dict:
    argv = [f"{script}.py", "--profile", "smoke", "--out", str(out), "--no-progress", *extra]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(ROOT / "benchmarks" / f"{script}.py"), run_name="__main__")
    return json.loads((out / "results.json").read_text())


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_smoke_profile_end_to_end(script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_dir: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "run"
    doc = _run(script, out, monkeypatch)
    assert doc["profile"] == "smoke"
    assert (out / "results.md").is_file()
    evaluations = doc["evaluations"]
    assert len(evaluations) >= 2  # the paper's protocol and a held-out set at least
    assert {e["protocol"]["evaluation"].split(" ")[0] for e in evaluations} >= {"paper", "heldout"}
    projected = script != "era5_imputation"  # digits and images have a guaranteed range; temperature does not
    for ev in evaluations:
        blind = ev["protocol"].get("blind")
        required = SCRIPTS[script] if not blind else ("aps_n1", "aps_n128", "gaussian_draw", "gaussian_mean", "harmonic")
        if ev["protocol"]["evaluation"].startswith("paper"):  # iterative baselines: held-out sets only
            assert not set(ITERATIVE) & ev["methods"].keys()
            required = tuple(m for m in required if m not in ITERATIVE)
        validate_results(ev, required_methods=required)
        for name, entry in ev["methods"].items():
            assert math.isfinite(entry["psnr"]) and entry["seconds_per_sample"] > 0, name
            assert entry["psnr_low"] <= entry["psnr"] <= entry["psnr_high"], name
            if projected:  # projection onto the range can only bring an estimate closer to the truth
                assert entry["psnr"] >= entry["psnr_raw"] - 1e-9, name
            else:
                assert entry["psnr"] == entry["psnr_raw"], name
            for ref in ("aps_n1", "aps_n128"):
                if name != ref:
                    assert entry[f"diff_{ref}_low"] <= entry[f"diff_{ref}"] <= entry[f"diff_{ref}_high"], name
        decoded = ev["config"]["flow"]["decode"]  # the flow, plus the prior's denoiser when it decodes
        assert ev["methods"]["aps_n1"]["nfe"] == (2 if decoded else 1) == ev["methods"]["aps_n128"]["nfe"]
        assert ev["methods"]["gaussian_mean"]["nfe"] == 0
        assert 0 <= ev["methods"]["gaussian_mean"]["coverage90"] <= 1
        assert ev["config"]["gaussian"]["ridge"] in ev["config"]["eval"]["gaussian_ridges"]
        tuning = ev["config"]["tuning"]
        assert "disjoint from every evaluation set" in tuning["request"]["validation"]
        for name in set(ITERATIVE) & set(required):
            assert tuning[name]["chosen"] == {k: v for k, v in max(tuning[name]["grid"], key=lambda r: r["psnr"]).items()
                                              if k in tuning[name]["chosen"]}
    assert "validation tuning (outside the budget)" in (out / "results.md").read_text()
    figures = list((out / "figures").rglob("*.png"))
    assert figures, "no figure written"

    # a rerun resumes: prior and flows are loaded, not retrained
    prior_file = out / "prior" / "prior.pt"
    stamp = prior_file.stat().st_mtime_ns
    flow_files = {p: p.stat().st_mtime_ns for p in out.glob("*/posterior.pt")}
    assert flow_files
    capsys.readouterr()
    again = _run(script, out, monkeypatch, "--no-figures")
    log = capsys.readouterr().out
    assert "prior: loading" in log and "training" not in log.split("prior: loading")[0]
    assert "gaussian: loaded" in log and "baseline settings from" in log and "  tuning " not in log
    assert prior_file.stat().st_mtime_ns == stamp
    assert all(p.stat().st_mtime_ns == t for p, t in flow_files.items())
    assert again["methods"].keys() == doc["methods"].keys()
    # ... and so are the scores of every evaluated set, exactly as first written
    assert log.count("scores on '") == len(evaluations) and "  gaussian posterior on" not in log
    assert [e["methods"] for e in again["evaluations"]] == [e["methods"] for e in evaluations]
    # the rerun's wall times are the run's: each loaded stage counts the time it took when it ran
    first_t, again_t = doc["config"]["timings"], again["config"]["timings"]
    assert not first_t["loaded_stages"] and set(again_t["loaded_stages"]) == set(again_t["stages_s"])
    assert again_t["stages_s"]["prior"] == pytest.approx(
        json.loads((out / "prior" / "complete").read_text())["seconds_last_invocation"])
    for stage, seconds in first_t["stages_s"].items():
        if "/evaluate " in stage:
            assert again_t["stages_s"][stage] == pytest.approx(seconds)
    assert again_t["total_s"] == pytest.approx(sum(again_t["stages_s"].values()))
    assert again_t["invocation_s"] < again_t["total_s"]
    assert "stages ran in earlier invocations of this run" in (out / "results.md").read_text()

    if script == "bunny_mnist":
        # scores stored for another sampler are not reused: that set is evaluated again, the log says why
        record = next(out.glob("*/evaluation/heldout.json"))
        stored = json.loads(record.read_text())
        json_request = dict(stored["request"])
        record.write_text(json.dumps({**stored, "request": {**json_request, "sampler": "0" * 12}}))
        capsys.readouterr()
        third = _run(script, out, monkeypatch, "--no-figures")
        log = capsys.readouterr().out
        assert "was evaluated for other sampler: evaluating again" in log and log.count("scores on '") == len(evaluations) - 1
        assert json.loads(record.read_text())["request"] == json_request
        assert _without_timing(third) == _without_timing(doc)  # the same seeds: the same scores

    if script == "bunny_mnist":
        # a stored prior made for another profile is refused, naming both, instead of being reused
        import torch

        from manifold_ps.benchmarking.pipeline import stage_prior
        from manifold_ps.benchmarking.workloads import bunny_mnist
        from manifold_ps.config import apply_overrides, get_profile

        stored = get_profile("smoke").prior.parameterization
        other = apply_overrides(get_profile("smoke"), {"prior.parameterization": "edm" if stored != "edm" else "x0"})
        with pytest.raises(ValueError, match=rf"prior.parameterization '{stored}' -> .*delete .*prior"):
            stage_prior(bunny_mnist(other), other, out, device=torch.device("cpu"), progress=False)
        # so is a stored flow trained with other flow settings (here the ELBO cutoff), naming each one
        with pytest.raises(ValueError, match=r"other settings \(flow.n_z 2 -> 3, flow.t_min 0.03 -> 0.05\); delete"):
            _run(script, out, monkeypatch, "--flow-t-min", "0.05", "--set", "flow.n_z=3", "--no-figures")
        # a budget or a longer schedule only extends the run: accepted
        _run(script, out, monkeypatch, "--flow-minutes", "5", "--no-figures")


def _without_timing(doc: dict) -> list:
    """Every evaluation's protocol and scores, without the wall-clock numbers."""
    return [(e["protocol"], {m: {k: v for k, v in entry.items() if "seconds" not in k} for m, entry in e["methods"].items()})
            for e in doc["evaluations"]]


@pytest.mark.data
def test_a_capped_run_is_repeated_exactly_by_the_command_it_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     data_dir: Path) -> None:
    """The minutes caps stop training at a machine-dependent step; results.json records it, and
    its command (stop_step, no cap, a fresh folder) gives the same weights and scores."""
    import shlex

    import torch

    from manifold_ps.flows import AmortizedPosterior
    from manifold_ps.priors import DiffusionPrior

    out = tmp_path / "capped"
    doc = _run("bunny_mnist", out, monkeypatch, "--no-figures", "--set", "prior.minutes=1e-6", "--flow-minutes", "1e-6")
    training = doc["config"]["training"]
    for stage in (training["prior"], training["flows"]["inpainting"]):
        assert stage["stopped_by"] == "minutes" and 1 <= stage["steps"] < stage["train_steps"], stage
    assert f"prior {training['prior']['steps']} of 30 (stopped by minutes)" in (out / "results.md").read_text()
    command = shlex.split(training["reproduce"]["command"])
    assert command[:4] == ["python", "benchmarks/bunny_mnist.py", "--profile", "smoke"]
    assert command[-2:] == ["--out", f"{out}-rerun"] and "flow.minutes=1e-6" not in command
    assert f"flow.stop_step={training['flows']['inpainting']['steps']}" in command

    monkeypatch.setattr(sys, "argv", [*command[1:], "--no-progress", "--no-figures"])
    runpy.run_path(str(ROOT / command[1]), run_name="__main__")
    rerun = Path(f"{out}-rerun")
    again = json.loads((rerun / "results.json").read_text())
    assert again["config"]["training"]["prior"]["stopped_by"] == "stop_step"
    assert again["config"]["training"]["flows"]["inpainting"]["steps"] == training["flows"]["inpainting"]["steps"]
    for name, load in (("prior/prior.pt", DiffusionPrior.load), ("inpainting/posterior.pt", AmortizedPosterior.load)):
        torch.testing.assert_close(load(out / name).state_dict(), load(rerun / name).state_dict(), rtol=0, atol=0)
    assert _without_timing(again) == _without_timing(doc)


def _sweep(out: Path, *extra: str) -> dict:
    import importlib.util

    spec = importlib.util.spec_from_file_location("dps_sweep", ROOT / "benchmarks" / "dps_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.main(["--profile", "smoke", "--base-out", str(out), "--zeta-steps", "4", *extra])


@pytest.mark.data
@pytest.mark.slow
def test_dps_sweep_reports_every_method_and_resumes(tmp_path: Path, data_dir: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    # the smoke profile's DPS baseline has 10 steps at the default budget: the NFE-10 sweep point is reused
    report = _sweep(out, "--n", "3", "--nfe", "4", "10", "--budgets", "4", "40")
    assert list(report["dps_vs_nfe"]) == ["4", "10"]
    assert [r["nfe"] for r in report["dps_vs_nfe"].values()] == [4, 10]
    assert [r["zeta"] for r in report["dps_vs_zeta"].values()] == [1.0, 10.0]
    assert {"dps", "mcg", "harmonic", "reddiff"} <= report["methods"].keys()
    assert report["methods"]["dps"] == report["dps_vs_nfe"]["10"]
    for name, r in [*report["methods"].items(), *report["dps_vs_nfe"].items(), *report["dps_vs_zeta"].items()]:
        assert math.isfinite(r["psnr"]) and r["seconds_per_sample"] > 0, name
    stem = "dps_sweep-bunny_mnist-smoke"
    assert json.loads((out / f"{stem}.json").read_text()) == json.loads(json.dumps(report))
    md = (out / f"{stem}.md").read_text()
    assert sum(line.startswith("|---") for line in md.splitlines()) == 4 and f"]({stem}.png)" in md and (out / f"{stem}.png").is_file()
    # the spread of k draws of the exact Gaussian posterior and of DPS, on the same measurements
    assert {"gaussian", "dps"} <= report["spread"].keys()
    for name, r in report["spread"].items():
        assert r["k"] == 8 and r["measurements"] == 3, name
        assert 0 < r["ratio_low"] <= r["ratio"] <= r["ratio_high"] and math.isfinite(r["psnr_mean"]), name
        assert f"{r['ratio']:.2f} [{r['ratio_low']:.2f}, {r['ratio_high']:.2f}]" in md, name
    # its times are only comparable on one processor: the report names it
    import torch
    assert report["versions"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert f"{report['versions']['cpu']} ({report['versions']['cpu_capability']})" in md
    # the baselines' settings were chosen on the benchmark's validation measurements, not on these
    tuning = json.loads((out / "inpainting" / "tuning.json").read_text())
    assert "validation" in report["tuning"] and str(tuning["request"]["measurements"]) in report["tuning"]
    assert tuning["request"]["validation"].startswith("flow-training measurements")

    # a rerun with one more step count computes only that point
    capsys.readouterr()
    again = _sweep(out, "--n", "3", "--nfe", "4", "10", "6", "--budgets", "4", "40")
    log = capsys.readouterr().out
    assert "resuming" in log and log.count("psnr") == 1 and "dps_vs_nfe 6 " in log
    assert list(again["dps_vs_nfe"]) == ["4", "6", "10"]  # in order of NFE, not of computation
    assert again["dps_vs_nfe"]["4"] == report["dps_vs_nfe"]["4"]

    # another number of swept measurements reuses the benchmark's measurements and tuning as they are
    other = _sweep(out, "--n", "2", "--nfe", "--budgets", "--methods", "harmonic", "--out", str(tmp_path / "two"))
    assert other["measurements"] == 2 and set(other["methods"]) == {"harmonic"}
    assert json.loads((out / "inpainting" / "tuning.json").read_text()) == tuning

    with pytest.raises(ValueError, match="held-out set .* has only"):
        _sweep(out, "--n", "100000", "--nfe", "--budgets")
    with pytest.raises(ValueError, match="tweedie.*do not apply"):
        _sweep(out, "--n", "3", "--nfe", "--budgets", "--methods", "tweedie")


class _ShiftedDraws:
    """Draws ``x + s eta + c s eps`` with ``eta`` fixed per measurement (``y`` holds ``x + s eta``):
    for ``c = 1`` a sampler of the posterior the truth was drawn from (both ``N(x + s eta, s^2 I)``
    given ``y``, by symmetry), for ``c < 1`` one whose draws are ``c`` times too close together."""

    nfe = 0

    def __init__(self, s: float, c: float) -> None:
        self.s, self.c = s, c

    def sample(self, y, operator, n, *, generator=None):
        import torch

        eps = torch.randn(y.shape[0], n, *y.shape[1:], generator=generator, dtype=y.dtype)
        return y[:, None] + self.c * self.s * eps


@pytest.mark.parametrize("c", [1.0, 0.5])
def test_draw_spread_is_one_for_posterior_draws_and_c_squared_for_narrow_ones(c: float) -> None:
    import importlib.util

    import torch
    from manifold_ps.operators import Denoising

    spec = importlib.util.spec_from_file_location("dps_sweep_spread", ROOT / "benchmarks" / "dps_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 1, 50, generator=g, dtype=torch.float64)
    s = 0.1
    y = x + s * torch.randn(x.shape, generator=g, dtype=torch.float64)
    r = module.draw_spread(_ShiftedDraws(s, c), x, y, Denoising(50, sigma=s), k=4, batch_size=100,
                           generator=torch.Generator().manual_seed(1))
    # error of the mean of k: s^2 (1 + c^2 / k) per entry; spread: c^2 s^2
    expected = (1 + 1 / 4) * c**2 / (1 + c**2 / 4)
    assert r["ratio_low"] < expected < r["ratio_high"] and r["ratio"] == pytest.approx(expected, rel=0.05)
    # one posterior draw is 3 dB below the mean of many; the mean of k = 4 lies 10 log10(2 / 1.25) above one draw
    gap = 10 * math.log10((1 + c**2) / (1 + c**2 / 4))
    assert r["psnr_mean"] - r["psnr_one"] == pytest.approx(gap, abs=0.15)
    with pytest.raises(ValueError, match="k >= 2"):
        module.draw_spread(_ShiftedDraws(s, c), x, y, Denoising(50, sigma=s), k=1, batch_size=100,
                           generator=torch.Generator().manual_seed(1))


def test_dps_sweep_speed_table_divides_dps_time_by_ours() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("dps_sweep_speed", ROOT / "benchmarks" / "dps_sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    report = {"config": {"eval": {"dps_nfe": 300}},
              "dps_vs_nfe": {"300": {"seconds_per_sample": 3.0}, "1000": {"seconds_per_sample": 10.0}},
              "methods": {"aps_n1": {"seconds_per_sample": 0.02}, "aps_n128": {"seconds_per_sample": 0.005}}}
    table = module.speed_table(report)
    assert table["aps_n1"]["vs_reference"] == pytest.approx(500) and table["aps_n1"]["vs_benchmark"] == pytest.approx(150)
    assert table["aps_n128"]["vs_reference"] == pytest.approx(2000)
    # without the 1000-step point, no reference ratio; DPS at the benchmark's NFE from the methods
    del report["dps_vs_nfe"]["1000"], report["dps_vs_nfe"]["300"]
    report["methods"]["dps"] = {"seconds_per_sample": 6.0}
    table = module.speed_table(report)
    assert "vs_reference" not in table["aps_n1"] and table["aps_n1"]["vs_benchmark"] == pytest.approx(300)
    assert module.speed_table({**report, "methods": {}}) == {}


def _ablation(*argv: str) -> tuple[dict, Any]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("flow_ablation", ROOT / "benchmarks" / "flow_ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.main(list(argv)), module


def _prior_quality():
    import importlib.util

    spec = importlib.util.spec_from_file_location("prior_quality", ROOT / "benchmarks" / "prior_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _mvn_bits_per_dim(gaussian, x, t: float):
    """-log N(x; alpha m, alpha^2 S + sigma^2 I) / (d ln 2) with torch.distributions, from the dense covariance."""
    import torch

    t64 = torch.tensor(t, dtype=torch.float64)
    a, s = gaussian.sde.alpha(t64), gaussian.sde.std(t64)
    d = gaussian.num_dims
    cov = a**2 * gaussian.covariance() + s**2 * torch.eye(d, dtype=torch.float64)
    mvn = torch.distributions.MultivariateNormal(a * gaussian.mean.flatten(), covariance_matrix=cov)
    return -mvn.log_prob(x.flatten(1).double()) / (d * math.log(2.0))


def test_prior_quality_measures_a_gaussian_exactly() -> None:
    import torch

    from manifold_ps.priors import GaussianPrior

    pq = _prior_quality()
    g = torch.Generator().manual_seed(0)
    root = torch.randn(4, 4, generator=g, dtype=torch.float64)
    cov = root @ root.T + 0.1 * torch.eye(4, dtype=torch.float64)
    gaussian = GaussianPrior(torch.randn(1, 4, generator=g, dtype=torch.float64), cov)
    x = gaussian.sample_data(32, generator=g).float()
    step0 = pq.Step0Prior(gaussian)

    # denoising: the same noisy input for both denoisers, so a prior that is the Gaussian has ratio 1;
    # the Wiener error is that of the closed form mu + S a (a^2 S + s^2 I)^-1 (x_t - a mu) on the seeded noise
    errors = pq.denoising_errors(step0, gaussian, x, pq.TIMES, seed=3, batch=5)
    torch.testing.assert_close(errors["prior"], errors["wiener"], rtol=1e-4, atol=1e-7)
    noise = torch.randn((pq.TIMES.shape[0], *x.shape), generator=torch.Generator().manual_seed(3), dtype=x.dtype)
    s_cov, mu = gaussian.covariance(), gaussian.mean.flatten()
    for i, t in enumerate(pq.TIMES):
        a, s = gaussian.sde.alpha(t), gaussian.sde.std(t)
        xt = (a * x + s * noise[i]).flatten(1).double()
        gain = torch.linalg.solve(a**2 * s_cov + s**2 * torch.eye(4, dtype=torch.float64), a * s_cov)  # symmetric
        wiener = mu + (xt - a * mu) @ gain
        torch.testing.assert_close(errors["wiener"][i], (wiener - x.flatten(1).double()).square().mean(-1))
        torch.testing.assert_close(errors["noisy"][i], (xt / a - x.flatten(1).double()).square().mean(-1))
    table = pq.denoising_table(errors, pq.TIMES, step0)
    assert len(table["rows"]) == 12
    assert table["rows"][0]["t"] == pytest.approx(0.005) and table["rows"][-1]["t"] == pytest.approx(0.7)
    assert all(r["ratio"] == pytest.approx(1.0, abs=1e-4) for r in table["rows"])
    assert table["summary"]["points_t_le_0.3"] == 10

    # NLL: the Gaussian's exact value is the density of its marginal at t_min at the signal itself,
    # which the ODE (exact trace here: no probe noise) reproduces up to the solver's error and the
    # terminal N(0, I) in place of the exact marginal at t = 1 (a mean shift alpha(1) mu)
    ode = {"solver": "heun", "steps": 32, "rtol": 1e-5, "atol": 1e-5, "n_probes": 1, "hutchinson": "rademacher",
           "t_min": 0.01, "exact_trace": True}
    bpd = pq.heldout_nll(step0, gaussian, x, ode=ode, seed=0, batch=10)
    torch.testing.assert_close(bpd["gaussian_exact"], _mvn_bits_per_dim(gaussian, x, 0.01))
    assert float((bpd["gaussian_ode"] - bpd["gaussian_exact"]).abs().max()) < 0.03
    assert abs(float((bpd["gaussian_ode"] - bpd["gaussian_exact"]).mean())) < 0.005
    torch.testing.assert_close(bpd["prior_ode"], bpd["gaussian_ode"], rtol=0, atol=1e-3)  # float32 against float64
    nll = pq.nll_table(bpd)
    assert nll["gaussian_exact"]["low"] <= nll["gaussian_exact"]["mean"] <= nll["gaussian_exact"]["high"]
    assert nll["prior_ode_minus_gaussian_exact"]["mean"] == pytest.approx(float((bpd["prior_ode"] - bpd["gaussian_exact"]).mean()))

    # the step-0 prior is an untrained wiener prior: DPS draws the same samples with either
    from manifold_ps.baselines import DPS
    from manifold_ps.geometry import ImageGrid
    from manifold_ps.operators import Inpainting
    from manifold_ps.priors import build_prior

    untrained = build_prior(ImageGrid(2, 2), preset="tiny", network="mlp", parameterization="wiener", gaussian=gaussian)
    op = Inpainting(torch.tensor([True, False, True, True]), sigma=0.1)
    y = op(x[:3], generator=torch.Generator().manual_seed(1))
    draws = [DPS(p, steps=20, zeta=0.5).sample(y, op, 2, generator=torch.Generator().manual_seed(2)) for p in (untrained, step0)]
    torch.testing.assert_close(draws[0], draws[1])


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_every_ablation_row_sets_every_lever_and_gives_a_valid_config(profile: str) -> None:
    import importlib.util

    from manifold_ps.config import apply_overrides, get_profile

    spec = importlib.util.spec_from_file_location("flow_ablation_rows", ROOT / "benchmarks" / "flow_ablation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    levers = set(module._PAPER)
    for name, row in module.ROWS.items():
        # a row fixes every lever, so a change of the profile's flow defaults changes no row ...
        assert levers <= row.overrides.keys(), (name, levers - row.overrides.keys())
        config = apply_overrides(get_profile(profile), row.overrides)  # ... and is a valid configuration
        for key, value in row.overrides.items():
            section, field = key.split(".")
            assert getattr(getattr(config, section), field) == value, (name, key)
        assert row.description and name in module.__doc__, name


@pytest.mark.data
def test_amortization_names_a_task_other_than_the_first_and_refuses_an_unknown_one(tmp_path: Path,
                                                                                    data_dir: Path) -> None:
    am = _script("amortization")
    assert am.report_stem("bunny_mnist", "cpu") == "amortization-bunny_mnist-cpu"
    assert am.report_stem("image_restoration", "cpu", "super-resolution") == \
        "amortization-image_restoration-super_resolution-cpu"
    with pytest.raises(ValueError, match=r"no task 'sr'.*'super-resolution'"):
        am.main(["--workload", "image-restoration", "--task", "sr", "--profile", "smoke",
                 "--base-out", str(tmp_path / "bench"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "bench").exists() and not (tmp_path / "out").exists()


@pytest.mark.data
def test_flow_ablation_names_a_task_other_than_the_first_and_refuses_an_unknown_one(
        tmp_path: Path, data_dir: Path) -> None:
    from manifold_ps.config import get_profile

    module = _script("flow_ablation")
    assert module.report_stem("bunny_mnist", "cpu") == "flow_ablation-bunny_mnist-cpu"
    assert module.report_stem("image_restoration", "cpu", "long", task="super-resolution") == \
        "flow_ablation-image_restoration-super_resolution-cpu-long"
    # the task is checked before the prior is trained: nothing is written for a misspelt task
    with pytest.raises(ValueError, match=r"no task 'superresolution'.*'super-resolution'"):
        module.setting("image-restoration", get_profile("smoke"), tmp_path / "bench", task="superresolution")
    assert not (tmp_path / "bench").exists()


def _workload_profiles() -> list[tuple[str, str]]:
    from manifold_ps.benchmarking.workloads import PROFILE_DEFAULTS

    return [(w, p) for w, by_profile in PROFILE_DEFAULTS.items() for p in by_profile]


@pytest.mark.parametrize(("workload", "profile"), _workload_profiles())
def test_a_workloads_profile_settings_are_valid_and_change_the_profile(workload: str, profile: str) -> None:
    from manifold_ps.benchmarking.workloads import profile_defaults
    from manifold_ps.config import apply_overrides, get_profile

    own = profile_defaults(workload, profile)
    config = apply_overrides(get_profile(profile), own)
    for key, value in own.items():
        section, field = key.split(".")
        assert getattr(getattr(config, section), field) == value, key
        assert getattr(getattr(get_profile(profile), section), field) != value, f"{key} is the profile's own value"
    own.clear()  # a copy: the registry is untouched
    assert profile_defaults(workload, profile)
    assert profile_defaults(workload, "no-such-profile") == {}
    with pytest.raises(ValueError, match="unknown workload 'bunny'"):
        profile_defaults("bunny", profile)


@pytest.mark.data
@pytest.mark.parametrize(("workload", "profile"), _workload_profiles())
def test_every_task_of_a_workload_takes_its_profile_settings(workload: str, profile: str, data_dir: Path) -> None:
    """Each task's own flow settings (the blind task's paper sampler) combine with the workload's
    profile settings into a valid configuration, as the benchmark combines them."""
    from dataclasses import replace

    from manifold_ps.benchmarking.workloads import get_workload, profile_defaults
    from manifold_ps.config import apply_overrides, get_profile

    config = apply_overrides(get_profile(profile), profile_defaults(workload, profile))
    for task in get_workload(workload)(config).tasks:
        flow = replace(config.flow, **task.flow_overrides)  # raises on a contradiction
        for key, value in task.flow_overrides.items():
            assert getattr(flow, key) == value, (task.name, key)


@pytest.mark.data
@pytest.mark.slow
def test_flow_ablation_scores_every_row_as_the_benchmark_scores_its_flow(
        tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from manifold_ps.benchmarking.evaluate import score_estimate
    from manifold_ps.benchmarking.pipeline import (new_flow, score_arguments, score_posterior, stage_gaussian,
                                                   stage_measurements, stage_prior)
    from manifold_ps.benchmarking.workloads import bunny_mnist
    from manifold_ps.config import apply_overrides, get_profile
    from manifold_ps.flows import GaussianBase, truncate_gaussian

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    base, out = tmp_path / "bench", tmp_path / "ablation"
    argv = ("--profile", "smoke", "--minutes", "0.05", "--rows", "paper", "gaussian-step0", "gaussian",
            "--dps-measurements", "2", "--base-out", str(base), "--out", str(out))
    report, module = _ablation(*argv)
    rows = {r["row"]: r for r in report["rows"]}
    assert list(rows) == ["paper", "gaussian-step0", "gaussian"]
    assert rows["gaussian-step0"]["train_steps"] == 0 and rows["gaussian-step0"]["train_minutes"] == 0
    assert rows["paper"]["train_steps"] >= 1 and rows["gaussian"]["train_steps"] >= 1
    for name, r in rows.items():
        one, mean = r["methods"]["aps_n1"], r["methods"]["aps_n128"]
        for entry in (one, mean):
            assert entry["psnr_low"] <= entry["psnr"] <= entry["psnr_high"], name
        assert {f"coverage{p}{m}" for p in (50, 80, 90, 95) for m in ("", "_missing")} <= mean.keys(), name
        assert mean["std_missing"] > 0 and mean["std_observed"] > 0, name
    refs = report["references"]["methods"]
    assert {"gaussian_draw", "gaussian_mean", "harmonic"} <= refs.keys()
    assert "coverage90_exact_missing" in refs["gaussian_mean"]
    # DPS ran here on the first two measurements: two masks of one digit, so no interval over digits
    assert report["references"]["dps_measurements"] == 2 and "psnr_low" not in refs["dps"]

    stem = "flow_ablation-bunny_mnist-smoke"
    md = (out / f"{stem}.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| row |"))
    for column in ("PSNR one draw (dB)", "PSNR mean of 8 (dB)", "std missing / observed", "ratio",
                   "cover 90% all / missing", "train min", "steps", "seeds"):
        assert column in header, column
    for label in ("| gaussian-step0 |", "| ref: Gaussian posterior |", "| ref: harmonic |", "| ref: DPS |"):
        assert label in md, label
    assert (out / "figures" / f"{stem}-calibration.png").is_file() and "figures/" + stem + "-calibration.png" in md
    # a trained row is paired with the untrained sampler it starts from: the mean of its per-measurement
    # differences is the difference of the two rows' PSNRs, inside its interval; rows without a start get none
    cells = {line.split(" | ")[0][2:]: line.split(" | ") for line in md.splitlines() if line.startswith("| ")}
    assert "Δ vs untrained start" in header and cells["paper"][8] == "–" and cells["gaussian-step0"][8] == "–"
    for key, half in (("aps_n1", 0), ("aps_n128", 1)):
        trained, start = rows["gaussian"]["methods"][key], rows["gaussian-step0"]["methods"][key]
        assert len(trained["per_measurement"]) == 4 and sum(trained["per_measurement"]) / 4 == pytest.approx(
            trained["psnr"], rel=1e-12)
        mean, interval = cells["gaussian"][8].split(" / ")[half].split(" ", 1)
        low, high = (float(v) for v in interval.strip("[]").split(", "))
        assert float(mean) == pytest.approx(trained["psnr"] - start["psnr"], abs=0.006) and low <= float(mean) <= high

    # the untrained row is the sampler that stage_flow starts from, scored by score_posterior with
    # the benchmark's keywords and generator: rebuilt here, it gives the row's numbers
    config = apply_overrides(get_profile("smoke"), module.ROWS["gaussian-step0"].overrides)
    workload = bunny_mnist(config)
    cpu = torch.device("cpu")
    prior = stage_prior(workload, config, base, device=cpu, progress=False).eval()
    task = workload.tasks[0]
    train, evals = stage_measurements(workload, task, config, base)
    held = evals["heldout"]
    sampler = new_flow(workload, task, config, prior, train, base, device=cpu).eval()
    scores, _ = score_posterior(sampler, held.x, held.y, held.operator, n_posterior=config.eval.n_posterior,
                                batch_size=config.eval.batch_size, chunk=config.eval.chunk,
                                generator=torch.Generator().manual_seed(config.seed + config.eval.seed_offset),
                                **score_arguments(workload, held))
    for key, fields in (("aps_n1", ("psnr",)), ("aps_n128", ("psnr", "std_missing", "std_observed", "coverage90"))):
        found = {"psnr": scores[key].psnr, **scores[key].extra}
        for field in fields:
            assert found[field] == pytest.approx(rows["gaussian-step0"]["methods"][key][field], rel=1e-9), (key, field)
    # ... and that sampler draws the Gaussian posterior over u = x_{t_min}, decoded by the prior: the
    # same number of draws made directly from those two pieces give the row's mean and spread
    t_min = config.flow.t_min
    gaussian = GaussianBase(truncate_gaussian(stage_gaussian(workload, config, base, device=cpu),
                                              config.flow.base_rank), t_min)
    n = config.eval.n_posterior
    state = gaussian.prepare(held.y.double(), held.operator)
    v = torch.randn(held.x.shape[0], n, *held.x.shape[1:], generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    u, _ = gaussian.call_and_ladj(v, state)
    flat = u.reshape(-1, *held.x.shape[1:]).to(held.x.dtype)
    with torch.no_grad():
        draws = prior.denoise(flat, flat.new_full((flat.shape[0],), t_min)).reshape(u.shape)
    direct = score_estimate(draws.mean(1), held.x, seconds_per_sample=0.0, nfe=2, samples=draws, std=draws.std(1),
                            **score_arguments(workload, held))
    row = rows["gaussian-step0"]["methods"]["aps_n128"]
    assert abs(direct.psnr - row["psnr"]) < 0.5
    assert direct.extra["std_missing"] == pytest.approx(row["std_missing"], rel=0.1)
    assert direct.extra["std_observed"] == pytest.approx(row["std_observed"], rel=0.1)
    # unlike the paper's sampler, its uncertainty is larger where the mask hides the signal
    ratio = row["std_missing"] / row["std_observed"]
    assert ratio > 1.3 and ratio > rows["paper"]["methods"]["aps_n128"]["std_missing"] / \
        rows["paper"]["methods"]["aps_n128"]["std_observed"] + 0.2

    # a rerun loads the flows and re-scores them to the same numbers; --table-only rewrites the
    # report without scoring; --commit copies it with the layout the docs render
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/posterior.pt")}
    assert len(stamps) == 3
    capsys.readouterr()
    again, _ = _ablation(*argv)
    log = capsys.readouterr().out
    assert "distilling" not in log and "references on" not in log
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    def scores(doc: dict) -> list:
        return [{m: {k: v for k, v in e.items() if "seconds" not in k} for m, e in r["methods"].items()}
                for r in doc["rows"]]

    assert scores(again) == scores(report)
    results = tmp_path / "results"
    _ablation("--profile", "smoke", "--out", str(out), "--table-only", "--commit", str(results))
    assert (out / f"{stem}.md").read_text() == md
    assert sorted(str(p.relative_to(results)) for p in results.rglob("*") if p.is_file()) == [
        f"figures/{stem}-calibration.png", f"{stem}.json", f"{stem}.md"]
    # --tag: a report of its own beside the untagged one, its title naming the tag
    (out / f"{stem}-seeds.json").write_text((out / f"{stem}.json").read_text())
    _ablation("--profile", "smoke", "--out", str(out), "--table-only", "--tag", "seeds")
    tagged = (out / f"{stem}-seeds.md").read_text()
    assert tagged.splitlines()[0].endswith("; seeds)") and tagged.splitlines()[1:] == md.replace(stem, f"{stem}-seeds").splitlines()[1:]
    assert (out / f"{stem}.md").read_text() == md
    # --scored-on validation: the same flows scored on the validation measurements, a report of its own
    # whose untrained row is the sampler above scored on those measurements
    from manifold_ps.benchmarking.pipeline import validation_measurements

    val_doc, _ = _ablation("--profile", "smoke", "--minutes", "0.05", "--rows", "gaussian-step0", "--dps-measurements",
                           "2", "--base-out", str(base), "--out", str(out), "--scored-on", "validation")
    val = validation_measurements(train, config)
    assert val_doc["references"]["key"]["measurements"] == val.x.shape[0] == config.eval.tune_measurements
    assert val_doc["references"]["key"]["scored_on"] == "validation"
    val_md = (out / f"{stem}-validation.md").read_text()
    assert f"{val.x.shape[0]} validation measurements" in val_md.splitlines()[0]
    assert (out / f"{stem}.md").read_text() == md
    found, _ = score_posterior(sampler, val.x, val.y, val.operator, n_posterior=config.eval.n_posterior,
                               batch_size=config.eval.batch_size, chunk=config.eval.chunk,
                               generator=torch.Generator().manual_seed(config.seed + config.eval.seed_offset),
                               **score_arguments(workload, val))
    assert found["aps_n1"].psnr == pytest.approx(val_doc["rows"][0]["methods"]["aps_n1"]["psnr"], rel=1e-9)
    assert module.report_stem("bunny_mnist", "cpu", "seeds", scored_on="validation") == \
        "flow_ablation-bunny_mnist-cpu-validation-seeds"
    with pytest.raises(ValueError, match="scored_on must be one of"):
        module.setting("bunny-mnist", config, base, scored_on="test")

    # flow_bound.py: the held-out loss of the untrained and the trained row, terms adding up
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    bound = _script("flow_bound")
    common = ("--profile", "smoke", "--base-out", str(base), "--ablation", str(out), "--measurements", "2",
              "--draws", "2", "--n-time", "2", "--repeats", "1")
    bound.main(["--rows", "gaussian-step0", "gaussian", *common])
    doc = json.loads((out / "flow_bound-bunny_mnist-smoke.json").read_text())
    assert [r["row"] for r in doc["rows"]] == ["gaussian-step0", "gaussian"]
    for r in doc["rows"]:
        assert r["likelihood"] == "denoised"
        assert r["loss"] == pytest.approx(r["fidelity"] + r["prior"] + r["entropy"], rel=1e-5, abs=1e-6)
    assert doc["rows"][0]["loss"] != doc["rows"][1]["loss"]  # the trained flow is another sampler
    first, second = doc["rows"]
    assert "vs" not in first and second["vs"] == "gaussian-step0" and len(second["per_measurement"]) == 2
    assert second["loss"] == pytest.approx(sum(second["per_measurement"]) / 2, rel=1e-6)
    assert second["difference"] == pytest.approx(second["loss"] - first["loss"], rel=1e-6, abs=1e-9)
    assert second["difference_low"] <= second["difference"] <= second["difference_high"]
    assert "| gaussian-step0 | denoised |" in (out / "flow_bound-bunny_mnist-smoke.md").read_text()
    with pytest.raises(FileNotFoundError, match="flow_ablation.py --rows gaussian-score"):
        bound.main(["--rows", "gaussian-score", *common])


def _script(name: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.data
@pytest.mark.slow
def test_prior_networks_compares_training_choices_and_scores_ema_and_raw_weights(
        tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pn = _script("prior_networks")
    out = tmp_path / "out"
    net = "graph:hidden=8,depth=1"
    specs = [net, f"{net}@time=edm", f"{net}@weighting=elbo", f"{net}@time=uniform,weighting=edm", net]
    argv = ["--profile", "smoke", "--minutes", "0.002", "--heldout", "8", "--table-name", "prior_training",
            "--base-out", str(tmp_path / "bench"), "--out", str(out), "--networks", *specs,
            "--batch", "4", "4", "4", "4", "8"]
    doc = pn.main(argv)
    rows = doc["rows"]
    assert [(r["network"], r["time_sampling"], r["weighting"], r["batch"]) for r in rows] == [
        (net, "log_snr", "edm", 4), (net, "edm", "edm", 4), (net, "log_snr", "elbo", 4), (net, "uniform", "edm", 4),
        (net, "log_snr", "edm", 8)]
    for r in rows:
        assert r["steps"] >= 1
        assert [g["t"] for g in r["grid"]] == [g["t"] for g in r["grid_raw"]] == pytest.approx(pn.GRID.tolist())
        for ema, raw in zip(r["grid"], r["grid_raw"]):
            assert math.isfinite(ema["ratio"]) and math.isfinite(raw["ratio"])
            assert ema["mse_wiener"] == raw["mse_wiener"]  # the same noise for both weights
            assert raw["ratio"] == pytest.approx(raw["mse"] / raw["mse_wiener"])
        small = [g["ratio"] for g in r["grid_raw"] if g["t"] <= 0.3]
        assert r["mean_ratio_t_le_0.3_raw"] == pytest.approx(sum(small) / len(small))
    files = sorted(p.name for p in out.glob("*.json") if p.name != "prior_training.json")
    assert files == sorted(["graph_hidden8_depth1_batch4.json", "graph_hidden8_depth1@time-edm_batch4.json",
                            "graph_hidden8_depth1@weighting-elbo_batch4.json",
                            "graph_hidden8_depth1@time-uniform_batch4.json", "graph_hidden8_depth1_batch8.json"])
    md = (out / "prior_training.md").read_text()
    assert md.startswith("# Prior training choices at equal CPU minutes, bunny-mnist")
    assert "| times | weighting |" in md and "mean ratio t<=0.3 (raw weights)" in md
    assert "| graph:hidden=8,depth=1 | log_snr | elbo | 4 |" in md
    # a rerun resumes every row from its file; another budget is refused instead of mixed in
    assert pn.main(argv) == doc
    with pytest.raises(ValueError, match="trained for 0.002 min, this run asks 0.5 min"):
        pn.main([*argv[:2], "--minutes", "0.5", *argv[4:]])
    # a step budget: exactly that many steps per row, whatever the CPU's load
    stepped = pn.main(["--profile", "smoke", "--steps", "3", "2", "--heldout", "8", "--base-out", str(tmp_path / "bench"),
                       "--out", str(tmp_path / "steps"), "--networks", net, f"{net}@time=edm", "--batch", "4", "8"])
    assert [(r["steps"], r["step_budget"], r["minutes"]) for r in stepped["rows"]] == [(3, 3, None), (2, 2, None)]
    assert "| 3 steps |" in (tmp_path / "steps" / "prior_networks.md").read_text()
    for bad, message in ((f"{net}@time=edm,weighting=elbo", "needs time=log_snr"),
                         (f"{net}@times=edm", "training options are time=... and weighting=...")):
        with pytest.raises(SystemExit):  # refused before any training
            pn.main(["--profile", "smoke", "--out", str(tmp_path / "bad"), "--networks", bad, "--batch", "4"])
        assert message in capsys.readouterr().err


@pytest.mark.data
@pytest.mark.slow
def test_amortization_compares_at_equal_compute_from_the_same_start(tmp_path: Path, data_dir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    am = _script("amortization")
    base, out, results = tmp_path / "bench", tmp_path / "out", tmp_path / "results"
    argv = ["--profile", "smoke", "--measurements", "4", "--fractions", "0.5", "1", "--n-z", "2",
            "--base-out", str(base), "--out", str(out)]
    doc = am.main(argv)
    labels = [r["label"] for r in doc["rows"]]
    assert labels[:2] == ["amortized", "amortized, untrained"] and len(labels) == 4
    # the per-measurement flows start from exactly the untrained amortized sampler's draws
    assert doc["start_difference"] == 0.0
    singles = [r for r in doc["rows"] if "fraction" in r]
    assert [r["fraction"] for r in singles] == [0.5, 1.0]
    assert 1 <= singles[0]["steps"] <= singles[1]["steps"]
    # at equal total compute: each of the K fits had the amortized training time over K
    budget = doc["amortized_seconds"] / doc["measurements"]
    assert doc["budget_seconds_per_measurement"] == pytest.approx(budget)
    assert singles[1]["seconds_per_measurement"] >= budget
    for r in doc["rows"]:
        mean = r["methods"]["mean"]
        assert {"coverage90_missing", "std_missing", "std_observed"} <= mean.keys(), r["label"]
    target, start = (doc["rows"][i]["methods"]["one"]["psnr"] for i in (0, 1))
    reached = [r for r in singles if r["methods"]["one"]["psnr"] >= target]
    assert doc["break_even"]["bound"] == ("none" if start >= target else "at most" if reached else "below")
    md = (out / "amortization-bunny_mnist-smoke.md").read_text()
    assert "**Break-even:**" in md and "| amortized |" in md
    am.main([*argv, "--table-only", "--commit", str(results)])
    assert sorted(str(p.relative_to(results)) for p in results.rglob("*") if p.is_file()) == [
        "amortization-bunny_mnist-smoke.json", "amortization-bunny_mnist-smoke.md",
        "figures/amortization-bunny_mnist-smoke.png"]


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("parameterization", ["wiener", "mixture", "x0"])
def test_prior_quality_report_at_smoke_size(parameterization: str, tmp_path: Path, data_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from manifold_ps.benchmarking.workloads import bunny_mnist
    from manifold_ps.config import apply_overrides, get_profile
    from manifold_ps.priors import DiffusionPrior, GaussianPrior

    pq = _prior_quality()
    out, committed = tmp_path / "run", tmp_path / "results"
    argv = ["--profile", "smoke", "--set", f"prior.parameterization={parameterization}", "--out", str(out),
            "--no-progress", "--nll-signals", "8", "--nll-steps", "8", "--samples", "2", "--sample-steps", "10",
            "--n-heldout", "24", "--commit", str(committed)]
    report = pq.main(argv)
    stem = "prior_quality-bunny_mnist-smoke"
    assert json.loads((out / "prior_quality.json").read_text()) == json.loads(json.dumps(report, default=float))
    assert report["config"]["prior"]["parameterization"] == parameterization
    assert report["prior"]["parameterization"] == parameterization and report["prior"]["trained_steps"] == 30
    assert report["config"]["eval"]["dps_nfe"] == 10
    assert report["gaussian"]["is_step0"] == (parameterization == "wiener")

    curves = report["denoising"]["test-digits"]
    assert curves["signals"] == 24 and len(curves["rows"]) == 12
    for r in curves["rows"]:
        for key in ("prior_mse", "wiener_mse", "ratio", "noisy_mse"):
            assert r[f"{key}_low"] <= r[key] <= r[f"{key}_high"], (key, r["t"])
        # the noisy input / alpha errs by (sigma / alpha)^2 per entry: the noise is standard normal
        assert r["noisy_mse"] / r["sigma_over_alpha"] ** 2 == pytest.approx(1.0, abs=0.03)
        assert r["ratio"] == pytest.approx(r["prior_mse"] / r["wiener_mse"], rel=1e-9)

    # the Gaussian's NLL is its exact marginal density at t_min, here computed independently
    saved = DiffusionPrior.load(out / "prior" / "prior.pt")
    gaussian = saved.gaussian if parameterization != "x0" else GaussianPrior.load(out / "gaussian" / "gaussian.pt")
    config = apply_overrides(get_profile("smoke"), {"prior.parameterization": parameterization})
    x = bunny_mnist(config).flow_train[:8]
    nll = report["nll"]["test-digits"]
    assert nll["signals"] == 8 and report["nll_settings"]["t_min"] == 1e-3 and report["nll_settings"]["steps"] == 8
    expected = _mvn_bits_per_dim(gaussian, x, 1e-3)
    assert nll["bits_per_dim"]["gaussian_exact"]["mean"] == pytest.approx(float(expected.mean()), rel=1e-6)
    assert nll["bits_per_dim"]["gaussian_exact"]["se"] == pytest.approx(float(expected.std() / 8**0.5), rel=1e-6)
    assert math.isfinite(nll["bits_per_dim"]["prior_ode"]["mean"])
    if parameterization == "mixture":  # the step-0 mixture: its exact density, a dense logsumexp of normals here
        import torch

        mixture = saved.mixture
        assert mixture is not None and report["mixture"]["components"] == mixture.components == 12
        assert report["mixture"]["covariance"] == "per-component"
        t64 = torch.tensor(1e-3, dtype=torch.float64)
        a, s2 = mixture.sde.alpha(t64), mixture.sde.std(t64) ** 2
        eye = torch.eye(mixture.num_dims, dtype=torch.float64)
        logs = torch.stack([torch.distributions.MultivariateNormal(
            a * mixture.means[k].flatten(), a**2 * mixture.covariances[k].covariance() + s2 * eye).log_prob(
                x.flatten(1).double()) for k in range(mixture.components)], 1) + mixture.log_weights
        bits = -torch.logsumexp(logs, 1) / (mixture.num_dims * math.log(2.0))
        assert nll["bits_per_dim"]["step0_exact"]["mean"] == pytest.approx(float(bits.mean()), rel=1e-6)
        for r in curves["rows"]:
            assert r["step0_ratio_low"] <= r["step0_ratio"] <= r["step0_ratio_high"]
            assert r["step0_ratio"] == pytest.approx(r["step0_mse"] / r["wiener_mse"], rel=1e-9)
    else:
        assert "step0_exact" not in nll["bits_per_dim"] and "step0_ratio" not in curves["rows"][0]

    dps = report["dps"]
    assert dps["task"] == "inpainting" and dps["dps_nfe"] == 10
    assert "disjoint from every evaluation set" in dps["validation"]
    methods = dps["sets"]["heldout"]["methods"]
    extra = {"dps_gaussian"} if parameterization == "mixture" else set()
    assert set(methods) == {"dps", "dps_step0", "gaussian_draw", "gaussian_mean"} | extra
    for name, r in methods.items():
        assert r["psnr_low"] <= r["psnr"] <= r["psnr_high"] and r["psnr"] >= r["psnr_raw"] - 1e-9, name
        assert r["nfe"] == (10 if name.startswith("dps") else 0), name
    assert methods["dps"]["diff_dps_step0_low"] <= methods["dps"]["diff_dps_step0"] <= methods["dps"]["diff_dps_step0_high"]
    for name in ("dps", "dps_step0", *extra):
        grid = dps["tuning"][name]["grid"]
        best = max(grid, key=lambda r: r["psnr"])
        assert (dps["tuning"][name]["zeta"], dps["tuning"][name]["clip_denoised"]) == (best["zeta"], best["clip_denoised"])
    # each prior has its own tuning, stored under the hash of its state
    assert len(list((out / "prior_quality" / "tuning").glob("*/inpainting/tuning.json"))) == 2 + len(extra)

    # the Markdown report, its figures and the committed copies
    md = (out / "prior_quality.md").read_text()
    for fig in report["figures"].values():
        assert f"]({fig})" in md and (out / fig).is_file() and (committed / fig).is_file()
    assert (committed / f"{stem}.md").read_text() == md
    assert json.loads((committed / f"{stem}.json").read_text())["workload"] == "bunny-mnist"

    if parameterization == "wiener":  # a rerun loads the prior and both tunings
        capsys.readouterr()
        pq.main(argv)
        log = capsys.readouterr().out
        assert "prior: loading" in log and log.count("baseline settings from") == 2 and "  tuning " not in log


def _amortization_doc(amortized: float, untrained: float, singles: list[tuple[float, float]]) -> dict[str, Any]:
    """A report with the amortized flow (one-draw PSNR), its start, and per-measurement rows
    ``(seconds, one-draw PSNR)``; every mean is the one draw + 2 dB."""
    def row(label: str, one: float, **extra: Any) -> dict[str, Any]:
        return {"label": label, "methods": {"one": {"psnr": one}, "mean": {"psnr": one + 2.0}}, **extra}

    rows = [row("amortized", amortized), row("amortized, untrained", untrained)]
    rows += [row(f"per measurement, {t} s", one, fraction=t / 40.0, seconds_per_measurement=t) for t, one in singles]
    return {"rows": rows, "amortized_seconds": 640.0}


@pytest.mark.parametrize(("amortized", "singles", "bound", "measurements", "words"), [
    # the amortized flow gained 1 dB; fits reach it at 20 s each: 640 / 20 = 32 measurements
    (29.0, [(10.0, 28.5), (20.0, 29.1), (40.0, 29.5)], "at most", 32.0, "within 20.0 s"),
    # no fit reaches it: amortizing is cheaper from fewer than 640 / 40 = 16 measurements on
    (29.0, [(10.0, 28.2), (40.0, 28.8)], "below", 16.0, "up to 40.0 s"),
    # the amortized flow stayed at its start, the fits gained: amortizing buys time, not quality
    (28.0, [(10.0, 28.3), (40.0, 29.2)], "none", None, "+1.20 and +1.20 dB against the amortized flow"),
    # neither training gained
    (28.0, [(10.0, 27.5), (40.0, 27.9)], "none", None, "nor does a flow fitted to each measurement"),
])
def test_amortization_break_even_names_what_each_training_bought(amortized: float, singles: list[tuple[float, float]],
                                                                bound: str, measurements: float | None,
                                                                words: str) -> None:
    am = _script("amortization")
    result = am.break_even(_amortization_doc(amortized, 28.0, singles))
    assert result["bound"] == bound and words in result["text"]
    assert result["measurements"] == (None if measurements is None else pytest.approx(measurements))


@pytest.mark.parametrize("budget", [1.0, 4.0])
def test_amortization_report_states_each_fit_against_the_equal_compute_time(budget: float, tmp_path: Path) -> None:
    """With ``--budget`` B the fits get B times the equal-compute time: the fraction f of it is f * B of
    the equal-compute time, and the report says so (the plot's line stays at the equal-compute time)."""
    am = _script("amortization")
    doc = _amortization_doc(29.0, 28.0, [(10.0 * budget, 28.5), (40.0 * budget, 29.5)])
    for r in doc["rows"]:
        r["methods"]["mean"]["coverage90"] = 0.9
        r.setdefault("seconds_per_measurement", 0.0)
        r.setdefault("what", r["label"])
        if "fraction" in r:
            r["fraction"], r["steps"] = r["seconds_per_measurement"] / (40.0 * budget), 7.0
    doc.update(workload="w", task="t", profile="p", measurements=16, n_posterior=8, amortized_steps=9, n_z=2,
               lr=1e-3, budget=budget, budget_seconds_per_measurement=40.0 * budget,
               start_check={"one": {"psnr": 28.0}}, start_difference=0.0)
    doc["break_even"] = am.break_even(doc)
    am.write_report(doc, tmp_path, "r")  # the equal-compute time: 640 s / 16 = 40 s
    md = (tmp_path / "r.md").read_text()
    # the fits at 10 B and 40 B seconds: B / 4 and B times the equal-compute time
    assert f"| {budget / 4:g} x the equal-compute budget: 7 steps" in md and f"| {budget:g} x the equal-compute" in md
    assert ("4 x the equal-compute time (40.0 s" in md) == (budget == 4.0)
    assert json.loads((tmp_path / "r.json").read_text())["rows"][3]["what"].startswith(f"{budget:g} x the equal")


@pytest.mark.parametrize("covariance", ["shared", "per-component"])
def test_gaussian_mixture_report_pairs_each_mixture_with_the_benchmarks_gaussian(covariance: str, tmp_path: Path,
                                                                                monkeypatch) -> None:
    """On two well-separated clusters: K = 1 is the benchmark's Gaussian exactly (ratio 1, NLL
    difference 0 at every point; with per-component covariances too, the one cluster's covariance
    being the pooled one), K = 2 the true law, whose denoiser beats the Wiener denoiser."""
    import torch

    from manifold_ps.benchmarking.workloads import EvalSet, Task, Workload
    from manifold_ps.geometry import ImageGrid
    from manifold_ps.operators import Inpainting, random_mask

    gm = _script("gaussian_mixture")
    g = torch.Generator().manual_seed(0)
    centres = 3.0 * torch.randn(2, 1, 16, generator=g, dtype=torch.float64)

    def draw(n: int) -> torch.Tensor:
        return (centres[torch.arange(n) % 2] + 0.3 * torch.randn(n, 1, 16, generator=g, dtype=torch.float64)).float()

    task = Task("inpainting", lambda n, gen: Inpainting(random_mask(16, 0.4, n, generator=gen), 0.1), {})
    toy = Workload("era5-imputation", ImageGrid(4, 4), "image", draw(400), draw(8), "toy", [
        EvalSet("heldout", "fresh draws", draw(40))], [task], data_range=None)
    monkeypatch.setattr(gm, "WORKLOADS", {"era5-imputation": lambda config: toy})
    report = gm.main(["--profile", "smoke", "--components", "1", "2", "--n-heldout", "40", "--out", str(tmp_path / "run"),
                      "--covariance", covariance, "--tag", covariance, "--commit", str(tmp_path / "results")])
    assert report["covariance"] == covariance
    assert all(m["covariance"] == covariance for m in report["mixtures"].values())
    entry = report["sets"]["heldout"]
    assert entry["signals"] == 40 and len(entry["rows"]) == len(gm.TIMES)
    for row in entry["rows"]:
        assert row["ratio"]["1"] == pytest.approx(1.0, abs=1e-9)
    assert entry["nll"]["1"]["diff"] == pytest.approx(0.0, abs=1e-9)
    assert entry["summary"]["mean_ratio"]["2"] < 0.97 and entry["nll"]["2"]["diff_high"] < 0
    stem = tmp_path / "results" / f"gaussian_mixture-era5_imputation-smoke-{covariance}"
    md = stem.with_suffix(".md").read_text()
    assert "K=2 / Wiener" in md and json.loads(stem.with_suffix(".json").read_text())["components"] == [1, 2]
    assert ("shrunk toward the pooled one" in md) == (covariance == "per-component")
    ranks = report["mixtures"]["2"]["component_ranks"]
    assert len(ranks) == (2 if covariance == "per-component" else 1) and all(0 < r <= 16 for r in ranks)
    assert f"Directions kept per component covariance: K=1 {report['mixtures']['1']['component_ranks'][0]}" in md
