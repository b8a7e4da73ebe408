"""Temperature imputation on the sphere (paper Table 2): 2 m temperature on the 46 x 90 grid,
60% of the vertices masked, sigma_y = 0.05, plus the blind variant (30-60% per sample).

Uses the paper's ERA5 set (GASP ``era5_temp2m_16x_{train,val,test}``) when it is in the data
folder; offline it trains and evaluates on the CMIP6 IPSL-CM6A-LR monthly stand-in and evaluates
the same sampler on real ERA5 snapshots (cross-dataset). Stand-in numbers are labelled as such.

    python benchmarks/era5_imputation.py [--profile smoke|cpu|paper]
"""

from manifold_ps.benchmarking.cli import benchmark_main
from manifold_ps.benchmarking.workloads import sphere_temperature

if __name__ == "__main__":
    # the cpu profile's settings of this workload (DPS at 100 NFE, t_min 0.005, the 120-step flow, the
    # decoder's error drawn) are in manifold_ps.benchmarking.workloads.PROFILE_DEFAULTS
    benchmark_main("era5_imputation", sphere_temperature, description=__doc__)
