"""Building a :class:`Config` from a profile, a TOML file and ``section.field=value`` overrides,
and the command-line options that do it.

Resolution order (later wins): the profile, per-script defaults, the ``--config`` file, the
convenience flags, the ``--set`` overrides.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Literal

from ._schema import PROFILES, SECTIONS, Config, get_profile

__all__ = ["apply_overrides", "parse_assignments", "load_config_file", "build_config", "config_from_dict",
           "flatten", "describe_settings", "add_config_arguments", "add_shortcuts", "config_from_args",
           "overrides_from_args", "command_from_args"]

_TOP = ("profile", "seed")

def _type_of(section: str | None, name: str) -> Any:
    cls = Config if section is None else SECTIONS[section]
    return typing.get_type_hints(cls)[name]


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """``value`` (a string from ``--set`` or a TOML value) as the type ``hint`` of field ``key``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            return None
        return _coerce(key, value, args[0])
    if origin is tuple:  # tuple[float, ...]: a TOML list, "a,b,c" or one number
        item = typing.get_args(hint)[0]
        items = value.split(",") if isinstance(value, str) else value
        if isinstance(items, (int, float)) and not isinstance(items, bool):
            items = (items,)
        if not isinstance(items, (list, tuple)) or not items:
            raise ValueError(f"{key}: {value!r} is not a non-empty list")
        return tuple(_coerce(key, v, item) for v in items)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ValueError(f"{key}: {value!r} is not one of {list(choices)}")
        return value
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
        raise ValueError(f"{key} cannot be none")
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value.strip()) if isinstance(value, str) else int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if hint is str:
            return str(value)
    except ValueError:
        raise ValueError(f"{key}: {value!r} is not a valid {getattr(hint, '__name__', hint)}") from None
    raise TypeError(f"{key}: unsupported field type {hint!r}")


def _split(key: str) -> tuple[str | None, str]:
    """``"flow.t_min"`` -> ``("flow", "t_min")``, ``"seed"`` -> ``(None, "seed")``; raises for unknown names."""
    if "." not in key:
        if key not in _TOP:
            raise ValueError(f"unknown setting {key!r}; top-level settings are {list(_TOP)}, the others are "
                             f"section.field with sections {list(SECTIONS)}")
        return None, key
    section, name = key.split(".", 1)
    if section not in SECTIONS:
        raise ValueError(f"unknown section {section!r} in {key!r}; choose one of {list(SECTIONS)}")
    names = [f.name for f in fields(SECTIONS[section])]
    if name not in names:
        raise ValueError(f"unknown field {key!r}; the fields of [{section}] are {names}")
    return section, name


def apply_overrides(config: Config, overrides: Mapping[str, Any]) -> Config:
    """``config`` with ``{"section.field": value}`` overrides (values parsed to the field's type).

    Raises:
        ValueError: naming an unknown section or field, or a value of the wrong type.

    Example:
        >>> from manifold_ps.config import get_profile
        >>> apply_overrides(get_profile("smoke"), {"flow.t_min": "0.01", "seed": 3}).flow.t_min
        0.01
    """
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        section, name = _split(key)
        parsed = _coerce(key, value, _type_of(section, name))
        if section is None:
            top[name] = parsed
        else:
            sections.setdefault(section, {})[name] = parsed
    return replace(config, **top, **{s: replace(getattr(config, s), **v) for s, v in sections.items()})


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """``["flow.t_min=0.01", ...]`` -> ``{"flow.t_min": "0.01", ...}`` (later items win)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected section.field=value")
        out[key.strip()] = value.strip()
    return out


def flatten(data: Mapping[str, Any]) -> dict[str, Any]:
    """Nested ``{"flow": {"t_min": ...}}`` -> ``{"flow.t_min": ...}`` (one level of sections)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The settings of a TOML file as ``{"section.field": value}`` (``.json`` files are read too).

    TOML has no null: write ``"none"`` for an optional field that should be unset.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"configuration file {path} does not exist")
    if path.suffix == ".json":
        return flatten(json.loads(path.read_text()))
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ModuleNotFoundError(f"reading {path} needs Python 3.11 or the 'tomli' package "
                                      "(pip install tomli)") from None
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from None
    return flatten(data)


def build_config(profile: str = "cpu", *, file: str | Path | None = None, overrides: Mapping[str, Any] = (),
                 defaults: Mapping[str, Any] = ()) -> Config:
    """The profile, then ``defaults``, the ``file``'s settings and ``overrides`` merged over it."""
    config = get_profile(profile)
    config = apply_overrides(config, dict(defaults))
    if file is not None:
        try:
            config = apply_overrides(config, load_config_file(file))
        except ValueError as err:
            raise ValueError(f"{file}: {err}") from None
    return apply_overrides(config, dict(overrides))


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """A :class:`Config` from :meth:`Config.to_dict` output (e.g. a saved ``config.json``)."""
    return apply_overrides(Config(), {k: v for k, v in flatten(data).items() if k.split(".")[0] in (*_TOP, *SECTIONS)})


def describe_settings(config: Config, width: int = 100) -> str:
    """Every setting of ``config`` as ``section.field=value`` lines (the ``--help`` epilog)."""
    import textwrap

    lines = [f"settings (--set NAME=VALUE; the values of the {config.profile!r} profile):",
             textwrap.fill(" ".join(f"{k}={config.to_dict()[k]!r}" for k in ("seed",)), width, initial_indent="  ")]
    for section in SECTIONS:
        items = " ".join(f"{section}.{k}={v!r}" for k, v in config.to_dict()[section].items())
        lines.append(textwrap.fill(items, width, initial_indent="  ", subsequent_indent="    ",
                                   break_on_hyphens=False))  # a value like 'per-component' stays whole
    return "\n".join(lines)


def add_config_arguments(parser: argparse.ArgumentParser, *, default_profile: str = "cpu") -> None:
    """Add ``--profile``, ``--config FILE.toml`` and repeated ``--set section.field=value`` (and,
    when the parser has no epilog, the list of every setting as its epilog)."""
    if parser.epilog is None:
        parser.epilog = describe_settings(get_profile(default_profile))
    parser.add_argument("--profile", choices=sorted(PROFILES), default=default_profile,
                        help="named configuration: smoke (< 1 min, CI), cpu (~30 min on 2 cores), paper (GPU budgets)")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE.toml",
                        help="TOML file with [prior] / [flow] / [eval] tables (and seed) merged over the profile")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one setting, e.g. --set flow.t_min=0.01 (repeatable; 'none' unsets)")


def add_shortcuts(parser: argparse.ArgumentParser, shortcuts: Mapping[str, str]) -> dict[str, str]:
    """Add a convenience option for single fields: ``{"--train-steps|--steps": "prior.train_steps"}``
    (the first spelling is shown in ``--help``, the others are accepted too).

    The values are parsed as ``--set`` values are (a bool field's flag takes no value).

    Returns:
        Option dest -> field, for :func:`config_from_args`.
    """
    dests: dict[str, str] = {}
    for spellings, key in shortcuts.items():
        section, name = _split(key)
        hint = _type_of(section, name)
        dest = "shortcut_" + key.replace(".", "_")
        kwargs: dict[str, Any] = {"dest": dest, "default": None}
        if hint is bool:
            kwargs.update(action="store_const", const="true")
        else:
            kwargs["metavar"] = name.upper()
            if typing.get_origin(hint) is Literal:
                kwargs["choices"] = typing.get_args(hint)
        for i, flag in enumerate(spellings.split("|")):
            parser.add_argument(flag, **kwargs, help=f"sets {key} (= --set {key}=...)" if i == 0 else argparse.SUPPRESS)
        dests[dest] = key
    return dests


def config_from_args(args: argparse.Namespace, flags: Mapping[str, str] = (),
                     defaults: Mapping[str, Any] = ()) -> Config:
    """The :class:`Config` of parsed arguments.

    Args:
        args: Parsed with :func:`add_config_arguments` (and the ``flags``).
        flags: Convenience option dest -> the ``section.field`` it sets (when given).
        defaults: Per-script ``{"section.field": value}`` applied over the profile, before the file.
    """
    return build_config(args.profile, file=args.config, overrides=overrides_from_args(args, flags), defaults=defaults)


def overrides_from_args(args: argparse.Namespace, flags: Mapping[str, str] = ()) -> dict[str, str]:
    """The ``{"section.field": value}`` overrides that parsed arguments give (the convenience
    ``flags``, then the ``--set`` ones), as written on the command line."""
    from_flags = {key: getattr(args, dest) for dest, key in dict(flags).items() if getattr(args, dest) is not None}
    return {**from_flags, **parse_assignments(args.overrides)}


def command_from_args(program: Sequence[str], args: argparse.Namespace, flags: Mapping[str, str] = ()) -> list[str]:
    """A command line that gives the same configuration as parsed arguments: ``program``, then
    ``--profile``, ``--config`` and one ``--set`` per override (flags written as ``--set``).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_config_arguments(parser)
        >>> flags = add_shortcuts(parser, {"--seed": "seed"})
        >>> command_from_args(["run.py"], parser.parse_args(["--seed", "3", "--set", "flow.lr=0.1"]), flags)
        ['run.py', '--profile', 'cpu', '--set', 'seed=3', '--set', 'flow.lr=0.1']
    """
    config = [] if args.config is None else ["--config", str(args.config)]
    sets = [a for key, value in overrides_from_args(args, flags).items() for a in ("--set", f"{key}={value}")]
    return [*program, "--profile", args.profile, *config, *sets]
