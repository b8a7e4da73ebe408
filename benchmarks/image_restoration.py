"""Images as a regular grid: denoising (sigma 0.1), 2x super-resolution and Gaussian deblurring
(sigma 0.01) on 32 x 32 images; prior and flows trained on MNIST padded to 32 x 32, the Olivetti
faces as a cross-dataset check.

    python benchmarks/image_restoration.py [--profile smoke|cpu|paper]
"""

from manifold_ps.benchmarking.cli import benchmark_main
from manifold_ps.benchmarking.workloads import image_restoration

if __name__ == "__main__":
    # the cpu profile's 32 measurements per set: manifold_ps.benchmarking.workloads.PROFILE_DEFAULTS
    benchmark_main("image_restoration", image_restoration, description=__doc__)
