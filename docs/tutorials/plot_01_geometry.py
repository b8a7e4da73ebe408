"""
Geometry: the bunny, its Laplacian, orderings and masks
=======================================================

Signals in ``manifold_ps`` live on the vertices of a surface. This tutorial loads the
1889-vertex Stanford bunny of the paper, computes its Laplacian eigenbasis, puts the vertices in a
locality-preserving order for the networks, draws the masks of the inpainting problem and paints
an MNIST digit on the surface.
"""

# %%
# Loading the mesh
# ----------------
# The data folder is found through the ``MANIFOLD_PS_DATA`` environment variable (see
# :doc:`/data`); :func:`~manifold_ps.datasets.bunny_path` returns the verified file.
# :meth:`Mesh.from_file <manifold_ps.geometry.Mesh.from_file>` keeps every vertex of
# ``bun_zipper_res3.ply`` (two of them belong to no triangle) and drops duplicated triangles.

import os

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
import torch
from mpl_toolkits.mplot3d.art3d import Poly3DCollection

from manifold_ps.datasets import DATA_ENV_VAR, bunny_path, load_mnist
from manifold_ps.geometry import (
    Mesh,
    geodesic_patch_mask,
    ordering_locality,
    paint_images_on,
    random_vertex_mask,
)

if DATA_ENV_VAR not in os.environ:
    raise RuntimeError(f"set {DATA_ENV_VAR} to the data folder (see the Data page) to run this tutorial")

bunny = Mesh.from_file(bunny_path("res3"))
print(bunny, "faces:", bunny.num_faces, "removed duplicates:", bunny.num_removed_duplicate_faces)


def show(ax, mesh, values, *, cmap="viridis", vmin=None, vmax=None, title=""):
    """Draw a vertex signal on a mesh, seen from the front (the bunny's y axis points up)."""
    pos = mesh.positions.numpy()
    faces = mesh.faces.numpy()
    values = np.asarray(values, dtype=float)
    face_values = values[faces].mean(axis=1)
    vmin = face_values.min() if vmin is None else vmin
    vmax = face_values.max() if vmax is None else vmax
    colors = plt.get_cmap(cmap)(np.clip((face_values - vmin) / max(vmax - vmin, 1e-12), 0, 1))
    ax.add_collection3d(Poly3DCollection(pos[faces], facecolors=colors, edgecolors="none"))
    lo, hi = pos.min(0), pos.max(0)
    ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), zlim=(lo[2], hi[2]))
    ax.set_box_aspect(hi - lo)
    ax.view_init(elev=90, azim=-90)  # look along -z: x to the right, y up
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)


def figure(n, width=2.6):
    fig = plt.figure(figsize=(width * n, width * 1.05))
    return fig, [fig.add_subplot(1, n, i + 1, projection="3d") for i in range(n)]


# %%
# The Laplacian and its eigenbasis
# --------------------------------
# :meth:`~manifold_ps.geometry.Geometry.laplacian` is the robust cotangent Laplacian (a sparse
# ``(V, V)`` positive semi-definite matrix whose rows sum to zero) and
# :meth:`~manifold_ps.geometry.Geometry.mass` the lumped vertex areas. The generalized eigenvectors
# :math:`L\varphi = \lambda M\varphi` are the Fourier basis of the surface; they are
# M-orthonormal.

L, mass = bunny.laplacian(), bunny.mass()
evals, evecs = bunny.eigenbasis(32)
print("L:", L.shape, "max |row sum|:", float(np.abs(L.sum(axis=1)).max()))
print("first eigenvalues:", np.round(evals[:5].numpy(), 2))
gram = evecs.T @ (torch.from_numpy(mass)[:, None] * evecs)
print("M-orthonormal:", torch.allclose(gram, torch.eye(32, dtype=gram.dtype), atol=1e-8))

fig, axes = figure(4)
for ax, k in zip(axes, (1, 2, 5, 31)):
    show(ax, bunny, evecs[:, k].numpy(), cmap="RdBu_r", title=f"eigenvector {k}, λ = {evals[k]:.0f}")
fig.tight_layout()

# %%
# A good vertex order
# -------------------
# Networks read a signal as a 1-D sequence. In the file's vertex order, neighbours in the sequence
# are often far apart on the surface; a 3-D Hilbert curve through the vertices (the default,
# ``"auto"``) keeps them close, so a 1-D convolution over the sequence acts on small patches of
# the surface. :func:`~manifold_ps.geometry.ordering_locality` measures the mean distance between
# consecutive vertices.

for method in ("identity", "spectral", "hilbert"):
    perm = bunny.ordering(method)
    print(f"{method:>9}: mean step {ordering_locality(bunny, perm):.4f}")

fig, axes = figure(3)
for ax, method in zip(axes, ("identity", "spectral", "hilbert")):
    position = torch.empty(bunny.num_vertices)
    position[bunny.ordering(method)] = torch.arange(bunny.num_vertices, dtype=torch.float)
    show(ax, bunny, position.numpy(), cmap="twilight", title=f"{method} order")
fig.tight_layout()

# %%
# :meth:`~manifold_ps.geometry.Geometry.layout` turns that order into a
# :class:`~manifold_ps.geometry.VertexLayout`, which also pads the sequence to a length the
# networks can halve: here 1889 vertices become 1920 positions, the last 31 always zero.

layout = bunny.layout(multiple=64)
x = torch.rand(2, 1, bunny.num_vertices)
seq = layout.to_sequence(x)
print("signal", tuple(x.shape), "-> sequence", tuple(seq.shape), "padding:", layout.num_padding)
print("round trip exact:", torch.equal(layout.from_sequence(seq), x))

# %%
# Masks
# -----
# The inpainting problem hides a random 30 % of the vertices
# (:func:`~manifold_ps.geometry.random_vertex_mask`, ``True`` = observed). A harder variant hides
# one contiguous geodesic patch (:func:`~manifold_ps.geometry.geodesic_patch_mask`, distances by
# the heat method).

generator = torch.Generator().manual_seed(0)
random_mask = random_vertex_mask(bunny.num_vertices, 0.3, generator=generator)
patch_mask = geodesic_patch_mask(bunny, center=100, fraction=0.3)
print("observed:", int(random_mask.sum()), "and", int(patch_mask.sum()), "of", bunny.num_vertices)

# %%
# Painting a digit
# ----------------
# :func:`~manifold_ps.geometry.paint_images_on` projects the vertices onto the image plane (a
# frontal view) and samples the image bilinearly: this is how the paper's bunny-MNIST signals are
# made. The measurement keeps the observed vertices and adds noise of standard deviation 0.1.

images, labels = load_mnist("test")
digit = paint_images_on(bunny, images[:1])  # (1, 1, V), values in [0, 1]
noise = 0.1 * torch.randn(digit.shape, generator=generator)
y = (digit + noise) * random_mask

fig, axes = figure(4)
show(axes[0], bunny, digit[0, 0], vmin=0, vmax=1, cmap="gray", title=f"digit {int(labels[0])} on the bunny")
hidden_observed = ListedColormap(["#c0392b", "#d5d5d5"])  # red = hidden, grey = observed
show(axes[1], bunny, random_mask.float(), vmin=0, vmax=1, cmap=hidden_observed, title="random mask (30 % hidden)")
show(axes[2], bunny, patch_mask.float(), vmin=0, vmax=1, cmap=hidden_observed, title="geodesic patch (30 % hidden)")
show(axes[3], bunny, y[0, 0], vmin=0, vmax=1, cmap="gray", title="measurement y")
fig.tight_layout()

# %%
# The cheapest reconstruction fills the hidden vertices by harmonic interpolation
# (:meth:`~manifold_ps.geometry.Geometry.harmonic_interpolation`): observed values are kept and the
# rest solve :math:`L_{uu} x_u = -L_{uo} x_o`. It is smooth, it cannot remove noise, and it does
# not know what a digit looks like; a learned prior does (next tutorials).

fill = bunny.harmonic_interpolation(y, random_mask)
psnr = -10 * torch.log10((fill.clamp(0, 1) - digit).square().mean())
fig, axes = figure(2)
show(axes[0], bunny, digit[0, 0], vmin=0, vmax=1, cmap="gray", title="truth")
show(axes[1], bunny, fill[0, 0], vmin=0, vmax=1, cmap="gray", title=f"harmonic fill, {psnr:.1f} dB")
fig.tight_layout()
plt.show()
