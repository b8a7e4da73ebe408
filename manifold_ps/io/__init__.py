"""A user's data in and results out: geometry from files, signals and measurements with shape
checks against the geometry, and the posterior written as an xarray dataset.

Everything here validates at the boundary: an error names the file, what was found and what was
expected.
"""

from ._geometry import GEOMETRY_KINDS as GEOMETRY_KINDS
from ._geometry import geometry_kind as geometry_kind
from ._geometry import grid_from_dataset as grid_from_dataset
from ._geometry import load_geometry as load_geometry
from ._geometry import parse_image_size as parse_image_size
from ._geometry import read_geometry as read_geometry
from ._geometry import save_geometry as save_geometry
from ._measurements import OPERATORS as OPERATORS
from ._measurements import Measurements as Measurements
from ._measurements import load_measurements as load_measurements
from ._measurements import make_operator as make_operator
from ._measurements import simulate_measurements as simulate_measurements
from ._output import posterior_dataset as posterior_dataset
from ._signals import Signals as Signals
from ._signals import as_signals as as_signals
from ._signals import load_signals as load_signals
from ._signals import read_array as read_array

__all__ = [
    "GEOMETRY_KINDS",
    "OPERATORS",
    "Measurements",
    "Signals",
    "as_signals",
    "geometry_kind",
    "grid_from_dataset",
    "load_geometry",
    "load_measurements",
    "make_operator",
    "parse_image_size",
    "posterior_dataset",
    "read_array",
    "read_geometry",
    "save_geometry",
    "simulate_measurements",
    "load_signals",
]
