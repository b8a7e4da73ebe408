"""Data loading: real data files (MNIST, Stanford bunny, temperature fields, faces), found through
``$MANIFOLD_PS_DATA`` or downloaded into a user cache and verified against pinned checksums.

See :mod:`manifold_ps.datasets.registry` for sources and licences of every file.
"""

from .bunny import BUNNY_FILES, BunnyMNIST, bunny_path, load_bunny, read_obj, read_ply
from .faces import OLIVETTI_FILE, load_olivetti, read_olivetti
from .mnist import MNIST_FILES, load_mnist, mnist_padded_32, parse_idx, read_idx
from .paths import DATA_ENV_VAR, cache_root, data_root, resolve_file, search_roots
from .registry import REGISTRY, RegistryEntry, download, get_entry, sha256_file, verify
from .signals import SignalDataset
from .temperature import (
    GASP_LATITUDES,
    GASP_LONGITUDES,
    GRIDDED_DATASETS,
    T_MAX,
    T_MIN,
    TemperatureData,
    check_gasp_grid,
    from_kelvin,
    load_era5_field,
    load_gasp,
    load_gasp_folder,
    load_gridded_temperature,
    read_gasp_npz,
    to_kelvin,
)

__all__ = [
    # paths and registry
    "DATA_ENV_VAR",
    "cache_root",
    "data_root",
    "search_roots",
    "resolve_file",
    "REGISTRY",
    "RegistryEntry",
    "get_entry",
    "sha256_file",
    "verify",
    "download",
    # containers
    "SignalDataset",
    # MNIST
    "MNIST_FILES",
    "parse_idx",
    "read_idx",
    "load_mnist",
    "mnist_padded_32",
    # bunny
    "BUNNY_FILES",
    "bunny_path",
    "read_ply",
    "read_obj",
    "load_bunny",
    "BunnyMNIST",
    # temperature
    "T_MIN",
    "T_MAX",
    "GASP_LATITUDES",
    "GASP_LONGITUDES",
    "GRIDDED_DATASETS",
    "TemperatureData",
    "to_kelvin",
    "from_kelvin",
    "check_gasp_grid",
    "read_gasp_npz",
    "load_gasp_folder",
    "load_gasp",
    "load_gridded_temperature",
    "load_era5_field",
    # faces
    "OLIVETTI_FILE",
    "read_olivetti",
    "load_olivetti",
]
