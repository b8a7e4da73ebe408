"""manifold_ps: amortized posterior sampling on manifold signals.

Subpackages by layer (imports flow one way): :mod:`manifold_ps.geometry`,
:mod:`manifold_ps.operators`, :mod:`manifold_ps.priors`, :mod:`manifold_ps.flows`,
:mod:`manifold_ps.baselines`, :mod:`manifold_ps.datasets`, :mod:`manifold_ps.metrics`,
:mod:`manifold_ps.viz`.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
