"""
Images as signals on a regular grid
===================================

An image is a signal on the vertices of a pixel grid, so everything in the package applies to
images unchanged: :class:`~manifold_ps.geometry.ImageGrid` is a geometry with the 5-point
Laplacian, a serpentine vertex order and the same operators and samplers. This tutorial inpaints
MNIST digits (padded to 32 x 32 and averaged down to 16 x 16) with a Gaussian prior whose
posterior is known exactly, to show the grid geometry without training a network.
"""

import os

import matplotlib.pyplot as plt
import torch

from manifold_ps.datasets import DATA_ENV_VAR, mnist_padded_32
from manifold_ps.geometry import ImageGrid, random_vertex_mask
from manifold_ps.operators import Inpainting
from manifold_ps.priors import GaussianPrior, linear_gaussian_posterior

if DATA_ENV_VAR not in os.environ:
    raise RuntimeError(f"set {DATA_ENV_VAR} to the data folder (see the Data page) to run this tutorial")

# %%
# The grid geometry
# -----------------
# Signals are ``(B, C, V)`` with ``V = H * W`` pixels in row-major order;
# :meth:`~manifold_ps.geometry.ImageGrid.as_image` and
# :meth:`~manifold_ps.geometry.ImageGrid.from_image` convert. The eigenvectors of the grid
# Laplacian are the cosine modes of the discrete cosine transform.

grid = ImageGrid(16, 16)
images, labels = mnist_padded_32("train")
images = images.reshape(-1, 16, 2, 16, 2).mean(dim=(2, 4))  # (60000, 16, 16)
x = grid.from_image(images[:, None].double())  # (60000, 1, 256)
print(grid, "signals:", tuple(x.shape))

evals, evecs = grid.eigenbasis(16)
fig, axes = plt.subplots(2, 8, figsize=(10, 2.8))
for k, ax in enumerate(axes.flat):
    ax.imshow(grid.as_image(evecs[:, k].reshape(1, 1, -1))[0, 0], cmap="RdBu_r")
    ax.set_title(f"λ = {evals[k]:.2f}", fontsize=8)
    ax.set_axis_off()
fig.suptitle("Laplacian eigenvectors of a 16 x 16 grid")
fig.tight_layout()

# %%
# The serpentine order (the ``"auto"`` ordering on grids) scans the rows alternately left to right
# and right to left, so consecutive pixels of the sequence are always neighbours.

order = grid.ordering()
position = torch.empty(grid.num_vertices)
position[order] = torch.arange(grid.num_vertices, dtype=torch.float)
fig, ax = plt.subplots(figsize=(3, 3))
ax.imshow(position.reshape(16, 16), cmap="twilight")
ax.set_title("position in the sequence")
ax.set_axis_off()

# %%
# A Gaussian prior and its exact posterior
# ----------------------------------------
# :class:`~manifold_ps.priors.GaussianPrior` is a diffusion prior of Gaussian data whose denoiser
# is exact. Fitted to the mean and covariance of the training digits it is a crude model of
# digits, but its posterior under a masking operator is available in closed form
# (:func:`~manifold_ps.priors.linear_gaussian_posterior`), which makes it the reference the tests
# use for every sampler.

mean = x.mean(0)
centered = (x - mean).flatten(1)
cov = centered.T @ centered / (len(x) - 1) + 1e-3 * torch.eye(grid.num_vertices, dtype=x.dtype)
prior = GaussianPrior(mean, cov)

generator = torch.Generator().manual_seed(0)
truth = x[:6]
fig, axes = plt.subplots(5, 6, figsize=(8, 7))
for i in range(6):
    mask = random_vertex_mask(grid.num_vertices, 0.5, generator=generator)
    operator = Inpainting(mask, sigma=0.05)
    y = operator(truth[i : i + 1], generator=generator)
    post_mean, post_cov = linear_gaussian_posterior(prior, operator, y)
    post_std = post_cov.diagonal().clamp_min(0).sqrt().reshape(1, 1, -1)
    fill = grid.harmonic_interpolation(y, mask)
    panels = [truth[i : i + 1], y, fill, post_mean, post_std]
    names = ["truth", "50 % observed", "harmonic fill", "posterior mean", "posterior std"]
    for row, (panel, name) in enumerate(zip(panels, names)):
        ax = axes[row, i]
        ax.imshow(grid.as_image(panel)[0, 0], cmap="magma" if "std" in name else "gray",
                  vmin=0, vmax=None if "std" in name else 1)
        ax.set_axis_off()
        if i == 0:
            ax.set_title(name, fontsize=8, loc="left")
fig.tight_layout()

# %%
# The same code runs on the bunny or the sphere: only the geometry changes. With a trained
# :class:`~manifold_ps.priors.DiffusionPrior` (:doc:`plot_03_train_prior`) in place of the Gaussian
# prior, the amortized sampler of :doc:`plot_04_amortized_posterior` is trained the same way on
# image measurements.
plt.show()
