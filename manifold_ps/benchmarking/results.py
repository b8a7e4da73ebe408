"""The fixed ``results.json`` schema of the benchmarks, and its Markdown rendering.

Schema (stable across versions so results can be compared)::

    {"workload": str, "profile": str, "device": str, "protocol": {...},
     "methods": {name: {"psnr": float, "ssim": float | null, "mse": float,
                        "seconds_per_sample": float, "nfe": int, ...extra floats}},
     "config": {...}, "versions": {...}}

A benchmark may report several evaluation sets (e.g. the paper's protocol and a held-out split);
each is one such document, collected in a list under ``"evaluations"`` of the written file when
there is more than one.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._files import atomic_write

__all__ = [
    "MethodResult",
    "BenchmarkResults",
    "validate_results",
    "environment_versions",
    "write_results",
    "REQUIRED_METHOD_KEYS",
]

REQUIRED_METHOD_KEYS = ("psnr", "ssim", "mse", "seconds_per_sample", "nfe")
"""Keys every method entry of ``results.json`` must have."""


@dataclass
class MethodResult:
    """Quality and cost of one method on one evaluation set.

    Attributes:
        psnr: Mean PSNR in dB over the evaluated measurements (valid vertices only).
        ssim: Mean SSIM for grid-shaped data, ``None`` on meshes.
        mse: Mean squared error.
        seconds_per_sample: Wall-clock seconds per posterior sample (or per estimate).
        nfe: Network evaluations per sample.
        extra: Further numbers (coverage, PSNR interval and spread, paired differences ...), all floats.
        per_measurement: PSNR of each measurement (for paired comparisons; not written).
    """

    psnr: float
    ssim: float | None
    mse: float
    seconds_per_sample: float
    nfe: int
    extra: dict[str, float] = field(default_factory=dict)
    per_measurement: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = {"psnr": self.psnr, "ssim": self.ssim, "mse": self.mse, "seconds_per_sample": self.seconds_per_sample,
               "nfe": self.nfe}
        out.update(self.extra)
        return out


@dataclass
class BenchmarkResults:
    """One evaluation set of one benchmark run, in the fixed schema."""

    workload: str
    profile: str
    device: str
    protocol: dict[str, Any]
    methods: dict[str, MethodResult]
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "profile": self.profile,
            "device": self.device,
            "protocol": self.protocol,
            "methods": {k: v.to_dict() for k, v in self.methods.items()},
            "config": self.config,
            "versions": self.versions or environment_versions(),
        }

    def to_markdown(self) -> str:
        """A Markdown table: one row per method, PSNR with its 95% interval, the paired difference
        to our one draw and to our mean, coverage of 90% intervals (all / missing vertices)."""
        proto = ", ".join(f"{k}={v}" for k, v in self.protocol.items())
        lines = [
            f"**{self.workload}** — profile `{self.profile}` on {self.device}; {proto}",
            "",
            "| method | PSNR (dB) [95% CI] | raw PSNR | Δ vs ours N=1 | Δ vs ours mean | SSIM | cover 90% (all / missing) "
            "| s / sample | NFE |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in self.methods.items():
            e = r.extra
            ssim = "–" if r.ssim is None else f"{r.ssim:.3f}"
            cover = "–" if "coverage90" not in e else f"{e['coverage90']:.2f}" + (
                f" / {e['coverage90_missing']:.2f}" if "coverage90_missing" in e else "")
            lines.append(
                f"| {name} | {_with_interval(r.psnr, e, 'psnr')} | {e.get('psnr_raw', r.psnr):.2f} "
                f"| {_with_interval(e.get('diff_aps_n1'), e, 'diff_aps_n1', signed=True)} "
                f"| {_with_interval(e.get('diff_aps_n128'), e, 'diff_aps_n128', signed=True)} "
                f"| {ssim} | {cover} | {_fmt_seconds(r.seconds_per_sample)} | {r.nfe} |"
            )
        return "\n".join(lines)


def _with_interval(value: float | None, extra: dict[str, float], key: str, *, signed: bool = False) -> str:
    if value is None:
        return "–"
    fmt = "{:+.2f}" if signed else "{:.2f}"
    text = fmt.format(value)
    if f"{key}_low" in extra and f"{key}_high" in extra:
        text += f" [{fmt.format(extra[key + '_low'])}, {fmt.format(extra[key + '_high'])}]"
    return text


def _fmt_seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def validate_results(doc: Mapping[str, Any], *, required_methods: tuple[str, ...] = ()) -> None:
    """Check a results document against the schema.

    Raises:
        ValueError: naming the first missing key, wrong type or non-finite number.

    Example:
        >>> validate_results({"workload": "w", "profile": "smoke", "device": "cpu", "protocol": {},
        ...     "methods": {"m": {"psnr": 20.0, "ssim": None, "mse": 0.01,
        ...                       "seconds_per_sample": 0.1, "nfe": 1}},
        ...     "config": {}, "versions": {}})
    """
    for key, typ in (("workload", str), ("profile", str), ("device", str), ("protocol", dict),
                     ("methods", dict), ("config", dict), ("versions", dict)):
        if key not in doc:
            raise ValueError(f"results are missing the key {key!r}")
        if not isinstance(doc[key], typ):
            raise ValueError(f"results[{key!r}] must be a {typ.__name__}, got {type(doc[key]).__name__}")
    missing = [m for m in required_methods if m not in doc["methods"]]
    if missing:
        raise ValueError(f"results lack the methods {missing}; present: {sorted(doc['methods'])}")
    for name, entry in doc["methods"].items():
        for key in REQUIRED_METHOD_KEYS:
            if key not in entry:
                raise ValueError(f"method {name!r} lacks {key!r}")
        for key, value in entry.items():
            if key == "ssim" and value is None:
                continue
            if key == "nfe":
                if not isinstance(value, int) or value < 0:
                    raise ValueError(f"method {name!r}: nfe must be a non-negative int, got {value!r}")
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"method {name!r}: {key} must be a finite number, got {value!r}")


def environment_versions() -> dict[str, str]:
    """Versions of Python, torch and the package, for the ``versions`` field."""
    import numpy
    import torch

    from .. import __version__

    return {
        "manifold_ps": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def write_results(evaluations: list[BenchmarkResults], out_dir: str | Path, *, title: str) -> dict[str, Any]:
    """Write ``results.json`` (the first evaluation at the top level, all under ``evaluations``)
    and ``results.md`` atomically into ``out_dir``; return the JSON document."""
    if not evaluations:
        raise ValueError("write_results needs at least one evaluation")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    docs = [e.to_dict() for e in evaluations]
    for d in docs:
        validate_results(d)
    doc = dict(docs[0])
    doc["evaluations"] = docs
    md = "\n\n".join([f"# {title}"] + [e.to_markdown() for e in evaluations]) + "\n"
    atomic_write(out / "results.json", json.dumps(doc, indent=2, sort_keys=False))
    atomic_write(out / "results.md", md)
    return doc
