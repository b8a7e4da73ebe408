"""The configuration stored beside a result, and the rule for a rerun into the same folder:
the same result-changing settings resume, a difference is refused, naming every field."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._files import atomic_write
from ._overrides import flatten

__all__ = ["OBSERVE_ONLY", "MAY_GROW", "ADDED", "write_config", "read_config", "check_same_run"]

OBSERVE_ONLY = frozenset({"profile", "prior.minutes", "prior.stop_step", "prior.log_every", "prior.checkpoint_every",
                          "flow.minutes", "flow.stop_step", "flow.log_every", "flow.checkpoint_every"})
"""Fields that only observe or budget a run (where it stops, how it logs): a rerun may change them."""

MAY_GROW = {"prior.train_steps": ("prior.warmup_steps", "prior.ema_decay"),
            "flow.train_steps": ("flow.warmup_steps", "flow.ema_decay")}
"""Fields a rerun may increase (it extends the run), with the fields derived from them."""


ADDED = {"flow.prior_term": "elbo", "flow.entropy_gradient": "total", "flow.likelihood": "denoised",
         "flow.base_precision": "float64", "prior.time_sampling": "log_snr", "prior.loss_weighting": "edm",
         "prior.mixture_components": 12, "prior.mixture_covariance": "per-component",
         "prior.mixture_shrinkage": [0.25, 0.5, 0.75, 1.0], "prior.mixture_rank": None}
"""Fields added after runs were recorded, with the value that does what the code did before them:
a stored configuration without the field matches a request holding that value."""


def write_config(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write a resolved configuration (plain data) as JSON, atomically."""
    return atomic_write(path, json.dumps(data, indent=2) + "\n")


def read_config(path: str | Path) -> dict[str, Any] | None:
    """A configuration written by :func:`write_config`, or ``None`` when the file is missing."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def check_same_run(stored: Mapping[str, Any], requested: Mapping[str, Any], folder: str | Path, *,
                   unresolved: Mapping[str, Any] | None = None) -> None:
    """Refuse to continue the run in ``folder`` when a result-changing setting differs.

    Compares the stored resolved configuration with the requested one, field by field (nested
    sections compared as ``section.field``). Fields in :data:`OBSERVE_ONLY` may differ; those in
    :data:`MAY_GROW` may increase, and then the fields derived from them may follow when the
    request leaves them derived (``None`` in ``unresolved``). A field of :data:`ADDED` missing from
    an older record counts as its old behaviour; other keys present on one side only are
    differences too.

    Raises:
        ValueError: naming every differing field (old -> new) and the folder.

    Example:
        >>> check_same_run({"flow": {"t_min": 0.02}}, {"flow": {"t_min": 0.03}}, "runs/x")
        Traceback (most recent call last):
        ...
        ValueError: the run in runs/x was made with other settings (flow.t_min 0.02 -> 0.03); ...
    """
    # compared as JSON stores them: a tuple setting reads back from config.json as a list
    had, want = (json.loads(json.dumps(flatten(d), default=str)) for d in (stored, requested))
    had.update({k: v for k, v in ADDED.items() if k not in had and k in want and k.split(".")[0] in stored})
    raw = flatten(unresolved or {})
    free = set(OBSERVE_ONLY)
    for key, derived in MAY_GROW.items():
        if key in had and key in want and want[key] >= had[key]:
            free.add(key)
            free.update(d for d in derived if raw.get(d, "unset") is None)
    diff = [f"{k} {had.get(k)!r} -> {want.get(k)!r}" for k in sorted(set(had) | set(want))
            if k not in free and had.get(k) != want.get(k)]
    if diff:
        raise ValueError(f"the run in {folder} was made with other settings ({', '.join(diff)}); delete {folder} "
                         "to start it again, or use another --out")
