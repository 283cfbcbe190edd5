"""Adjusted p-values for a family of tests (e.g. one comparison per finding: T7 has 54).

* :func:`holm`: Holm (1979) step-down; controls the family-wise error rate under any dependence.
* :func:`benjamini_hochberg`: Benjamini & Hochberg (1995) step-up; controls the false discovery
  rate for independent or positively dependent tests.

Both return adjusted p-values in the input order (compare them with the unadjusted level);
NaN entries (a test that could not be run) stay NaN and do not count towards the family size.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from medprobe.errors import DataError


def _finite(p_values: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p_values, dtype=np.float64).ravel()
    kept = np.isfinite(p)
    if ((p[kept] < 0) | (p[kept] > 1)).any():
        raise DataError(f"p-values must lie in [0, 1], got {p[kept][(p[kept] < 0) | (p[kept] > 1)][0]}")
    return p, kept


def _step_adjusted(p_values: Sequence[float] | np.ndarray,
                   step: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply a step-wise adjustment ``step`` (ascending finite p-values -> adjusted, same order)
    and put the results back in the input order, capped at 1; NaN entries stay NaN and do not
    count towards the family size."""
    p, kept = _finite(p_values)
    out = np.full(p.shape, np.nan)
    finite = p[kept]
    if finite.size:
        order = np.argsort(finite, kind="stable")
        adjusted = np.empty(finite.size)
        adjusted[order] = np.minimum(1.0, step(finite[order]))
        out[kept] = adjusted
    return out


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values: with sorted ``p_(1) <= ... <= p_(m)``,
    ``p~_(i) = min(1, max_{j <= i} (m - j + 1) p_(j))``."""
    return _step_adjusted(p_values, lambda p: np.maximum.accumulate((p.size - np.arange(p.size)) * p))


def benjamini_hochberg(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """BH-adjusted p-values (q-values): ``p~_(i) = min(1, min_{j >= i} m p_(j) / j)``."""
    return _step_adjusted(p_values,
                          lambda p: np.minimum.accumulate((p.size * p / np.arange(1, p.size + 1))[::-1])[::-1])


def add_adjusted_p_values(comparisons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add ``p_holm``, ``p_bh`` and ``n_family`` to every comparison row.

    A family is one pair of probes (train fraction, seed, backbones), one test and one metric
    kind: the per-class rows ``auc[...]`` (or ``f1[...]``) of a pair form one family, a headline
    row a family of its own (adjusted = raw). Rows without a p-value get None and do not count."""
    families: dict[tuple, list[int]] = {}
    for position, row in enumerate(comparisons):
        kind = row["metric"].split("[")[0] + "[]" if "[" in row["metric"] else row["metric"]
        key = (row["train_fraction"], row["seed"], row["backbone_a"], row["backbone_b"], row["test"], kind)
        families.setdefault(key, []).append(position)
    for members in families.values():
        p = np.array([np.nan if comparisons[i]["p_value"] is None else comparisons[i]["p_value"] for i in members])
        for i, p_holm, p_bh in zip(members, holm(p), benjamini_hochberg(p)):
            defined = np.isfinite(p_holm)
            comparisons[i].update(p_holm=float(p_holm) if defined else None, p_bh=float(p_bh) if defined else None,
                                  n_family=int(np.isfinite(p).sum()))
    return comparisons


__all__ = ["holm", "benjamini_hochberg", "add_adjusted_p_values"]
