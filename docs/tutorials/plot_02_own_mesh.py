"""
Your own mesh: a posterior sampler for a torus
==============================================

Nothing in ``manifold_ps`` is specific to the bunny: any triangle mesh that trimesh can read
works. This tutorial makes a mesh file (a tilted torus exported to OBJ), loads it, builds a data
set of smooth random fields on it, and trains the amortized posterior sampler of the paper on
masked, noisy measurements of those fields. The prior is Gaussian, so the exact posterior is
known and the flow's mean and standard deviation can be checked against it. Everything runs in
well under a minute on one CPU core.
"""

# %%
# A mesh file
# -----------
# Any PLY, OBJ, OFF or STL file that trimesh reads will do; here we write one.
# :meth:`Mesh.from_file <manifold_ps.geometry.Mesh.from_file>` loads it with
# ``process=False``, so the vertex order is the file's, and drops duplicated triangles.

import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import trimesh
from matplotlib.figure import Figure

from manifold_ps.flows import AmortizedPosterior, ConditionalRealNVP, HarmonicFill, condition_channels, train_amortized
from manifold_ps.geometry import Mesh, random_vertex_mask
from manifold_ps.metrics import mse
from manifold_ps.operators import Inpainting
from manifold_ps.priors import GaussianPrior, linear_gaussian_posterior
from manifold_ps.viz import plot_mesh_signal, posterior_row_figure

torch.manual_seed(0)
torus = trimesh.creation.torus(major_radius=1.0, minor_radius=0.4, major_sections=32, minor_sections=12)
torus.apply_transform(trimesh.transformations.rotation_matrix(np.radians(50), [1, 0, 0]))  # tilt it
path = Path(tempfile.mkdtemp()) / "torus.obj"
torus.export(path)

mesh = Mesh.from_file(path)
print(mesh, "| faces:", mesh.num_faces, "| file:", path.name)

# %%
# The mesh is a :class:`~manifold_ps.geometry.Geometry` like the bunny: it has a cotangent
# Laplacian, a Laplacian eigenbasis, a locality-preserving vertex order and a harmonic
# interpolation. :func:`~manifold_ps.viz.plot_mesh_signal` draws a vertex signal (the viz
# functions return a :class:`matplotlib.figure.Figure`; ``fig.savefig(...)`` writes it).
# The trimesh torus lies in the ``x, y`` plane, so its ``up`` axis is ``z``.

evals, evecs = mesh.eigenbasis(8)
print("first Laplacian eigenvalues:", np.round(evals.numpy(), 2))
eigen_fig = Figure(figsize=(10, 2.6))
for i, k in enumerate((1, 3, 5, 7)):
    ax = eigen_fig.add_subplot(1, 4, i + 1, projection="3d")
    plot_mesh_signal(mesh.positions, mesh.faces, evecs[:, k], ax=ax, cmap="RdBu_r", up="z", view=(35, -60))
    ax.set_title(f"eigenvector {k}, λ = {evals[k]:.1f}", fontsize=9)
eigen_fig.tight_layout()

# %%
# Smooth random fields
# --------------------
# Our data set is a Gaussian random field with a squared-exponential covariance of the
# Euclidean distance between vertices, :math:`k(p, q) = \exp(-|p - q|^2 / 2\ell^2)`, plus a
# "nugget" of variance 0.01 (independent per-vertex variation of standard deviation 0.1, which
# also keeps the covariance well conditioned). :class:`~manifold_ps.priors.GaussianPrior` is the diffusion prior of exactly this
# distribution: its denoiser and score are known in closed form, so the only thing learned in
# this tutorial is the posterior sampler. With a trained
# :class:`~manifold_ps.priors.DiffusionPrior` instead (``build_prior(mesh, preset="tiny")`` and
# :func:`~manifold_ps.priors.train_prior` on your signals, see :doc:`plot_03_train_prior`) the
# rest of the code is unchanged.

pos = mesh.positions  # (V, 3), float64
lengthscale = 0.45
cov = torch.exp(-torch.cdist(pos, pos).square() / (2 * lengthscale**2))
cov = cov + 0.01 * torch.eye(mesh.num_vertices, dtype=cov.dtype)
prior = GaussianPrior(torch.zeros(1, mesh.num_vertices, dtype=torch.float64), cov)

generator = torch.Generator().manual_seed(0)
signals = prior.sample_data(520, generator=generator).float()  # (520, 1, V)
print("data set:", tuple(signals.shape))

fields_fig = Figure(figsize=(10, 2.6))
for i in range(4):
    ax = fields_fig.add_subplot(1, 4, i + 1, projection="3d")
    plot_mesh_signal(mesh.positions, mesh.faces, signals[i, 0], ax=ax, cmap="viridis", up="z", view=(35, -60))
    ax.set_title(f"field {i}", fontsize=9)
fields_fig.tight_layout()

# %%
# Measurements
# ------------
# Each field is measured at a random 50 % of its vertices with noise of standard deviation 0.1;
# every measurement has its own mask. The sampler is trained on the first 512 measurements --
# never on the fields themselves -- and evaluated on the other 8.

masks = random_vertex_mask(mesh.num_vertices, 0.5, batch=len(signals), generator=generator)
operator = Inpainting(masks, sigma=0.1)
y = operator(signals, generator=generator)
y_train, y_test = y[:512], y[512:]
op_train, op_test = operator.select(torch.arange(512)), operator.select(torch.arange(512, 520))
truth = signals[512:]

# %%
# The amortized sampler
# ---------------------
# The flow works on the mesh's vertex order (:meth:`~manifold_ps.geometry.Geometry.layout`); it
# is conditioned on the measurement, the mask and a harmonic fill of the observed values
# (:class:`~manifold_ps.flows.HarmonicFill`), around which it models the residual. Four flow
# steps keep it small; ``patch=8`` folds eight neighbouring positions into channels inside the
# coupling networks, which makes CPU training several times faster.

flow = ConditionalRealNVP(
    1, mesh.layout(multiple=8), condition_channels(1, operator, reconstruct=True),
    steps=4, hidden=16, context_channels=8, encoder_hidden=16, encoder_blocks=1, init_scale=0.1, patch=8,
)
posterior = AmortizedPosterior(flow, reconstruct=HarmonicFill.from_geometry(mesh), fingerprint=mesh.fingerprint())

# %%
# :func:`~manifold_ps.flows.train_amortized` minimises the amortized reverse KL divergence
# between the flow and the posterior, with the prior entering through its evidence lower bound
# (the method of the paper, see :doc:`/method`).

prior32 = copy.deepcopy(prior).float()  # the flow trains in float32; the float64 prior is kept for later
start = time.perf_counter()
trainer = train_amortized(posterior, prior32, y_train, op_train, out_dir=None, max_steps=120, batch_size=16,
                          n_z=2, lr=5e-3, warmup_steps=10, ema_decay=None, progress=False, log_every=10)
print(f"trained {trainer.step} steps in {time.perf_counter() - start:.1f} s")

# %%
# Samples, mean and uncertainty
# -----------------------------
# :func:`~manifold_ps.viz.posterior_row_figure` draws one measurement per row: truth,
# measurement (hidden vertices grey), two flow samples, the mean and the standard deviation of
# 256 samples.

posterior.eval()
samples = posterior.sample(y_test, op_test, n=2, generator=generator)  # (8, 2, 1, V)
mean, std = posterior.posterior_mean_std(y_test, op_test, n=256, generator=generator)  # (8, 1, V) each

rows = [
    posterior_row_figure(truth[i, 0], y_test[i, 0], samples[i, :, 0], mean[i, 0], std[i, 0], kind="mesh",
                         vertices=mesh.positions, faces=mesh.faces, observed=op_test.mask[i],
                         title=f"test measurement {i}")
    for i in range(2)
]

# %%
# Checking against the exact posterior
# ------------------------------------
# With a Gaussian prior and a masking operator the posterior is Gaussian and
# :func:`~manifold_ps.priors.linear_gaussian_posterior` computes it: its mean is the best
# estimate any sampler can give in mean squared error, and its standard deviation is the
# uncertainty a calibrated sampler should report.

exact_mean, exact_std = [], []
for i in range(len(y_test)):
    m, c = linear_gaussian_posterior(prior, op_test.select(torch.tensor([i])), y_test[i : i + 1].double())
    exact_mean.append(m)
    exact_std.append(c.diagonal().sqrt().reshape(1, 1, -1))
exact_mean, exact_std = torch.cat(exact_mean).float(), torch.cat(exact_std).float()
fill = posterior.reconstruct(y_test, op_test)

for name, estimate in [("harmonic fill", fill), ("flow mean (256)", mean), ("exact posterior mean", exact_mean)]:
    print(f"{name:>22}: RMS error {mse(estimate, truth).mean().sqrt():.3f}")
print(f"flow mean vs exact mean: RMS difference {(mean - exact_mean).square().mean().sqrt():.3f}")
print(f"posterior std, hidden vertices: flow {std[~op_test.mask[:, None]].mean():.3f}, "
      f"exact {exact_std[~op_test.mask[:, None]].mean():.3f}")

# %%
# The flow's uncertainty at the hidden vertices is close to the exact one, while its mean has
# moved only part of the way from the harmonic fill it starts from towards the exact posterior
# mean: a four-step flow trained for 120 steps is far from converged. (The test suite checks
# that a flow trained longer on a small problem recovers the exact posterior.) On your own
# problem, this kind of comparison -- with a Gaussian prior fitted to your data -- is how you
# tell whether a sampler is trained enough. The exact posterior of the first test measurement,
# drawn the same way:

compare_fig = posterior_row_figure(truth[0, 0], y_test[0, 0], exact_mean[0:1, 0], exact_mean[0, 0], exact_std[0, 0],
                                   kind="mesh", vertices=mesh.positions, faces=mesh.faces,
                                   observed=op_test.mask[0], title="exact posterior of test measurement 0",
                                   max_samples=0)
