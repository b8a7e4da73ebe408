"""How a benchmark run is repeated exactly: the steps each training stage did, and the settings
and command that repeat them.

The ``minutes`` caps stop training at a step that depends on the machine's speed, while the
learning-rate schedule spans ``train_steps``; ``prior.stop_step`` / ``flow.stop_step`` with the
caps off stop at the recorded steps on any machine. :func:`training_record` is what
``results.json`` holds under ``config.training``.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import Config
from ..training import load_checkpoint
from .workloads import Workload

__all__ = ["steps_done", "training_record"]


def steps_done(folder: Path) -> int | None:
    """Optimizer steps a training stage's ``folder`` holds: as its ``complete`` file records them,
    else its checkpoint's (``None`` when neither is there)."""
    complete = folder / "complete"
    if complete.is_file():
        done = json.loads(complete.read_text() or "{}")
        if "steps" in done:
            return int(done["steps"])
    checkpoint = folder / "checkpoint.pt"
    return int(load_checkpoint(checkpoint, map_location="cpu")["step"]) if checkpoint.is_file() else None


def _stage_steps(folder: Path, train_steps: int, stop_step: int | None, minutes: float | None) -> dict[str, Any]:
    """What a training stage did: the steps done and what stopped it."""
    steps = steps_done(folder)
    if steps is None:
        stopped_by = "unknown (no step count in the folder)"
    elif steps >= train_steps:
        stopped_by = "train_steps"
    elif stop_step is not None and steps >= stop_step:
        stopped_by = "stop_step"
    else:
        stopped_by = "minutes"
    return {"folder": str(folder), "steps": steps, "train_steps": train_steps, "stop_step": stop_step,
            "minutes": minutes, "stopped_by": stopped_by}


def training_record(workload: Workload, config: Config, out: Path,
                    command: Sequence[str] | None = None) -> dict[str, Any]:
    """The steps each training stage of a run in ``out`` did, and how to repeat the run exactly.

    The minutes caps stop training at a step that depends on the machine's speed; the settings
    ``prior.stop_step`` / ``flow.stop_step`` (one per task) with the caps off repeat those steps
    on any machine.

    Args:
        workload: The workload.
        config: The run's configuration.
        out: The run folder.
        command: The command line that ran this configuration, without ``--out`` (``None``: only
            the overrides are recorded).

    Returns:
        ``{"prior": {...}, "flows": {task: {...}}, "reproduce": {"overrides": {...}, "command": str}}``
        where each stage records ``steps``, ``train_steps``, ``stop_step``, ``minutes`` and
        ``stopped_by`` (``"train_steps"``, ``"stop_step"`` or ``"minutes"``).
    """
    shares = sum(t.flow_share for t in workload.tasks)
    minutes = config.flow.minutes
    record: dict[str, Any] = {
        "prior": _stage_steps(out / "prior", config.prior.train_steps, config.prior.stop_step, config.prior.minutes),
        "flows": {t.name: _stage_steps(out / t.name, config.flow.train_steps,
                                       config.flow.stop_step_of(i, len(workload.tasks)),
                                       None if minutes is None else minutes * t.flow_share / shares)
                  for i, t in enumerate(workload.tasks)},
    }
    flow_steps = [f["steps"] for f in record["flows"].values()]
    if record["prior"]["steps"] is None or None in flow_steps:
        record["reproduce"] = {"note": "a stage's step count is unknown (trained before it was recorded)"}
        return record
    overrides = {"prior.minutes": "none", "prior.stop_step": str(record["prior"]["steps"]), "flow.minutes": "none",
                 "flow.stop_step": ",".join(str(s) for s in flow_steps)}
    record["reproduce"] = {"overrides": overrides}
    if command is not None:
        kept: list[str] = []  # the command's own settings of these fields are replaced
        for arg in command:
            if kept and kept[-1] == "--set" and arg.partition("=")[0] in overrides:
                kept.pop()
            else:
                kept.append(arg)
        args = [*kept, *(a for k, v in overrides.items() for a in ("--set", f"{k}={v}")), "--out", f"{out}-rerun"]
        record["reproduce"]["command"] = shlex.join(args)
    return record
