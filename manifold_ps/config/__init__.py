"""The run configuration shared by the Python API, the ``manifold-ps`` command line and the
benchmarks: typed frozen dataclasses (one per stage), the named profiles ``smoke`` / ``cpu`` /
``paper``, TOML files and ``section.field=value`` overrides, and the rerun check.

Library constructors keep plain keyword arguments; a :class:`Config` lives at the edges and hands
them out (:meth:`PriorConfig.network_kwargs`, :meth:`FlowConfig.trainer_kwargs`, ...).
"""

from ._legacy import LEGACY_NAMES as LEGACY_NAMES
from ._legacy import from_legacy_profile as from_legacy_profile
from ._overrides import add_config_arguments as add_config_arguments
from ._overrides import add_shortcuts as add_shortcuts
from ._overrides import apply_overrides as apply_overrides
from ._overrides import build_config as build_config
from ._overrides import command_from_args as command_from_args
from ._overrides import config_from_args as config_from_args
from ._overrides import config_from_dict as config_from_dict
from ._overrides import describe_settings as describe_settings
from ._overrides import flatten as flatten
from ._overrides import load_config_file as load_config_file
from ._overrides import overrides_from_args as overrides_from_args
from ._overrides import parse_assignments as parse_assignments
from ._schema import PROFILES as PROFILES
from ._schema import SECTIONS as SECTIONS
from ._schema import Config as Config
from ._schema import EvalConfig as EvalConfig
from ._schema import FlowConfig as FlowConfig
from ._schema import PriorConfig as PriorConfig
from ._schema import get_profile as get_profile
from ._stored import ADDED as ADDED
from ._stored import MAY_GROW as MAY_GROW
from ._stored import OBSERVE_ONLY as OBSERVE_ONLY
from ._stored import check_same_run as check_same_run
from ._stored import read_config as read_config
from ._stored import write_config as write_config

__all__ = [
    "ADDED",
    "LEGACY_NAMES",
    "MAY_GROW",
    "OBSERVE_ONLY",
    "PROFILES",
    "SECTIONS",
    "Config",
    "EvalConfig",
    "FlowConfig",
    "PriorConfig",
    "add_config_arguments",
    "add_shortcuts",
    "apply_overrides",
    "build_config",
    "check_same_run",
    "command_from_args",
    "config_from_args",
    "config_from_dict",
    "describe_settings",
    "flatten",
    "from_legacy_profile",
    "get_profile",
    "load_config_file",
    "overrides_from_args",
    "parse_assignments",
    "read_config",
    "write_config",
]
