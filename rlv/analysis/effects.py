"""Effect sizes: partial eta squared and its confidence interval from the noncentral F.

The interval inverts the noncentral F distribution in its noncentrality lambda (Steiger 2004,
the convention of SPSS-era effect-size software): lambda_lower and lambda_upper are the values
at which the observed F sits at the (1 + level) / 2 and (1 - level) / 2 quantiles, i.e.

    ncf.cdf(F, df1, df2, lambda_lower) = (1 + level) / 2
    ncf.cdf(F, df1, df2, lambda_upper) = (1 - level) / 2

(0 where even lambda = 0 puts F below that quantile), and each lambda becomes partial eta
squared as lambda / (lambda + df1 + df2 + 1). Where F is not finite, or scipy cannot evaluate
the noncentral F there, the bound is NaN: never an error.
"""

from __future__ import annotations

import math
import warnings

from scipy import optimize, stats

CI_LEVEL = 0.95


def _cdf(f_value: float, df1: float, df2: float, lam: float) -> float:
    if lam <= 0.0:
        return float(stats.f.cdf(f_value, df1, df2))
    return float(stats.ncf.cdf(f_value, df1, df2, lam))


LAMBDA_MAX = 1e9  # beyond it eta squared is 1 to 7 digits, and scipy's ncf returns NaN


def _lambda_at(f_value: float, df1: float, df2: float, target: float) -> float:
    """The lambda with cdf(F; lambda) = target (cdf falls as lambda grows); 0 if cdf(F; 0) < target;
    inf beyond LAMBDA_MAX; NaN where scipy cannot evaluate the cdf."""
    at_zero = _cdf(f_value, df1, df2, 0.0)
    if not math.isfinite(at_zero):
        return math.nan
    if at_zero <= target:
        return 0.0
    high = max(1.0, f_value * df1)
    while True:  # bracket the root: the cdf tends to 0
        if high > LAMBDA_MAX:
            return math.inf
        at_high = _cdf(f_value, df1, df2, high)
        if not math.isfinite(at_high):
            return math.nan
        if at_high <= target:
            break
        high *= 2.0
    try:
        return float(
            optimize.brentq(
                lambda lam: _cdf(f_value, df1, df2, lam) - target, 0.0, high, xtol=1e-10
            )
        )
    except ValueError:  # the cdf turned NaN inside the bracket
        return math.nan


def eta_sq_of_lambda(lam: float, df1: float, df2: float) -> float:
    """Partial eta squared of a noncentrality: lambda / (lambda + df1 + df2 + 1)."""
    return 1.0 if math.isinf(lam) else lam / (lam + df1 + df2 + 1.0)


def partial_eta_sq_ci(
    f_value: float, df1: float, df2: float, level: float = CI_LEVEL
) -> tuple[float, float]:
    """The `level` confidence interval of partial eta squared for an observed F(df1, df2)."""
    if not (math.isfinite(f_value) and f_value >= 0 and df1 > 0 and df2 > 0):
        return (math.nan, math.nan)
    with warnings.catch_warnings():
        # scipy's ncf warns where it loses precision; an unusable value comes back as NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        lower = _lambda_at(f_value, df1, df2, (1.0 + level) / 2.0)
        upper = _lambda_at(f_value, df1, df2, (1.0 - level) / 2.0)
    return eta_sq_of_lambda(lower, df1, df2), eta_sq_of_lambda(upper, df1, df2)
