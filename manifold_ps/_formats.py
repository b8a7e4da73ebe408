"""What kind of manifold_ps file a path holds, for errors that say how to load it (private).

Every file the package saves carries a ``"format"`` key ``"manifold_ps.<kind>/<version>"``. A
loader given another kind names that kind and the right loader; a loader given another version
says how to convert the file or retrain.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["KINDS", "check_format"]

KINDS: dict[str, tuple[str, str]] = {
    "manifold_ps.prior": ("a diffusion prior file", "load it with DiffusionPrior.load"),
    "manifold_ps.AmortizedPosterior": ("a posterior sampler file", "load it with AmortizedPosterior.load"),
    "manifold_ps.GaussianPrior": ("a Gaussian prior file", "load it with GaussianPrior.load"),
    "manifold_ps.training": ("a training checkpoint",
                             "rerun the training command (or call) that wrote it: it resumes and, when finished, "
                             "writes prior.pt / posterior.pt beside it"),
    "manifold_ps.measurements": ("a measurements file", "load it with manifold_ps.io.load_measurements"),
}
"""Format name (without version) -> (what the file is, how to load it)."""


def check_format(blob: Any, path: str | Path, expected: str, loader: str) -> None:
    """Raise ``ValueError`` unless ``blob["format"] == expected``, saying what the file is instead.

    Args:
        blob: What :func:`torch.load` returned.
        path: The file (named in the message).
        expected: The format this loader reads, e.g. ``"manifold_ps.prior/1"``.
        loader: The loader's name, e.g. ``"DiffusionPrior.load"``.

    Example:
        >>> check_format({"format": "manifold_ps.AmortizedPosterior/1"}, "run/posterior.pt",
        ...              "manifold_ps.prior/1", "DiffusionPrior.load")
        Traceback (most recent call last):
        ...
        ValueError: run/posterior.pt is a posterior sampler file, not what DiffusionPrior.load reads; load it with AmortizedPosterior.load
    """
    found = blob.get("format") if isinstance(blob, Mapping) else None
    if found == expected:
        return
    name, _, version = str(found).partition("/")
    want_name, _, want_version = expected.partition("/")
    if found is None:
        held = f"a {type(blob).__name__}" + (f" with keys {sorted(map(str, blob))[:6]}" if isinstance(blob, Mapping) else "")
        raise ValueError(f"{path} is not a file saved by manifold_ps ({held}, no 'format' key); a bare state_dict "
                         f"loads into a freshly built model with load_state_dict (then save() it so that {loader} "
                         "reads it), otherwise retrain")
    if name == want_name:
        raise ValueError(f"{path} was written in format version {version} and this version of manifold_ps reads "
                         f"{want_version}: load it with the version that wrote it and save it again, or retrain")
    if name in KINDS:
        what, how = KINDS[name]
        raise ValueError(f"{path} is {what}, not what {loader} reads; {how}")
    raise ValueError(f"{path} has the unknown format {found!r}; {loader} reads {expected!r}")
