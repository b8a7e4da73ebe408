"""The results schema and the shared sampler-evaluation harness."""

from __future__ import annotations

import json
import math

import pytest
import torch

from manifold_ps.benchmarking import BenchmarkResults, MethodResult, validate_results, write_results
from manifold_ps.benchmarking.evaluate import run_sampler, score_estimate
from manifold_ps.operators import Inpainting, random_mask


def _doc(**method):
    entry = {"psnr": 20.0, "ssim": None, "mse": 0.01, "seconds_per_sample": 0.1, "nfe": 1}
    entry.update(method)
    return {"workload": "w", "profile": "smoke", "device": "cpu", "protocol": {}, "methods": {"m": entry},
            "config": {}, "versions": {}}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"psnr": float("nan")}, "finite"),
        ({"nfe": -1}, "nfe"),
        ({"nfe": 1.5}, "nfe"),
        ({"mse": "x"}, "finite"),
    ],
)
def test_validate_rejects_bad_entries(change, message):
    with pytest.raises(ValueError, match=message):
        validate_results(_doc(**change))


def test_validate_rejects_missing_keys_and_methods():
    doc = _doc()
    del doc["methods"]["m"]["seconds_per_sample"]
    with pytest.raises(ValueError, match="seconds_per_sample"):
        validate_results(doc)
    with pytest.raises(ValueError, match="dps"):
        validate_results(_doc(), required_methods=("m", "dps"))
    doc = _doc()
    del doc["versions"]
    with pytest.raises(ValueError, match="versions"):
        validate_results(doc)


def test_write_results_round_trip(tmp_path):
    res = BenchmarkResults("bunny", "smoke", "cpu", {"split": "test"},
                           {"a": MethodResult(21.5, None, 0.007, 0.002, 1, {"coverage90": 0.88})})
    doc = write_results([res, res], tmp_path, title="t")
    loaded = json.loads((tmp_path / "results.json").read_text())
    assert loaded == doc
    validate_results(loaded)
    assert loaded["methods"]["a"]["coverage90"] == 0.88
    assert len(loaded["evaluations"]) == 2
    md = (tmp_path / "results.md").read_text()
    assert "| a | 21.50 |" in md and "2.0 ms" in md
    # a result names the vector instruction set its numbers were computed with: training
    # repeats bit for bit only on the same one
    versions = loaded["versions"]
    assert versions["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert versions["torch"] == torch.__version__ and versions["cpu"].strip()


class _Oracle:
    """A sampler returning truth + known Gaussian noise: its numbers are known in advance."""

    def __init__(self, truth: torch.Tensor, noise: float) -> None:
        self.truth, self.noise, self.nfe = truth, noise, 7

    def sample(self, y, operator, n=1, *, generator=None):
        base = self.truth[self._rows(y)]
        eps = torch.randn(y.shape[0], n, *y.shape[1:], generator=generator, dtype=y.dtype)
        return base[:, None] + self.noise * eps

    def _rows(self, y):
        # rows of truth matching y's observed values (y = truth * mask here, sigma = 0)
        d = ((self.truth[None] * (y != 0)[:, None] - y[:, None]) ** 2).flatten(2).sum(-1)
        return d.argmin(1)


def test_run_sampler_statistics_and_scores(generator):
    truth = torch.rand(10, 1, 50, generator=generator, dtype=torch.float64) + 0.5
    op = Inpainting(random_mask(50, 0.3, 10, generator=generator), sigma=0.0)
    y = op.A(truth)
    sampler = _Oracle(truth, noise=0.1)
    out = run_sampler(sampler, y, op, n=400, batch_size=3, chunk=150, keep=8, generator=generator)
    assert out.mean.shape == truth.shape and out.kept.shape == (10, 8, 1, 50)
    assert out.nfe == 7 and out.seconds_per_sample > 0
    # mean of 400 draws: error std 0.1 / 20 = 0.005; the std estimate is 0.1 within a few %
    assert float((out.mean - truth).abs().max()) < 0.03
    assert abs(float(out.std.mean()) - 0.1) < 0.01
    res = score_estimate(out.first, truth, seconds_per_sample=1.0, nfe=out.nfe, samples=out.kept)
    # a single draw has MSE 0.01 -> PSNR 20 dB
    assert abs(res.psnr - 20.0) < 0.5
    assert math.isclose(res.mse, 0.01, rel_tol=0.15)
    assert res.ssim is None
    assert 0.0 <= res.extra["coverage90"] <= 1.0


def test_score_estimate_ssim_on_grids(generator):
    truth = torch.rand(2, 1, 64, generator=generator, dtype=torch.float64)
    res = score_estimate(truth, truth, seconds_per_sample=0.0, nfe=0, image_shape=(8, 8))
    assert res.ssim == pytest.approx(1.0) and res.mse == 0.0


def test_deadline_callback_discounts_observer_time():
    import time

    from manifold_ps.benchmarking.pipeline import _deadline_callback

    calls = []

    def observer(trainer, step, logs):
        calls.append(step)
        return 3600.0 if step == 1 else 0.0  # step 1 reports an hour of scoring

    cb = _deadline_callback(0.0005, observer)  # 30 ms of training time
    time.sleep(0.05)
    assert cb(None, 1, {}) is False  # the hour was given back
    plain = _deadline_callback(0.0005)
    time.sleep(0.05)
    assert plain(None, 1, {}) is True
    assert _deadline_callback(None) is None
    assert calls == [1]


# -- scoring as the benchmarks report it ---------------------------------------------------------------------
def test_score_estimate_projects_onto_a_guaranteed_range_and_keeps_the_raw_psnr() -> None:
    truth = torch.full((4, 1, 10), 0.5, dtype=torch.float64)
    est = truth.clone()
    est[..., :5] = 1.5  # out of range by 1.0, projected to 1.0 (error 0.5)
    est[..., 5:] = 0.4  # in range, error 0.1
    r = score_estimate(est, truth, seconds_per_sample=0.0, nfe=0, data_range=(0.0, 1.0))
    raw_mse = (5 * 1.0**2 + 5 * 0.1**2) / 10
    projected_mse = (5 * 0.5**2 + 5 * 0.1**2) / 10
    assert r.extra["psnr_raw"] == pytest.approx(-10 * math.log10(raw_mse))
    assert r.psnr == pytest.approx(-10 * math.log10(projected_mse))
    unbounded = score_estimate(est, truth, seconds_per_sample=0.0, nfe=0)
    assert unbounded.psnr == pytest.approx(unbounded.extra["psnr_raw"]) == pytest.approx(r.extra["psnr_raw"])


def test_score_estimate_interval_coverage_and_std_over_missing_vertices() -> None:
    g = torch.Generator().manual_seed(0)
    truth = torch.zeros(6, 1, 8, dtype=torch.float64)
    est = 0.1 * torch.randn(6, 1, 8, generator=g, dtype=torch.float64)
    observed = torch.zeros(6, 8, dtype=torch.bool)
    observed[:, :4] = True
    samples = torch.randn(6, 50, 1, 8, generator=g, dtype=torch.float64)
    samples[..., :4] = samples[..., :4] + 10.0  # intervals far from the truth on observed vertices
    std = torch.ones(6, 1, 8, dtype=torch.float64)
    std[..., 4:] = 3.0
    r = score_estimate(est, truth, seconds_per_sample=0.0, nfe=0, samples=samples, observed=observed, std=std)
    assert r.extra["psnr_low"] < r.psnr < r.extra["psnr_high"]
    assert r.extra["coverage90"] == pytest.approx(0.5 * r.extra["coverage90_missing"])
    assert r.extra["coverage90_missing"] > 0.7
    assert (r.extra["std_missing"], r.extra["std_observed"], r.extra["std_mean"]) == (3.0, 1.0, 2.0)
    # two masks of each of three fields: the interval resamples fields and is wider than the i.i.d. one
    groups = torch.arange(3).repeat_interleave(2)
    grouped = score_estimate(est[groups], truth, seconds_per_sample=0.0, nfe=0, groups=groups)
    iid = score_estimate(est[groups], truth, seconds_per_sample=0.0, nfe=0)
    assert grouped.psnr == iid.psnr
    assert grouped.extra["psnr_high"] - grouped.extra["psnr_low"] > iid.extra["psnr_high"] - iid.extra["psnr_low"]


def test_score_estimate_reports_the_calibration_curve_over_all_and_missing_vertices() -> None:
    # truth ~ N(0, 1) everywhere; draws ~ N(0, 1) on missing vertices (calibrated) and ~ N(0, 0.5^2)
    # on observed ones (over-confident: coverage 2 Phi(0.5 z) - 1); the exact normal intervals of
    # the true mean 0 and std 1 are calibrated everywhere.
    from scipy import stats

    g = torch.Generator().manual_seed(0)
    b, n, v = 20, 400, 200
    truth = torch.randn(b, 1, v, generator=g, dtype=torch.float64)
    observed = torch.zeros(b, v, dtype=torch.bool)
    observed[:, : v // 2] = True
    scale = torch.where(observed, 0.5, 1.0)[:, None, None, :].double()
    samples = scale * torch.randn(b, n, 1, v, generator=g, dtype=torch.float64)
    mean, std = torch.zeros_like(truth), torch.ones_like(truth)
    r = score_estimate(mean, truth, seconds_per_sample=0.0, nfe=0, samples=samples, observed=observed, std=std,
                       exact_normal=True)
    for level in (0.5, 0.8, 0.9, 0.95):
        z = stats.norm.ppf((1 + level) / 2)
        over_observed = 2 * stats.norm.cdf(0.5 * z) - 1
        key = f"coverage{100 * level:g}"
        # b * v / 2 = 2000 entries per half: binomial std < 0.012; the 400 draws' quantiles add a little
        assert r.extra[key + "_missing"] == pytest.approx(level, abs=0.04)
        assert r.extra[key] == pytest.approx((level + over_observed) / 2, abs=0.03)
        assert r.extra[key + "_exact"] == pytest.approx(level, abs=0.03)
        assert r.extra[key + "_exact_missing"] == pytest.approx(level, abs=0.04)
    with pytest.raises(ValueError, match="std"):
        score_estimate(mean, truth, seconds_per_sample=0.0, nfe=0, exact_normal=True)
    # no mask: no _missing keys; fewer levels: fewer keys
    plain = score_estimate(mean, truth, seconds_per_sample=0.0, nfe=0, samples=samples, levels=(0.5,))
    assert [k for k in plain.extra if k.startswith("coverage")] == ["coverage50"]


def test_calibration_curves_read_results_and_json_alike(tmp_path) -> None:
    from manifold_ps.benchmarking import calibration_curves, coverage_key

    assert [coverage_key(lv) for lv in (0.5, 0.8, 0.9, 0.95)] == ["coverage50", "coverage80", "coverage90",
                                                                    "coverage95"]
    extra = {"coverage90": 0.85, "coverage50": 0.45, "coverage90_missing": 0.8, "coverage50_missing": 0.4,
             "coverage90_exact": 0.9, "coverage50_exact": 0.5, "std_missing": 0.2, "std_observed": 0.1, "psnr_low": 1.0}
    methods = {"ours": MethodResult(20.0, None, 0.01, 0.1, 1, extra), "point": MethodResult(21.0, None, 0.01, 0.1, 0)}
    curves = calibration_curves(methods)
    assert curves == {"ours": ([0.5, 0.9], [0.45, 0.85]), "ours (exact normal)": ([0.5, 0.9], [0.5, 0.9])}
    assert calibration_curves(methods, missing=True) == {"ours": ([0.5, 0.9], [0.4, 0.8])}
    res = BenchmarkResults("w", "smoke", "cpu", {"n_posterior": 128}, methods)
    doc = write_results([res], tmp_path, title="t")
    assert calibration_curves(doc["methods"]) == curves  # the same curves from results.json
    md = (tmp_path / "results.md").read_text()
    assert "| method | 50% | 90% | posterior std |" in md
    assert "| ours | 0.45 / 0.40 | 0.85 / 0.80 | 0.2 / 0.1 |" in md
    assert "| ours (exact normal) | 0.50 / – | 0.90 / – | – |" in md
    assert "0.886 at 90%" in md  # what 128 draws of a calibrated sampler cover
    assert "| point |" in md and md.count("| point |") == 1  # no draws, no calibration row


def test_calibration_plot_of_a_task(tmp_path) -> None:
    from manifold_ps.benchmarking.pipeline import CALIBRATION_FIGURE, _calibration_plot

    extra = {"coverage50": 0.45, "coverage90": 0.85, "coverage50_missing": 0.4, "coverage90_missing": 0.8}
    sets = {name: {"ours": MethodResult(20.0, None, 0.01, 0.1, 1, dict(extra))} for name in ("paper", "heldout")}
    path = tmp_path / "figures" / "inpainting" / CALIBRATION_FIGURE
    _calibration_plot("w, inpainting", sets, path)
    assert path.is_file()
    nothing = tmp_path / "none.png"
    _calibration_plot("w", {"paper": {"point": MethodResult(20.0, None, 0.01, 0.1, 0)}}, nothing)
    assert not nothing.exists()  # no method with draws: no plot


def test_paired_differences_against_our_draw_and_mean() -> None:
    from manifold_ps.benchmarking.evaluate import add_paired_differences

    g = torch.Generator().manual_seed(1)
    truth = torch.rand(8, 1, 16, generator=g, dtype=torch.float64)
    noise = torch.randn(8, 1, 16, generator=g, dtype=torch.float64)
    results = {name: score_estimate(truth + scale * noise, truth, seconds_per_sample=0.0, nfe=0)
               for name, scale in (("aps_n1", 0.2), ("aps_n128", 0.1), ("other", 0.05))}
    add_paired_differences(results)
    # halving the error of the same noise adds exactly 20 log10(2) dB to every measurement
    assert results["other"].extra["diff_aps_n128"] == pytest.approx(20 * math.log10(2))
    assert results["other"].extra["diff_aps_n128_low"] == pytest.approx(results["other"].extra["diff_aps_n128_high"])
    assert results["aps_n128"].extra["diff_aps_n1"] == pytest.approx(20 * math.log10(2))
    assert "diff_aps_n1" not in results["aps_n1"].extra
    assert "per_measurement" not in results["other"].to_dict()


# -- validation tuning ---------------------------------------------------------------------------------------
def test_tuning_chooses_on_validation_and_refuses_other_settings(tmp_path) -> None:
    from dataclasses import replace

    from manifold_ps.benchmarking.baselines import build_baselines, stage_tuning
    from manifold_ps.benchmarking.workloads import Task, Workload
    from manifold_ps.config import get_profile
    from manifold_ps.geometry import ImageGrid
    from manifold_ps.priors import GaussianPrior

    g = torch.Generator().manual_seed(0)
    x = (0.5 + 0.2 * torch.randn(40, 1, 16, generator=g, dtype=torch.float64).cumsum(-1) / 4).clamp(0, 1)
    prior = GaussianPrior.fit(x, ridge=1e-3)
    task = Task("inpainting", lambda n, gen: Inpainting(random_mask(16, 0.4, n, generator=gen), 0.1), {},
                baselines=("dps", "harmonic"))
    workload = Workload("toy", ImageGrid(4, 4), "image", x, x, "toy signals", [], [task], data_range=(0.0, 1.0))
    base = get_profile("smoke")
    config = replace(base, eval=replace(base.eval, tune_zeta_budgets=(2.0, 250.0), tune_smoothings=(0.0, 0.1, 1.0)))
    op = task.make_operator(4, g)
    y = op(x[:4], generator=g)
    doc = stage_tuning(workload, task, config, prior, x[:4], y, op, tmp_path, validation="toy validation")
    grid = doc["dps"]["grid"]
    assert len(grid) == 4 and {(r["zeta"] * 10, r["clip_denoised"]) for r in grid} == {
        (2.0, False), (2.0, True), (250.0, False), (250.0, True)}
    best = max(grid, key=lambda r: r["psnr"])
    assert doc["dps"]["chosen"] == {"zeta": best["zeta"], "clip_denoised": best["clip_denoised"]}
    assert doc["harmonic_tikhonov"]["chosen"]["smoothing"] in (0.0, 0.1, 1.0)
    samplers = build_baselines(workload, task, config, prior, doc)
    assert samplers["dps"].zeta == best["zeta"] and samplers["dps"].clip_denoised == best["clip_denoised"]
    assert stage_tuning(workload, task, config, prior, x[:4], y, op, tmp_path, validation="toy validation") == doc
    other = replace(config, eval=replace(config.eval, tune_zeta_budgets=(250.0,)))
    with pytest.raises(ValueError, match=r"tuning.json was made with other settings \(zeta_budgets \[2.0, 250.0\] -> \[250.0\]\)"):
        stage_tuning(workload, task, other, prior, x[:4], y, op, tmp_path, validation="toy validation")
    # tuned for one prior, never reused for another (a retrained prior in the same folder)
    other_prior = GaussianPrior.fit(x[:20], ridge=1e-3)
    with pytest.raises(ValueError, match=r"tuning.json was made with other settings \(prior "):
        stage_tuning(workload, task, config, other_prior, x[:4], y, op, tmp_path, validation="toy validation")


@pytest.mark.data
def test_stored_measurements_of_other_signals_are_refused(tmp_path, data_dir) -> None:
    from manifold_ps.benchmarking.pipeline import stage_measurements
    from manifold_ps.benchmarking.workloads import bunny_mnist
    from manifold_ps.config import apply_overrides, get_profile

    config = get_profile("smoke")
    workload = bunny_mnist(config)
    train, evals = stage_measurements(workload, workload.tasks[0], config, tmp_path)
    again, evals_again = stage_measurements(workload, workload.tasks[0], config, tmp_path)  # loads the same
    assert torch.equal(again.y, train.y) and torch.equal(evals_again["heldout"].y, evals["heldout"].y)
    assert torch.equal(evals_again["heldout"].groups, evals["heldout"].groups)
    other = apply_overrides(config, {"eval.n_eval": 2})  # selects other held-out digits
    with pytest.raises(ValueError, match=r"measurements.pt holds measurements of other signals for the set 'heldout'"):
        stage_measurements(bunny_mnist(other), workload.tasks[0], other, tmp_path)



@pytest.mark.data
def test_wiener_prior_stage_fits_the_gaussian_first(tmp_path, data_dir) -> None:
    from manifold_ps.benchmarking.pipeline import stage_gaussian, stage_prior
    from manifold_ps.benchmarking.workloads import bunny_mnist
    from manifold_ps.config import apply_overrides, get_profile

    config = apply_overrides(get_profile("smoke"), {"prior.parameterization": "wiener", "prior.train_steps": 2})
    workload = bunny_mnist(config)
    prior = stage_prior(workload, config, tmp_path, device=torch.device("cpu"), progress=False)
    gaussian = stage_gaussian(workload, config, tmp_path, device=torch.device("cpu"))  # loads the same file
    assert prior.parameterization == "wiener"
    torch.testing.assert_close(prior.gaussian.eigvals, gaussian.eigvals)
    assert gaussian.fit_info["ridge"] in config.eval.gaussian_ridges
    with pytest.raises(ValueError, match="ridges"):
        stage_gaussian(workload, apply_overrides(config, {"eval.gaussian_ridges": (0.5,)}), tmp_path,
                       device=torch.device("cpu"))
