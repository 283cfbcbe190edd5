"""`medprobe bench` runs the benchmarks; correctness of their comparisons (not speed) is checked."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from medprobe.cli import app


def test_bench_bootstrap_quick_agrees_with_sklearn():
    from medprobe.bench.bootstrap import run

    result = run(quick=True)
    assert result["max_abs_diff"] < 1e-12
    assert result["naive_s"] > 0 and result["ours_s"] > 0


def test_bench_cli_table():
    result = CliRunner().invoke(app, ["bench", "--only", "bootstrap"])
    assert result.exit_code == 0, result.output
    assert "bootstrap_per_class_auc" in result.output and "max |diff|" in result.output


@pytest.mark.slow
def test_bench_probes_and_extraction_quick():
    from medprobe.bench import extraction, probes

    assert probes.run(quick=True)["auc_abs_diff"] <= 0.002
    result = extraction.run(quick=True)
    assert result["max_abs_diff_vs_study"] < 1e-2  # float16 cache vs float32 study-style features
    factors = result["factors"]
    if "bf16_ratio" not in result:  # no bf16 units here: the ladder stops at fp32 batching
        assert set(factors) == {"early stop", "batching"}
        return
    assert set(factors) == {"early stop", "batching", "precision"}
    assert np.prod(list(factors.values())) == pytest.approx(result["bf16_ratio"], rel=1e-9)
    assert result["bf16_min_cosine_vs_fp32"] > 0.98


def test_bench_bootstrap_numpy_baseline_agrees_with_sklearn_on_ties():
    """The vectorised NumPy baseline is a real AUC (ties count one half), not a faster wrong number."""
    import numpy as np

    from medprobe.bench.bootstrap import naive_per_class_auc, numpy_per_class_auc
    from medprobe.stats import bootstrap_indices

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, size=200)
    scores = np.round(rng.random((200, 3)), 1)  # many ties
    indices = bootstrap_indices(200, 25, seed=1)
    assert np.allclose(numpy_per_class_auc(y, scores, indices), naive_per_class_auc(y, scores, indices), atol=1e-12)


def test_fidelity_reports_the_noise_a_standardising_probe_sees():
    """A large shared offset makes the cosine look perfect; the standardised noise still shows the
    error against each feature's spread across images (here 25 %: noise sd 0.5, spread sd 1)."""
    from medprobe.bench.precision import _fidelity

    rng = np.random.default_rng(0)
    reference = 100.0 + rng.standard_normal((4000, 8))
    other = reference + 0.5 * rng.standard_normal(reference.shape)
    result = _fidelity({"layer": reference}, {"layer": other})["layer"]
    assert result["min_cosine"] > 0.99
    assert result["standardised_noise"] == pytest.approx(0.25, rel=0.1)
    assert _fidelity({"layer": reference}, {"layer": reference})["layer"]["standardised_noise"] == 0.0
