"""
Amortized posterior sampling with uncertainty maps
==================================================

The method of the package, end to end: a diffusion prior trained on clean digits on the bunny,
then a conditional RealNVP flow trained *from noisy, masked measurements only* to sample the
posterior of every measurement in one network evaluation. The configuration is tiny (the
453-vertex bunny, four flow steps, sixty optimizer steps) so that it runs in under a minute;
the benchmark uses the paper's 1889-vertex bunny and trains for tens of minutes.
"""

# %%
# The prior
# ---------
# We reuse the prior trained in :doc:`plot_03_train_prior` when it was saved, and train the same
# one otherwise.

import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from mpl_toolkits.mplot3d.art3d import Poly3DCollection

from manifold_ps.datasets import DATA_ENV_VAR, BunnyMNIST, bunny_path
from manifold_ps.flows import AmortizedPosterior, ConditionalRealNVP, HarmonicFill, condition_channels, train_amortized
from manifold_ps.geometry import Mesh, random_vertex_mask
from manifold_ps.operators import Inpainting
from manifold_ps.priors import DiffusionPrior, build_prior, train_prior

if DATA_ENV_VAR not in os.environ:
    raise RuntimeError(f"set {DATA_ENV_VAR} to the data folder (see the Data page) to run this tutorial")
torch.manual_seed(0)

bunny = Mesh.from_file(bunny_path("res4"))
cache = Path(os.environ.get("MANIFOLD_PS_TUTORIAL_CACHE", Path(tempfile.gettempdir()) / "manifold_ps_tutorials"))
prior_file = cache / "bunny453_mnist_prior.pt"
if prior_file.is_file():
    prior = DiffusionPrior.load(prior_file, geometry=bunny)
else:
    train = BunnyMNIST(bunny.positions, "train", num_samples=1024, cache_dir=False)
    prior = train_prior(build_prior(bunny, preset="tiny"), train.signals, out_dir=None, steps=150,
                        batch_size=32, lr=3e-3, warmup_steps=15, ema_decay=0.99, progress=False)
print("prior:", prior.layout)

# %%
# Measurements
# ------------
# The flow never sees a clean signal: its training set is a set of measurements, each with its
# own random mask (30 % of the vertices hidden) and noise of standard deviation 0.1. The operator
# holds one mask per measurement.

test = BunnyMNIST(bunny.positions, "test", num_samples=264, cache_dir=False)
generator = torch.Generator().manual_seed(0)
masks = random_vertex_mask(bunny.num_vertices, 0.3, batch=len(test), generator=generator)
operator = Inpainting(masks, sigma=0.1)
y = operator(test.signals, generator=generator)
y_train, y_eval = y[:256], y[256:]
op_train, op_eval = operator.select(torch.arange(256)), operator.select(torch.arange(256, 264))

# %%
# The conditional flow
# --------------------
# :class:`~manifold_ps.flows.ConditionalRealNVP` works on the same vertex order as the prior. Its
# condition is the measurement, the mask and a harmonic fill of the observed values
# (:class:`~manifold_ps.flows.HarmonicFill`), which is also the location the flow adds its
# output to: the flow models the residual around a cheap reconstruction.
# :class:`~manifold_ps.flows.AmortizedPosterior` turns ``(y, operator)`` into those inputs.

flow = ConditionalRealNVP(
    1, prior.layout, condition_channels(1, operator, reconstruct=True),
    steps=4, hidden=16, context_channels=8, encoder_hidden=16, encoder_blocks=1, init_scale=0.1,
)
posterior = AmortizedPosterior(flow, reconstruct=HarmonicFill.from_geometry(bunny), fingerprint=bunny.fingerprint())
print("flow parameters:", sum(p.numel() for p in flow.parameters()))

# %%
# Training from measurements only
# -------------------------------
# :func:`~manifold_ps.flows.train_amortized` minimises the amortized reverse KL divergence: for a
# batch of measurements, draw flow samples and add the data fidelity, minus the prior's evidence
# lower bound (estimated with importance-sampled times, through the frozen prior) and minus the
# flow's log-determinant (see :doc:`/method`).

trainer = train_amortized(posterior, prior, y_train, op_train, out_dir=None, max_steps=60, batch_size=16,
                          n_z=2, lr=2e-3, warmup_steps=10, ema_decay=None, progress=False, log_every=5)
history = trainer.history
fig, axes = plt.subplots(1, 4, figsize=(12, 2.4))
for ax, key in zip(axes, ["loss", "fidelity", "prior", "entropy"]):
    if key in history:
        ax.plot(history["step"], history[key])
    ax.set(title=key, xlabel="step")
fig.tight_layout()

# %%
# Posterior samples, mean and uncertainty
# ---------------------------------------
# A posterior sample costs one flow evaluation; 128 samples per measurement come from one batched
# pass. Their mean is the estimate, their per-vertex standard deviation an uncertainty map: it is
# largest at hidden vertices near the strokes of the digit.


def show(ax, values, title="", vmin=0.0, vmax=1.0, cmap="gray"):
    pos, faces = bunny.positions.numpy(), bunny.faces.numpy()
    face_values = np.asarray(values, dtype=float)[faces].mean(axis=1)
    colors = plt.get_cmap(cmap)(np.clip((face_values - vmin) / (vmax - vmin), 0, 1))
    ax.add_collection3d(Poly3DCollection(pos[faces], facecolors=colors, edgecolors="none"))
    lo, hi = pos.min(0), pos.max(0)
    ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), zlim=(lo[2], hi[2]))
    ax.set_box_aspect(hi - lo)
    ax.view_init(elev=90, azim=-90)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)


posterior.eval()
samples = posterior.sample(y_eval, op_eval, n=3, generator=generator)  # (8, 3, 1, V)
mean, std = posterior.posterior_mean_std(y_eval, op_eval, n=128, generator=generator)
truth = test.signals[256:]
psnr = lambda a, b: float(-10 * torch.log10((a.clamp(0, 1) - b).square().mean()))  # noqa: E731

columns = ["truth", "measurement", "sample 1", "sample 2", "mean of 128", "std of 128"]
fig = plt.figure(figsize=(11, 2.0 * 3))
for row in range(3):
    panels = [truth[row, 0], y_eval[row, 0], samples[row, 0, 0], samples[row, 1, 0], mean[row, 0], std[row, 0]]
    for col, (values, name) in enumerate(zip(panels, columns)):
        ax = fig.add_subplot(3, 6, 6 * row + col + 1, projection="3d")
        if name.startswith("std"):
            show(ax, values, name, vmin=0.0, vmax=float(std.max()), cmap="magma")
        else:
            show(ax, values, name if row == 0 else "")
fig.tight_layout()
print(f"PSNR of one sample: {psnr(samples[:, 0], truth):.2f} dB, of the mean: {psnr(mean, truth):.2f} dB")
print(f"harmonic fill alone: {psnr(posterior.reconstruct(y_eval, op_eval), truth):.2f} dB")
plt.show()

# %%
# Saving the sampler
# ------------------
# :meth:`~manifold_ps.flows.AmortizedPosterior.save` writes the flow's configuration and weights,
# the harmonic fill and the mesh fingerprint to one file; :doc:`plot_07_compare_samplers` loads it
# with :meth:`~manifold_ps.flows.AmortizedPosterior.load` and compares it with the baselines.

posterior.save(cache / "bunny453_mnist_flow.pt")
