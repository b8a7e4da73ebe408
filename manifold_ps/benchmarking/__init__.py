"""Benchmark harness: the fixed results schema, evaluation of posterior samplers, and the
end-to-end workload pipeline shared by the scripts in ``benchmarks/``."""

from .results import REQUIRED_METHOD_KEYS as REQUIRED_METHOD_KEYS
from .results import BenchmarkResults as BenchmarkResults
from .results import MethodResult as MethodResult
from .results import calibration_curves as calibration_curves
from .results import coverage_key as coverage_key
from .results import environment_versions as environment_versions
from .results import validate_results as validate_results
from .results import write_results as write_results

__all__ = [
    "REQUIRED_METHOD_KEYS",
    "BenchmarkResults",
    "MethodResult",
    "calibration_curves",
    "coverage_key",
    "environment_versions",
    "validate_results",
    "write_results",
]
