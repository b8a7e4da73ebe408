"""Figures people want to look at: signals on meshes, global maps, images, posterior rows,
calibration curves."""

from .calibration import calibration_figure as calibration_figure
from .plots import offline_coastlines as offline_coastlines
from .plots import plot_image as plot_image
from .plots import plot_mesh_signal as plot_mesh_signal
from .plots import plot_sphere_map as plot_sphere_map
from .plots import posterior_row_figure as posterior_row_figure

__all__ = ["plot_mesh_signal", "plot_sphere_map", "plot_image", "posterior_row_figure", "offline_coastlines",
           "calibration_figure"]
