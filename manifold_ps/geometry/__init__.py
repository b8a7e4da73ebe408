"""Geometries (meshes, sphere grids, image grids), orderings, masks and painting.

Every geometry exposes ``laplacian()``, ``mass()``, ``eigenbasis(k)``, ``ordering(...)``,
``layout(...)`` and ``harmonic_interpolation(...)``; see :class:`Geometry`.
"""

from .base import Geometry as Geometry
from .base import OrderingMethod as OrderingMethod
from .image import ImageGrid as ImageGrid
from .interop import from_pyg as from_pyg
from .interop import to_pyg as to_pyg
from .layout import VertexLayout as VertexLayout
from .layout import padded_length as padded_length
from .masks import geodesic_patch_mask as geodesic_patch_mask
from .masks import random_vertex_mask as random_vertex_mask
from .mesh import Mesh as Mesh
from .ordering import check_permutation as check_permutation
from .ordering import hilbert_index as hilbert_index
from .ordering import hilbert_ordering as hilbert_ordering
from .ordering import identity_ordering as identity_ordering
from .ordering import invert_permutation as invert_permutation
from .ordering import locality_report as locality_report
from .ordering import ordering_locality as ordering_locality
from .ordering import spectral_ordering as spectral_ordering
from .painting import paint_images as paint_images
from .painting import paint_images_on as paint_images_on
from .painting import project_to_plane as project_to_plane
from .sphere import GASP_LATITUDES as GASP_LATITUDES
from .sphere import GASP_LONGITUDES as GASP_LONGITUDES
from .sphere import MESH_DIR as MESH_DIR
from .sphere import Icosphere as Icosphere
from .sphere import SphereGrid as SphereGrid

__all__ = [
    "Geometry",
    "OrderingMethod",
    "Mesh",
    "SphereGrid",
    "Icosphere",
    "ImageGrid",
    "VertexLayout",
    "padded_length",
    "spectral_ordering",
    "hilbert_ordering",
    "hilbert_index",
    "identity_ordering",
    "invert_permutation",
    "check_permutation",
    "ordering_locality",
    "locality_report",
    "random_vertex_mask",
    "geodesic_patch_mask",
    "paint_images",
    "paint_images_on",
    "project_to_plane",
    "to_pyg",
    "from_pyg",
    "GASP_LATITUDES",
    "GASP_LONGITUDES",
    "MESH_DIR",
]
