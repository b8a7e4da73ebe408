"""
Comparing posterior samplers
============================

Every posterior sampler in the package -- the amortized flow and the baselines of
:mod:`manifold_ps.baselines` -- is called the same way,
``sampler.sample(y, operator, n, generator=...) -> (B, n, C, V)``, and reports ``nfe``, its
network evaluations per sample. This tutorial runs five of them on the same bunny-MNIST
inpainting measurements with the benchmark's own functions
(:func:`~manifold_ps.benchmarking.evaluate.run_sampler` and
:func:`~manifold_ps.benchmarking.evaluate.score_estimate`) and prints the table the benchmark
writes. The prior and the flow are the tiny ones of :doc:`plot_03_train_prior` and
:doc:`plot_04_amortized_posterior`, and the iterative baselines take 50 steps instead of 1000,
so the numbers show the *shape* of the comparison, not the paper's results (those are on
:doc:`/results`).
"""

# %%
# The problem
# -----------
# The 453-vertex bunny, MNIST test digits, 30 % of the vertices hidden (a different mask per
# measurement) and noise of standard deviation 0.1 -- the measurements of
# :doc:`plot_04_amortized_posterior`.

import os
import tempfile
import time
from pathlib import Path

import torch

from manifold_ps.baselines import DPS, MCG, HarmonicInterpolation, REDDiff
from manifold_ps.benchmarking.evaluate import run_sampler, score_estimate
from manifold_ps.benchmarking.results import BenchmarkResults
from manifold_ps.datasets import DATA_ENV_VAR, BunnyMNIST, bunny_path
from manifold_ps.flows import AmortizedPosterior, ConditionalRealNVP, HarmonicFill, condition_channels, train_amortized
from manifold_ps.geometry import Mesh, random_vertex_mask
from manifold_ps.operators import Inpainting
from manifold_ps.priors import DiffusionPrior, build_prior, train_prior
from manifold_ps.viz import posterior_row_figure

if DATA_ENV_VAR not in os.environ:
    raise RuntimeError(f"set {DATA_ENV_VAR} to the data folder (see the Data page) to run this tutorial")
torch.manual_seed(0)

bunny = Mesh.from_file(bunny_path("res4"))
test = BunnyMNIST(bunny.positions, "test", num_samples=264, cache_dir=False)
generator = torch.Generator().manual_seed(0)
masks = random_vertex_mask(bunny.num_vertices, 0.3, batch=len(test), generator=generator)
operator = Inpainting(masks, sigma=0.1)
y_all = operator(test.signals, generator=generator)
evaluate = torch.arange(256, 260)  # four measurements the flow was not trained on
y, op, truth = y_all[evaluate], operator.select(evaluate), test.signals[evaluate]
print("measurements:", tuple(y.shape))

# %%
# The prior and the amortized flow
# --------------------------------
# Both are read from the folder where tutorials 3 and 4 saved them (trained here, briefly, when
# this tutorial runs on its own). :meth:`AmortizedPosterior.load
# <manifold_ps.flows.AmortizedPosterior.load>` checks that the flow was trained on this mesh.

cache = Path(os.environ.get("MANIFOLD_PS_TUTORIAL_CACHE", Path(tempfile.gettempdir()) / "manifold_ps_tutorials"))
prior_file, flow_file = cache / "bunny453_mnist_prior.pt", cache / "bunny453_mnist_flow.pt"
if prior_file.is_file():
    prior = DiffusionPrior.load(prior_file, geometry=bunny)
else:
    train = BunnyMNIST(bunny.positions, "train", num_samples=1024, cache_dir=False)
    prior = train_prior(build_prior(bunny, preset="tiny"), train.signals, out_dir=None, steps=150, batch_size=32,
                        lr=3e-3, warmup_steps=15, ema_decay=0.99, progress=False)
if flow_file.is_file():
    flow = AmortizedPosterior.load(flow_file, fingerprint=bunny.fingerprint())
else:
    net = ConditionalRealNVP(1, prior.layout, condition_channels(1, operator, reconstruct=True), steps=4, hidden=16,
                             context_channels=8, encoder_hidden=16, encoder_blocks=1, init_scale=0.1)
    flow = AmortizedPosterior(net, reconstruct=HarmonicFill.from_geometry(bunny), fingerprint=bunny.fingerprint())
    train_amortized(flow, prior, y_all[:256], operator.select(torch.arange(256)), out_dir=None, max_steps=60,
                    batch_size=16, n_z=2, lr=2e-3, warmup_steps=10, ema_decay=None, progress=False)
prior.eval()
flow.eval()

# %%
# Five samplers, one call
# -----------------------
# * :class:`~manifold_ps.baselines.HarmonicInterpolation` -- no prior, no network: the floor.
# * :class:`~manifold_ps.baselines.DPS` -- guided reverse diffusion, one denoiser evaluation and
#   one backward pass per step.
# * :class:`~manifold_ps.baselines.MCG` -- DPS plus data consistency on the observed vertices.
# * :class:`~manifold_ps.baselines.REDDiff` -- optimisation of one estimate with the denoiser as a
#   regulariser (no backward pass through the network).
# * :class:`~manifold_ps.flows.AmortizedPosterior` -- one flow evaluation per sample.
#
# :func:`~manifold_ps.benchmarking.evaluate.run_sampler` draws ``n`` samples per measurement and
# returns the first sample, the mean, the standard deviation and the cost;
# :func:`~manifold_ps.benchmarking.evaluate.score_estimate` scores an estimate against the truth.

samplers = {
    "harmonic": HarmonicInterpolation(bunny),
    "dps": DPS(prior, steps=50),
    "mcg": MCG(prior, steps=50),
    "reddiff": REDDiff(prior, steps=50),
    "flow": flow,
}
n = 4
outputs, results = {}, {}
for name, sampler in samplers.items():
    start = time.perf_counter()
    out = run_sampler(sampler, y, op, n=n, generator=torch.Generator().manual_seed(1))
    outputs[name] = out
    one_sample = score_estimate(out.first, truth, seconds_per_sample=out.seconds_per_sample, nfe=out.nfe)
    results[name] = score_estimate(out.mean, truth, seconds_per_sample=out.seconds_per_sample, nfe=out.nfe,
                                   extra={"psnr_first": one_sample.psnr})
    print(f"{name:>9}: {time.perf_counter() - start:5.1f} s")

# %%
# The table
# ---------
# PSNR of the mean of the ``n`` samples, PSNR of one sample, cost per sample and NFE. The same
# :class:`~manifold_ps.benchmarking.results.BenchmarkResults` object writes the benchmark's
# ``results.md`` (:func:`~manifold_ps.benchmarking.results.write_results`).
#
# Read the cost columns first: the flow draws a sample in one network evaluation, the iterative
# baselines in fifty, so it is one to two orders of magnitude cheaper per sample (at the paper's
# 1000 steps, three). The quality columns depend on how well the prior and the flow are
# trained: with a prior trained for seconds, none of the learned methods need beat the harmonic
# floor, and the 50-step baselines are far from converged. The benchmark
# (``benchmarks/bunny_mnist.py``) runs the same loop with trained models.

print(f"{'method':>9} | {'PSNR mean':>9} | {'PSNR 1':>7} | {'s / sample':>10} | {'NFE':>4}")
for name, r in results.items():
    print(f"{name:>9} | {r.psnr:9.2f} | {r.extra['psnr_first']:7.2f} | {r.seconds_per_sample:10.4f} | {r.nfe:4d}")

table = BenchmarkResults(workload="bunny-mnist (tutorial)", profile="tiny", device="cpu",
                         protocol={"measurements": len(y), "n": n, "missing": 0.3, "sigma": 0.1}, methods=results)
print()
print(table.to_markdown())

# %%
# What the samples look like
# --------------------------
# One row per method for the first measurement: the truth, the measurement (hidden vertices
# grey), two samples, the mean and the standard deviation of the ``n = 4`` samples. The harmonic
# fill is deterministic (zero spread); REDDiff's spread is that of independent optimisation runs,
# not a posterior spread.

rows = [
    posterior_row_figure(truth[0, 0], y[0, 0], out.kept[0, :, 0], out.mean[0, 0], out.std[0, 0], kind="mesh",
                         vertices=bunny.positions, faces=bunny.faces, observed=op.mask[0],
                         title=f"{name}: {results[name].psnr:.1f} dB (mean), NFE {out.nfe}")
    for name, out in outputs.items()
]
