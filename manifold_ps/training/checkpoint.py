"""Atomic checkpoint files and their validated loading.

A checkpoint is a plain dictionary saved with :func:`torch.save`. Writing goes to a temporary
file in the same folder followed by :func:`os.replace`, so an interrupted write never leaves a
half-written ``checkpoint.pt`` behind. :func:`load_checkpoint` turns every way a file can be
unusable (missing, truncated, not a checkpoint, made for another geometry) into one clear error.
"""

from __future__ import annotations

import hashlib

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from .._files import atomic_open

__all__ = ["CHECKPOINT_FORMAT", "save_checkpoint", "load_checkpoint", "state_digest"]

CHECKPOINT_FORMAT = "manifold_ps.training/1"
"""Value of the ``"format"`` key of every training checkpoint."""


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, then rename).

    Args:
        state: Dictionary of tensors, numbers, strings, lists and dicts of them.
        path: Destination file; its folder is created if needed.

    Returns:
        The destination path.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> save_checkpoint({"format": CHECKPOINT_FORMAT, "step": 3}, folder / "c.pt").name
        'c.pt'
        >>> load_checkpoint(folder / "c.pt")["step"]
        3
    """
    path = Path(path)
    with atomic_open(path, fsync=True) as handle:
        torch.save(dict(state), handle)
    return path


def load_checkpoint(
    path: str | Path,
    *,
    fingerprint: str | None = None,
    map_location: str | torch.device | None = None,
    required_keys: Iterable[str] = ("format",),
) -> dict[str, Any]:
    """Load and validate a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: The checkpoint file.
        fingerprint: If given, the geometry fingerprint the checkpoint must have been made for.
        map_location: Passed to :func:`torch.load` (e.g. ``"cpu"``).
        required_keys: Keys the dictionary must hold.

    Returns:
        The checkpoint dictionary.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is corrupt, not a ``manifold_ps`` checkpoint, lacks a required key,
            or was made for another geometry.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated file, pickle of foreign objects, not a torch file at all
        raise ValueError(f"checkpoint {path} could not be read ({type(err).__name__}: {err}); the file is corrupt "
                         "(e.g. a copy cut short) or was not written by manifold_ps: restore it from a backup, or "
                         "delete it to train from the start") from err
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    missing = [key for key in required_keys if key not in state]
    if missing:
        raise ValueError(f"checkpoint {path} lacks the key(s) {missing}; it was not written by this "
                         f"version of manifold_ps (keys present: {sorted(state)[:12]})")
    stored = state.get("fingerprint", "")
    if fingerprint is not None and stored != fingerprint:
        raise ValueError(
            f"checkpoint {path} was made for the geometry with fingerprint {stored or '(none)'!r}, "
            f"but the given geometry has fingerprint {fingerprint or '(none)'!r}"
        )
    return state


def state_digest(module: torch.nn.Module) -> str:
    """A short hash of a module's state (parameters and buffers, bit for bit).

    Results derived from a trained model (e.g. tuned sampler settings) store it, so they are
    never reused for another model.

    Example:
        >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
        >>> b.load_state_dict(a.state_dict())
        <All keys matched successfully>
        >>> state_digest(a) == state_digest(b), len(state_digest(a))
        (True, 12)
    """
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:12]
