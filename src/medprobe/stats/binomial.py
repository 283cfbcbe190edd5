"""Confidence interval of a proportion (e.g. accuracy on multiple-choice questions).

MCQ accuracy is k correct answers out of n independent questions, so an exact binomial interval
is both simpler and better behaved than a bootstrap, especially near 0 % or 100 %.
"""

from __future__ import annotations

import math
from typing import Literal

from scipy.special import betaincinv, ndtri

from medprobe.errors import ConfigError, DataError

BINOMIAL_METHODS = ("wilson", "clopper-pearson")


def binomial_ci(k: int, n: int, level: float = 0.95,
                method: Literal["wilson", "clopper-pearson"] = "wilson") -> dict[str, float]:
    """``value = k / n`` with a two-sided ``level`` CI: ``{"value", "ci_low", "ci_high"}``.

    * ``"wilson"``: Wilson score interval without continuity correction (Newcombe 1998, method 3);
      good coverage at all n, never outside [0, 1]. Default.
    * ``"clopper-pearson"``: exact interval from beta quantiles; guaranteed coverage, conservative.

    Both match ``scipy.stats.binomtest(k, n).proportion_ci(level, method)`` (scipy calls the second
    ``"exact"``). At k = 0 the lower bound is exactly 0 and at k = n the upper bound exactly 1.
    """
    if method not in BINOMIAL_METHODS:
        raise ConfigError(f"unknown binomial CI method {method!r}; expected one of {', '.join(BINOMIAL_METHODS)}")
    if not 0 < level < 1:
        raise ConfigError(f"confidence level must be between 0 and 1, got {level}")
    if int(k) != k or int(n) != n:
        raise DataError(f"binomial counts must be integers, got k={k}, n={n}")
    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise DataError(f"need 0 <= k <= n and n >= 1 for a binomial CI, got k={k}, n={n}")
    alpha = 1 - level
    if method == "wilson":
        z = float(ndtri(1 - alpha / 2))
        p = k / n
        center = (k + z * z / 2) / (n + z * z)
        half = z / (n + z * z) * math.sqrt(n * p * (1 - p) + z * z / 4)
        low, high = center - half, center + half
    else:
        low = float(betaincinv(k, n - k + 1, alpha / 2)) if k > 0 else 0.0
        high = float(betaincinv(k + 1, n - k, 1 - alpha / 2)) if k < n else 1.0
    low = 0.0 if k == 0 else max(0.0, low)
    high = 1.0 if k == n else min(1.0, high)
    return {"value": k / n, "ci_low": low, "ci_high": high}


__all__ = ["BINOMIAL_METHODS", "binomial_ci"]
