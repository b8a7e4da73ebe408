"""The benchmark scripts end to end at the smoke profile: schema, methods, resume."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

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
        assert ev["methods"]["aps_n1"]["nfe"] == 1 and ev["methods"]["gaussian_mean"]["nfe"] == 0
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
    assert sum(line.startswith("|---") for line in md.splitlines()) == 3 and f"]({stem}.png)" in md and (out / f"{stem}.png").is_file()

    # a rerun with one more step count computes only that point
    capsys.readouterr()
    again = _sweep(out, "--n", "3", "--nfe", "4", "10", "6", "--budgets", "4", "40")
    log = capsys.readouterr().out
    assert "resuming" in log and log.count("psnr") == 1 and "dps_vs_nfe 6 " in log
    assert again["dps_vs_nfe"]["4"] == report["dps_vs_nfe"]["4"]

    with pytest.raises(ValueError, match="held-out set .* has only"):
        _sweep(out, "--n", "100000", "--nfe", "--budgets")
    with pytest.raises(ValueError, match="tweedie.*do not apply"):
        _sweep(out, "--n", "3", "--nfe", "--budgets", "--methods", "tweedie")
