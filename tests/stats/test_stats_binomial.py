"""Binomial CIs for MCQ accuracy, checked against scipy.stats.binomtest(...).proportion_ci."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from medprobe.errors import ConfigError, DataError
from medprobe.stats import binomial_ci

CASES = [(0, 1), (1, 1), (0, 12), (12, 12), (1, 12), (7, 12), (3, 40), (37, 40), (66, 137), (500, 1000)]


@pytest.mark.parametrize(("k", "n"), CASES)
@pytest.mark.parametrize("level", [0.9, 0.95, 0.99])
@pytest.mark.parametrize(("method", "scipy_method"), [("wilson", "wilson"), ("clopper-pearson", "exact")])
def test_binomial_ci_matches_scipy(k: int, n: int, level: float, method: str, scipy_method: str) -> None:
    ours = binomial_ci(k, n, level=level, method=method)
    reference = binomtest(k, n).proportion_ci(confidence_level=level, method=scipy_method)
    assert ours["value"] == k / n
    assert ours["ci_low"] == pytest.approx(reference.low, abs=1e-9)
    assert ours["ci_high"] == pytest.approx(reference.high, abs=1e-9)
    assert 0.0 <= ours["ci_low"] <= ours["value"] <= ours["ci_high"] <= 1.0


def test_exact_interval_is_wider_than_wilson_in_the_middle() -> None:
    wilson, exact = binomial_ci(30, 60), binomial_ci(30, 60, method="clopper-pearson")
    assert exact["ci_low"] < wilson["ci_low"] and wilson["ci_high"] < exact["ci_high"]


def test_edges_are_exact() -> None:
    assert binomial_ci(0, 25)["ci_low"] == 0.0
    assert binomial_ci(25, 25)["ci_high"] == 1.0


@pytest.mark.parametrize(("k", "n", "error"), [(5, 3, DataError), (-1, 3, DataError), (0, 0, DataError),
                                               (1.5, 3, DataError)])
def test_invalid_counts(k, n, error) -> None:
    with pytest.raises(error):
        binomial_ci(k, n)


def test_invalid_method_or_level() -> None:
    with pytest.raises(ConfigError, match="agresti"):
        binomial_ci(3, 10, method="agresti")
    with pytest.raises(ConfigError, match="level"):
        binomial_ci(3, 10, level=95)
