"""rlv: the "Who Needs an Encoder?" experiment as a Ray Tune sweep service.

Importing this package imports neither torch nor Ray, so `rlv.analysis` works on a laptop
that only has pandas and statsmodels.
"""

__version__ = "0.1.0"
