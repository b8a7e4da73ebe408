"""The fixed ``results.json`` schema of the benchmarks, and its Markdown rendering.

Schema (stable across versions so results can be compared)::

    {"workload": str, "profile": str, "device": str, "protocol": {...},
     "methods": {name: {"psnr": float, "ssim": float | null, "mse": float,
                        "seconds_per_sample": float, "nfe": int, ...extra floats}},
     "config": {...}, "versions": {...}}

Among the extra floats of a method with posterior draws is its calibration curve:
``coverage<P>`` is the fraction of true values inside the draws' central ``P``% intervals
(``P`` in 50, 80, 90, 95), ``coverage<P>_missing`` the same over the vertices a mask hides, and
``coverage<P>_exact`` / ``coverage<P>_exact_missing`` that of the exact normal intervals of a
Gaussian posterior (its closed-form mean and std); :func:`coverage_key` names them and
:func:`calibration_curves` reads them back.

A benchmark may report several evaluation sets (e.g. the paper's protocol and a held-out split);
each is one such document, collected in a list under ``"evaluations"`` of the written file when
there is more than one.
"""

from __future__ import annotations

import json
import math
import platform
import re
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
    "coverage_key",
    "calibration_curves",
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
        to our one draw and to our mean, coverage of 90% intervals (all / missing vertices); then,
        for the methods with draws, their calibration curves and mean posterior std."""
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
        lines += _calibration_markdown(self.methods, self.protocol.get("n_posterior"))
        return "\n".join(lines)


def coverage_key(level: float, *, exact: bool = False, missing: bool = False) -> str:
    """The ``results.json`` key of the coverage at a nominal level.

    Example:
        >>> coverage_key(0.9), coverage_key(0.5, missing=True), coverage_key(0.95, exact=True, missing=True)
        ('coverage90', 'coverage50_missing', 'coverage95_exact_missing')
    """
    return f"coverage{100 * level:g}" + ("_exact" if exact else "") + ("_missing" if missing else "")


_COVERAGE_KEY = re.compile(r"^coverage(?P<percent>\d+(?:\.\d+)?)(?P<exact>_exact)?(?P<missing>_missing)?$")

_EXACT_SUFFIX = " (exact normal)"
"""Appended to a method's name for the curve of its exact normal intervals."""


def calibration_curves(methods: Mapping[str, MethodResult | Mapping[str, Any]], *, missing: bool = False
                       ) -> dict[str, tuple[list[float], list[float]]]:
    """The calibration curves recorded for the methods: nominal levels and empirical coverage.

    Args:
        methods: Method name -> :class:`MethodResult` or its ``results.json`` entry.
        missing: Read the curves over the missing vertices (``coverage<P>_missing``).

    Returns:
        ``{name: (levels, coverages)}`` with levels ascending in ``(0, 1)``, for every method with
        at least one coverage; a method with the coverage of exact normal intervals gets a second
        curve named ``name + " (exact normal)"``.
    """
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for name, result in methods.items():
        entry = result.extra if isinstance(result, MethodResult) else result
        found: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for key, value in entry.items():
            m = _COVERAGE_KEY.match(key)
            if m is not None and bool(m.group("missing")) == missing and value is not None:
                found[bool(m.group("exact"))].append((float(m.group("percent")) / 100, float(value)))
        for exact, points in found.items():
            if points:
                points.sort()
                curves[name + (_EXACT_SUFFIX if exact else "")] = ([p[0] for p in points], [p[1] for p in points])
    return curves


def _calibration_markdown(methods: Mapping[str, MethodResult], n_draws: Any = None) -> list[str]:
    """A table of the calibration curves (all / missing vertices) and the mean posterior std on
    missing / observed vertices, one row per curve; nothing when no method has draws."""
    over_all, over_missing = calibration_curves(methods), calibration_curves(methods, missing=True)
    if not over_all and not over_missing:
        return []
    levels = sorted({lv for curves in (over_all, over_missing) for lvs, _ in curves.values() for lv in lvs})
    both = bool(over_missing)
    lines = [
        "",
        "Calibration: fraction of true values inside the central intervals of the draws at each nominal level"
        + (" (all / missing vertices)" if both else "")
        + "; a calibrated sampler matches the level"
        + (f" (with {n_draws} draws, about the level × {n_draws - 1}/{n_draws + 1}: "
           f"{0.9 * (n_draws - 1) / (n_draws + 1):.3f} at 90%; exact normal intervals have no such bias)"
           if isinstance(n_draws, int) and n_draws > 1 else "")
        + ". Posterior std: mean over " + ("missing / observed vertices." if both else "all vertices."),
        "",
        "| method | " + " | ".join(f"{100 * lv:g}%" for lv in levels) + " | posterior std |",
        "|---|" + "---:|" * (len(levels) + 1),
    ]
    for name in dict.fromkeys([*over_all, *over_missing]):
        cells = []
        for lv in levels:
            a = _at(over_all.get(name), lv)
            m = _at(over_missing.get(name), lv)
            cells.append("–" if a is None and m is None else
                         " / ".join("–" if v is None else f"{v:.2f}" for v in ((a, m) if both else (a,))))
        extra = {} if name.endswith(_EXACT_SUFFIX) else methods[name].extra
        if both and "std_missing" in extra and "std_observed" in extra:
            std = f"{extra['std_missing']:.3g} / {extra['std_observed']:.3g}"
        else:
            std = f"{extra['std_mean']:.3g}" if "std_mean" in extra and not both else "–"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {std} |")
    return lines


def _at(curve: tuple[list[float], list[float]] | None, level: float) -> float | None:
    if curve is None:
        return None
    for lv, value in zip(*curve):
        if math.isclose(lv, level):
            return value
    return None


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


def _cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment_versions() -> dict[str, str]:
    """Versions of Python, torch and the package, and the processor, for the ``versions`` field.

    ``cpu_capability`` is the vector instruction set torch's CPU kernels use (``AVX2``,
    ``AVX512``, ...): training repeats bit for bit only on the same one, since the kernels of
    another round differently.
    """
    import numpy
    import torch

    from .. import __version__

    return {
        "manifold_ps": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
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
