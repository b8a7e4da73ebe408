"""
Training a diffusion prior and sampling it
==========================================

The prior of the method is a score-based diffusion model over vertex signals. This tutorial
trains one on MNIST digits painted on the bunny and draws samples from it. To run in seconds
it uses the 453-vertex bunny, a thousand digits, the ``"tiny"`` network and a few hundred
optimizer steps; the benchmark trains the ``"cpu"`` preset on the 1889-vertex bunny and all
60,000 digits for tens of minutes, and the ``"paper"`` preset is the GPU configuration.
"""

# %%
# Training signals
# ----------------
# :class:`~manifold_ps.datasets.BunnyMNIST` paints the digits on the vertices (``cache_dir=False``
# keeps this tutorial from writing a cache; by default the painted signals are cached).

import os
import time
from pathlib import Path
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch
from mpl_toolkits.mplot3d.art3d import Poly3DCollection

from manifold_ps.datasets import DATA_ENV_VAR, BunnyMNIST, bunny_path
from manifold_ps.geometry import Mesh
from manifold_ps.priors import build_prior, train_prior

if DATA_ENV_VAR not in os.environ:
    raise RuntimeError(f"set {DATA_ENV_VAR} to the data folder (see the Data page) to run this tutorial")
torch.manual_seed(0)

bunny = Mesh.from_file(bunny_path("res4"))  # 453 vertices
train = BunnyMNIST(bunny.positions, "train", num_samples=1024, cache_dir=False)
print(train, "signals:", tuple(train.signals.shape))


def show(ax, mesh, values, title="", vmin=0.0, vmax=1.0, cmap="gray"):
    """Front view of a vertex signal (faces coloured by the mean of their vertices)."""
    pos, faces = mesh.positions.numpy(), mesh.faces.numpy()
    face_values = np.asarray(values, dtype=float)[faces].mean(axis=1)
    colors = plt.get_cmap(cmap)(np.clip((face_values - vmin) / (vmax - vmin), 0, 1))
    ax.add_collection3d(Poly3DCollection(pos[faces], facecolors=colors, edgecolors="none"))
    lo, hi = pos.min(0), pos.max(0)
    ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), zlim=(lo[2], hi[2]))
    ax.set_box_aspect(hi - lo)
    ax.view_init(elev=90, azim=-90)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)


def grid(signals, titles, mesh=bunny, cols=6, size=1.8):
    rows = -(-len(signals) // cols)
    fig = plt.figure(figsize=(size * cols, size * rows))
    for i, (s, t) in enumerate(zip(signals, titles)):
        show(fig.add_subplot(rows, cols, i + 1, projection="3d"), mesh, s, t)
    fig.tight_layout()
    return fig


grid([train.signals[i, 0] for i in range(6)], [f"digit {int(train.labels[i])}" for i in range(6)])

# %%
# The prior
# ---------
# :func:`~manifold_ps.priors.build_prior` sizes a 1-D U-Net
# (:class:`~manifold_ps.priors.UNet1d`) for the geometry: it orders the vertices along a Hilbert
# curve and pads the sequence to the U-Net's down-sampling factor. The
# :class:`~manifold_ps.priors.DiffusionPrior` wraps the network into the Tweedie denoiser
# :math:`D_\theta(x_t, t) \approx \mathbb{E}[x_0 \mid x_t]` of the VP-SDE, with a noise-dependent
# skip connection so the network never has to copy its input.

prior = build_prior(bunny, preset="tiny")
print(prior.layout, "parameters:", sum(p.numel() for p in prior.parameters()))

# %%
# Training
# --------
# :func:`~manifold_ps.priors.train_prior` minimises the denoising score-matching loss with
# AdamW, keeps an exponential moving average of the weights and returns the averaged prior.
# With ``out_dir`` set it also writes checkpoints (an interrupted run resumes) and ``prior.pt``.

losses = []
start = time.perf_counter()
prior = train_prior(
    prior, train.signals, out_dir=None, steps=150, batch_size=32, lr=3e-3, warmup_steps=15,
    ema_decay=0.99, progress=False,
    callback=lambda trainer, step, logs: losses.append(logs["loss"]) and None,
)
print(f"trained {len(losses)} steps in {time.perf_counter() - start:.0f} s")

fig, ax = plt.subplots(figsize=(5, 2.5))
ax.plot(losses, lw=0.8, alpha=0.5, label="loss per step")
ax.plot(np.convolve(losses, np.ones(20) / 20, mode="valid"), lw=1.5, label="moving average")
ax.set(xlabel="step", ylabel="denoising loss", yscale="log")
ax.legend()
fig.tight_layout()

# %%
# Saving the prior for the next tutorials
# ---------------------------------------
# :meth:`~manifold_ps.priors.DiffusionPrior.save` writes the configuration, the weights and the
# geometry's fingerprint; :meth:`~manifold_ps.priors.DiffusionPrior.load` refuses to load the prior
# for another mesh.

cache = Path(os.environ.get("MANIFOLD_PS_TUTORIAL_CACHE", Path(tempfile.gettempdir()) / "manifold_ps_tutorials"))
cache.mkdir(parents=True, exist_ok=True)
prior.save(cache / "bunny453_mnist_prior.pt")

# %%
# Sampling
# --------
# :meth:`~manifold_ps.priors.ScorePrior.sample` integrates the reverse diffusion: ancestral DDPM
# steps by default, or the probability-flow ODE with ``method="ode"``. After a few hundred steps
# of training the samples are digit-like strokes rather than clean digits; quality keeps improving
# for tens of thousands of steps.

generator = torch.Generator().manual_seed(1)
samples = prior.sample(6, steps=100, generator=generator)
grid([s[0] for s in samples], ["DDPM, 100 steps"] * 6)

samples_ode = prior.sample(6, method="ode", steps=12, generator=generator)
grid([s[0] for s in samples_ode], ["PF-ODE, 12 Heun steps"] * 6)
plt.show()
