"""The NumPy rank scores equal scikit-learn's, ties and edge cases included."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score, roc_curve

from medprobe.scoring import binary_auc, macro_f1, roc_points


@pytest.mark.parametrize("seed", range(5))
def test_auc_and_roc_equal_scikit_learn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    positive = rng.random(n) < rng.uniform(0.05, 0.9)
    positive[:2] = [True, False]
    scores = np.round(rng.normal(size=n) + positive, int(rng.integers(0, 3)))  # rounding makes ties
    assert binary_auc(positive, scores) == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)
    fpr, tpr = roc_points(positive, scores)
    expected_fpr, expected_tpr, _ = roc_curve(positive, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, expected_fpr)
    np.testing.assert_allclose(tpr, expected_tpr)
    with pytest.raises(ValueError, match="both"):
        binary_auc(np.ones(n, bool), scores)


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_equals_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, 80)
    predicted = np.where(rng.random(80) < 0.6, truth, rng.integers(0, 5, 80))  # a label only predicted
    assert macro_f1(truth, predicted) == pytest.approx(f1_score(truth, predicted, average="macro"), abs=1e-12)
    Y = (rng.random((60, 6)) < 0.3).astype(int)
    P = (rng.random((60, 6)) < 0.3).astype(int)
    Y[:, 0] = P[:, 0] = 0  # a finding with no positive anywhere: skipped, like zero_division=nan
    expected = f1_score(Y, P, average="macro", zero_division=np.nan)
    assert macro_f1(Y, P) == pytest.approx(expected, abs=1e-12)
    assert np.isnan(macro_f1(np.zeros((5, 2), int), np.zeros((5, 2), int)))


def test_midranks_and_distribution_functions_equal_scipy_stats():
    from scipy import stats

    from medprobe.scoring import midranks, normal_two_sided_p
    from medprobe.stats.binomial import binomial_ci

    rng = np.random.default_rng(0)
    values = np.round(rng.normal(size=(7, 40)), 1)  # many ties
    np.testing.assert_allclose(midranks(values), stats.rankdata(values, axis=1))
    np.testing.assert_allclose(midranks(values[0]), stats.rankdata(values[0]))
    assert normal_two_sided_p(1.7) == pytest.approx(2 * stats.norm.sf(1.7), rel=1e-12)
    from medprobe.stats.paired import t_test_on_replicates

    a, b = rng.normal(size=200), rng.normal(0.1, 1, size=200)
    for k, n in ((0, 20), (7, 20), (20, 20)):
        ci = binomial_ci(k, n, method="clopper-pearson")
        assert ci["ci_low"] == pytest.approx(stats.beta.ppf(0.025, k, n - k + 1) if k > 0 else 0.0, abs=1e-12)
        assert ci["ci_high"] == pytest.approx(stats.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0, abs=1e-12)
    ours, theirs = t_test_on_replicates(a, b), stats.ttest_rel(a, b)
    assert ours["t"] == pytest.approx(theirs.statistic, rel=1e-10)
    assert ours["p_value"] == pytest.approx(theirs.pvalue, rel=1e-8)
