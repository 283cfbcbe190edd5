"""Confidence intervals for label-efficiency ratios ("fraction of full-data performance").

The ratio of a subsampled-training metric to the full-training metric varies with the test set
(both terms are measured on the same test patients, so they are correlated) and with the seed
that drew the training subset. Both sources enter the interval below.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def ratio_intervals(seed_replicates: np.ndarray, full_replicates: np.ndarray, chance_corrected: bool,
                    rng: np.random.Generator, level: float = 0.95) -> dict[str, Any]:
    """Percentile CIs of "fraction of full" (and the chance-corrected AUC ratio) by a two-level
    bootstrap: ``seed_replicates`` is (S seeds, R test replicates), ``full_replicates`` (R,); on
    replicate r, S seeds are re-drawn with replacement and their mean on r is divided by the
    full-data value on r (see :func:`medprobe.stats.label_efficiency.label_efficiency`)."""
    n_seeds, n_replicates = seed_replicates.shape
    drawn = rng.integers(0, n_seeds, size=(n_replicates, n_seeds))
    numerator = seed_replicates[drawn, np.arange(n_replicates)[:, None]].mean(axis=1)
    bounds = [50 * (1 - level), 50 * (1 + level)]

    def interval(values: np.ndarray) -> tuple[float | None, float | None]:
        finite = values[np.isfinite(values)]
        if finite.size < 2:
            return None, None
        low, high = np.percentile(finite, bounds)
        return float(low), float(high)

    with np.errstate(divide="ignore", invalid="ignore"):
        out = dict(zip(("fraction_of_full_ci_low", "fraction_of_full_ci_high"),
                       interval(numerator / full_replicates)))
        if chance_corrected:
            out.update(zip(("chance_corrected_ci_low", "chance_corrected_ci_high"),
                           interval((numerator - 0.5) / (full_replicates - 0.5))))
    out["ratio_ci_method"] = "two-level bootstrap: test replicates x seeds (with replacement)"
    return out


__all__ = ["ratio_intervals"]
