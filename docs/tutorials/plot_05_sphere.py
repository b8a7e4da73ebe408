"""
The sphere: temperature imputation on a map
===========================================

Global near-surface temperature is a signal on the sphere. This tutorial hides 60 % of a
monthly temperature field, adds noise of standard deviation 0.05 (in normalised units, about
6 K), and reconstructs the field with a prior learned from other months, drawing the result on
a map with cartopy. The prior is a Gaussian fitted to the training months, whose posterior is
exact, and the grid is coarsened from 4 to 8 degrees to keep the tutorial fast; the benchmark
``benchmarks/era5_imputation.py`` trains a diffusion prior and the amortized flow on the full
4-degree grid.

The data are the CMIP6 IPSL-CM6A-LR monthly fields on the paper's grid, a real stand-in for the
paper's ERA5 set (see :doc:`/data`).
"""

import os
from pathlib import Path

import cartopy
import cartopy.crs as ccrs
import matplotlib.pyplot as plt
import numpy as np
import torch
from cartopy.io import shapereader

from manifold_ps.datasets import DATA_ENV_VAR, load_gridded_temperature, to_kelvin
from manifold_ps.geometry import SphereGrid, random_vertex_mask
from manifold_ps.operators import Inpainting
from manifold_ps.priors import GaussianPrior, linear_gaussian_posterior

if DATA_ENV_VAR not in os.environ:
    raise RuntimeError(f"set {DATA_ENV_VAR} to the data folder (see the Data page) to run this tutorial")

# %%
# Fields on the sphere
# --------------------
# :func:`~manifold_ps.datasets.load_gridded_temperature` returns normalised fields
# ``(N, 1, 4140)`` on the 46 x 90 grid; every second latitude and longitude gives the 8-degree
# grid (23 x 45 = 1035 vertices). :class:`~manifold_ps.geometry.SphereGrid` is its geometry, with
# a finite-volume Laplace-Beltrami operator.

train = load_gridded_temperature("ipsl", "train")
test = load_gridded_temperature("ipsl", "test")
print(train.name, "| train", len(train), "test", len(test))


def coarsen(values):
    return values.reshape(-1, 1, 46, 90)[:, :, ::2, ::2].reshape(values.shape[0], 1, -1).double()


lat, lon = train.latitudes[::2], train.longitudes[::2]
sphere = SphereGrid(lat, lon)
x_train, x_test = coarsen(train.values), coarsen(test.values)
print(sphere, "shape", sphere.shape)

# %%
# Prior and measurement
# ---------------------
# The Gaussian prior uses the mean and covariance of the training months (with a small ridge).
# The operator hides a random 60 % of the vertices.

mean = x_train.mean(0)
centered = (x_train - mean).flatten(1)
cov = centered.T @ centered / (len(x_train) - 1) + 1e-4 * torch.eye(sphere.num_vertices, dtype=torch.float64)
prior = GaussianPrior(mean, cov)

generator = torch.Generator().manual_seed(0)
truth = x_test[7:8]  # a test month
mask = random_vertex_mask(sphere.num_vertices, 0.6, generator=generator)
operator = Inpainting(mask, sigma=0.05)
y = operator(truth, generator=generator)

post_mean, post_cov = linear_gaussian_posterior(prior, operator, y)
post_std = post_cov.diagonal().clamp_min(0).sqrt().reshape(1, 1, -1)
fill = sphere.harmonic_interpolation(y, mask)


def psnr(a, b):
    return float(-10 * torch.log10((a - b).square().mean()))


print(f"PSNR: harmonic fill {psnr(fill, truth):.2f} dB, posterior mean {psnr(post_mean, truth):.2f} dB")

# %%
# Maps
# ----
# Coastlines are drawn when cartopy's Natural Earth files are installed locally (for example by
# the Debian package ``python-cartopy-data``); the tutorial never downloads them.


def coastlines(ax):
    roots = [Path(cartopy.config["pre_existing_data_dir"]), Path(cartopy.config["data_dir"]), Path("/usr/share/cartopy")]
    for root in roots:
        for res in ("110m", "50m"):
            shp = root / "shapefiles" / "natural_earth" / "physical" / f"ne_{res}_coastline.shp"
            if shp.is_file():
                ax.add_geometries(shapereader.Reader(str(shp)).geometries(), ccrs.PlateCarree(),
                                  facecolor="none", edgecolor="black", linewidth=0.5)
                return


def draw(ax, values, title, cmap="RdYlBu_r", vmin=None, vmax=None, kelvin=True, hidden=None):
    field = sphere.as_image(values.float())[0, 0].numpy()
    field = to_kelvin(field) if kelvin else field
    if hidden is not None:  # leave the hidden vertices blank
        field = np.where(sphere.as_image(hidden.float().reshape(1, 1, -1))[0, 0].numpy() > 0, np.nan, field)
    field = np.concatenate([field, field[:, :1]], axis=1)  # close the longitude circle
    lons = np.concatenate([lon, [360.0]])
    mesh = ax.pcolormesh(lons, lat, field, transform=ccrs.PlateCarree(), cmap=cmap, vmin=vmin, vmax=vmax,
                         shading="nearest")
    coastlines(ax)
    ax.set_global()
    ax.set_title(title, fontsize=9)
    return mesh


kelvin_range = float(to_kelvin(truth.min())), float(to_kelvin(truth.max()))
scale = to_kelvin(1.0) - to_kelvin(0.0)  # kelvin per normalised unit
fig, axes = plt.subplots(2, 3, figsize=(12, 5.6), subplot_kw={"projection": ccrs.Robinson()}, layout="constrained")
panels = [
    (axes[0, 0], truth, "truth", {}),
    (axes[0, 1], y, "measurement: 40 % observed, noisy", {"hidden": ~mask}),
    (axes[0, 2], fill, "harmonic fill", {}),
    (axes[1, 0], post_mean, "posterior mean", {}),
]
for ax, values, title, extra in panels:
    m = draw(ax, values, title, vmin=kelvin_range[0], vmax=kelvin_range[1], **extra)
    fig.colorbar(m, ax=ax, orientation="horizontal", shrink=0.6, pad=0.02, label="K")
m = draw(axes[1, 1], post_std * scale, "posterior std", cmap="magma", vmin=0, kelvin=False)
fig.colorbar(m, ax=axes[1, 1], orientation="horizontal", shrink=0.6, pad=0.02, label="K")
m = draw(axes[1, 2], (post_mean - truth) * scale, "error of the mean", cmap="RdBu_r", vmin=-6, vmax=6, kelvin=False)
fig.colorbar(m, ax=axes[1, 2], orientation="horizontal", shrink=0.6, pad=0.02, label="K")
plt.show()
