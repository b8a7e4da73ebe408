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
