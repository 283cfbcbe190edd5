"""Holm and Benjamini-Hochberg adjusted p-values against loop references written from the papers
(Holm 1979; Benjamini & Hochberg 1995) and scipy's ``false_discovery_control``."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import false_discovery_control

from medprobe.errors import DataError
from medprobe.stats import benjamini_hochberg, holm


def holm_reference(p: list[float]) -> list[float]:
    """Reject H_(i) at level a iff p_(j) <= a / (m - j + 1) for all j <= i; the adjusted p-value
    is the smallest such a: max over j <= i of (m - j + 1) p_(j), capped at 1."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    for rank, i in enumerate(order, start=1):
        out[i] = min(1.0, max((m - j + 1) * p[order[j - 1]] for j in range(1, rank + 1)))
    return out


def bh_reference(p: list[float]) -> list[float]:
    """Reject H_(1..k) for the largest k with p_(k) <= k a / m; adjusted: min over j >= i of m p_(j) / j."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    for rank, i in enumerate(order, start=1):
        out[i] = min(1.0, min(m * p[order[j - 1]] / j for j in range(rank, m + 1)))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_adjusted_p_values_match_references(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0, 1, 40), rng.uniform(0, 0.01, 14)])  # 54 findings, like T7
    p[[3, 7]] = p[5]  # ties
    rng.shuffle(p)
    np.testing.assert_allclose(holm(p), holm_reference(p.tolist()), rtol=0, atol=1e-15)
    np.testing.assert_allclose(benjamini_hochberg(p), bh_reference(p.tolist()), rtol=0, atol=1e-15)
    np.testing.assert_allclose(benjamini_hochberg(p), false_discovery_control(p), rtol=1e-12)
    assert (holm(p) >= p).all() and (benjamini_hochberg(p) <= holm(p) + 1e-15).all()


def test_known_small_example_and_missing_values() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    assert holm(p).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert benjamini_hochberg(p).tolist() == pytest.approx([0.02, 0.04, 0.04, 0.02])
    with_nan = holm([0.01, np.nan, 0.04])
    assert np.isnan(with_nan[1]) and with_nan[[0, 2]].tolist() == pytest.approx([0.02, 0.04])
    assert holm([]).size == 0
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        holm([0.2, 1.5])


def test_ratio_intervals_two_level_bootstrap_reference() -> None:
    """Per replicate r: S seeds re-drawn (the same draws as a generator with the same seed),
    their mean on r over the full-data value on r; percentile interval."""
    from medprobe.stats import ratio_intervals

    rng = np.random.default_rng(0)
    seeds = 0.7 + rng.normal(0, 0.02, (3, 400))
    full = 0.8 + rng.normal(0, 0.02, 400)
    out = ratio_intervals(seeds, full, True, np.random.default_rng(9))
    drawn = np.random.default_rng(9).integers(0, 3, size=(400, 3))
    ratios = [seeds[drawn[r], r].mean() / full[r] for r in range(400)]
    corrected = [(seeds[drawn[r], r].mean() - 0.5) / (full[r] - 0.5) for r in range(400)]
    assert out["fraction_of_full_ci_low"] == pytest.approx(np.percentile(ratios, 2.5), abs=1e-12)
    assert out["fraction_of_full_ci_high"] == pytest.approx(np.percentile(ratios, 97.5), abs=1e-12)
    assert out["chance_corrected_ci_low"] == pytest.approx(np.percentile(corrected, 2.5), abs=1e-12)
    assert "chance_corrected_ci_low" not in ratio_intervals(seeds, full, False, np.random.default_rng(9))
