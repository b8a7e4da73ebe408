"""Where the data lives: the data root, the user cache, and file resolution with optional download.

The loaders look for a file (given relative to the data root, e.g. ``"mnist/t10k-labels-idx1-ubyte.gz"``)

1. under ``root`` when the caller passes one;
2. otherwise under the folder named by the environment variable ``MANIFOLD_PS_DATA`` (same layout
   as the shared data folder: ``mnist/``, ``bunny/``, ``era5/``, ``t2m/``, ``faces/``), then under
   the user cache (``$XDG_CACHE_HOME/manifold_ps``, by default ``~/.cache/manifold_ps``).

A missing file is downloaded into the cache from its canonical public source only when asked
(``download=True``); otherwise :class:`FileNotFoundError` says where it looked and how to get it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .registry import REGISTRY, download as _download, get_entry, verify as _verify

__all__ = ["DATA_ENV_VAR", "cache_root", "data_root", "search_roots", "resolve_file"]

DATA_ENV_VAR = "MANIFOLD_PS_DATA"
"""Environment variable naming the data folder."""


def cache_root() -> Path:
    """The user cache folder: ``$XDG_CACHE_HOME/manifold_ps``, else ``~/.cache/manifold_ps``.

    Example:
        >>> cache_root().name
        'manifold_ps'
    """
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache").expanduser() / "manifold_ps"


def data_root() -> Path:
    """The data folder: ``$MANIFOLD_PS_DATA`` when set, else :func:`cache_root`."""
    env = os.environ.get(DATA_ENV_VAR)
    return Path(env).expanduser() if env else cache_root()


def search_roots(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The folders searched for a data file, in order.

    Args:
        root: An explicit data root; when given it is the only folder searched.

    Returns:
        ``[root]``, or ``[$MANIFOLD_PS_DATA, cache_root()]`` (the first only when the variable is set).
    """
    if root is not None:
        return [Path(root).expanduser()]
    roots = []
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        roots.append(Path(env).expanduser())
    roots.append(cache_root())
    return roots


def resolve_file(
    relative_path: str,
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    verify: bool | None = None,
) -> Path:
    """Find a data file, downloading it into the cache when allowed.

    Args:
        relative_path: Path relative to the data root, e.g. ``"faces/olivettifaces.mat"``.
        root: Explicit data root (disables the environment variable and the cache).
        download: Fetch a missing registry file from its public source into the cache (or into
            ``root`` when given).
        verify: For registry files: ``None`` checks the sha256 once per process per (path, size,
            mtime); ``True`` always rehashes; ``False`` skips the check.

    Returns:
        The path of the file.

    Raises:
        FileNotFoundError: The file is missing (and not downloaded); the message names the file,
            the folders searched and how to get it.
        ValueError: The file fails its checksum.
    """
    relative_path = Path(relative_path).as_posix()
    entry = REGISTRY.get(relative_path)
    roots = search_roots(root)
    for folder in roots:
        candidate = folder / relative_path
        if candidate.exists():
            if entry is not None and verify is not False:
                _verify(candidate, entry, force=bool(verify))
            return candidate
    if download and entry is not None:
        target_root = Path(root).expanduser() if root is not None else cache_root()
        return _download(relative_path, target_root)
    raise FileNotFoundError(_missing_message(relative_path, root, roots))


def _missing_message(relative_path: str, root: str | os.PathLike[str] | None, roots: list[Path]) -> str:
    where = ", ".join(str(r / relative_path) for r in roots)
    if root is not None:
        origin = f"the root passed in ({root})"
    else:
        env = os.environ.get(DATA_ENV_VAR)
        origin = f"{DATA_ENV_VAR}={env!r} and the cache" if env else f"the cache ({DATA_ENV_VAR} is not set)"
    lines = [f"data file {relative_path!r} not found; looked in {origin}: {where}."]
    try:
        entry = get_entry(relative_path)
    except KeyError:
        entry = None
    lines.append(f"Set {DATA_ENV_VAR} to a folder holding {relative_path}")
    if entry is not None and entry.urls:
        lines[-1] += f", or call with download=True to fetch it from {entry.urls[0]}"
    elif entry is not None:
        lines[-1] += f" ({entry.note})"
    lines[-1] += "."
    return " ".join(lines)
