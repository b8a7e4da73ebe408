"""Bunny-MNIST inpainting (paper Table 2): MNIST digits painted on the 1889-vertex Stanford bunny,
30% of the vertices masked, sigma_y = 0.1. Trains the prior and the amortized flow (resuming
from ``--out``), then compares with DPS, MCG, RED-diff and harmonic interpolation.

    python benchmarks/bunny_mnist.py                    # cpu profile, ~30 min on 2 cores
    python benchmarks/bunny_mnist.py --profile smoke    # < 1 min
"""

import os

# Idle OpenMP threads spin by default; on a shared CPU that made training ~3x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from manifold_ps.benchmarking.cli import benchmark_main
from manifold_ps.benchmarking.workloads import bunny_mnist

if __name__ == "__main__":
    benchmark_main("bunny_mnist", bunny_mnist, description=__doc__,
                   # DPS and MCG at 1000 NFE take ~6 s per sample on 2 cores: 16 measurements per set keeps
                   # the whole cpu run (prior 11 min, flow 10 min, evaluation) within 30 minutes
                   profile_defaults={"cpu": {"eval.baseline_eval": 16}})
