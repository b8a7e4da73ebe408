"""Temperature imputation on the sphere (paper Table 2): 2 m temperature on the 46 x 90 grid,
60% of the vertices masked, sigma_y = 0.05, plus the blind variant (30-60% per sample).

Uses the paper's ERA5 set (GASP ``era5_temp2m_16x_{train,val,test}``) when it is in the data
folder; offline it trains and evaluates on the CMIP6 IPSL-CM6A-LR monthly stand-in and evaluates
the same sampler on real ERA5 snapshots (cross-dataset). Stand-in numbers are labelled as such.

    python benchmarks/era5_imputation.py [--profile smoke|cpu|paper]
"""

import os

# Idle OpenMP threads spin by default; on a shared CPU that made training ~3x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from manifold_ps.benchmarking.cli import benchmark_main
from manifold_ps.benchmarking.workloads import sphere_temperature

if __name__ == "__main__":
    benchmark_main("era5_imputation", sphere_temperature, description=__doc__,
                   # DPS and MCG at 100 NFE: the DPS sweep on held-out CMIP6 fields shows no loss against
                   # 1000 (benchmarks/results/dps_sweep-era5_imputation-cpu.md); t_min 0.005 was the best row
                   # of the paper sampler's sphere flow ablation (commit 0e1de95; the committed table now holds
                   # the decoded sampler's rows, benchmarks/results/flow_ablation-era5_imputation-cpu.md).
                   # The decoded sampler takes ~0.4 steps/s on these 4140 vertices on 2 cores: a 120-step
                   # cosine schedule ends within the imputation task's 6.7 minutes instead of being cut at
                   # full learning rate (450 steps were cut at 147). Its peak learning rate stays 5e-4, the rate
                   # of the committed sphere results: here the profile's 2e-3 changes nothing, the flow ends
                   # where it starts at either rate (benchmarks/results/flow_ablation-era5_imputation-cpu-lr*.md).
                   # The decoder's error is integrated out of the likelihood and drawn given `y`
                   # (`flow.likelihood = marginal`, `flow.decoder_noise`): without it the draws cover 0.81 of
                   # the missing points at 90%, with it 0.88, the mean unchanged within 0.05 dB
                   # (benchmarks/results/flow_ablation-era5_imputation-cpu-decoder-noise.md)
                   profile_defaults={"cpu": {"eval.dps_nfe": 100, "flow.t_min": 0.005, "flow.train_steps": 120,
                                             "flow.lr": 5e-4, "flow.likelihood": "marginal",
                                             "flow.decoder_noise": True}})
