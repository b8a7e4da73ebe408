"""Bunny-MNIST inpainting (paper Table 2): MNIST digits painted on the 1889-vertex Stanford bunny,
30% of the vertices masked, sigma_y = 0.1. Trains the prior and the amortized flow (resuming
from ``--out``), then compares with DPS, MCG, RED-diff and harmonic interpolation.

    python benchmarks/bunny_mnist.py                    # cpu profile, ~30 min on 2 cores
    python benchmarks/bunny_mnist.py --profile smoke    # < 1 min
"""

from manifold_ps.benchmarking.cli import benchmark_main
from manifold_ps.benchmarking.workloads import bunny_mnist

if __name__ == "__main__":
    benchmark_main("bunny_mnist", bunny_mnist, description=__doc__)
