"""Coverage of the CIs and type-I error of the paired tests on simulated clustered null data.

``medprobe.bench.coverage`` simulates test sets with several images per patient, a true AUC of
0.5 for both models and no true difference. The rates are fixed by the seed, so the assertions
are deterministic; the bounds are the issue's targets widened by about two binomial SEs of the
simulation size.
"""

from __future__ import annotations

import pytest

from medprobe.bench.coverage import run


def test_quick_coverage_patient_level_is_honest_image_level_is_not() -> None:
    result = run(quick=True)  # 150 test sets, 400 replicates: seconds
    patient, image = result["bootstrap"]["patient"], result["bootstrap"]["image"]
    assert 0.90 <= patient["ci_coverage"] <= 0.99
    assert image["ci_coverage"] < 0.85 and image["type_i_error"] > 0.15
    assert result["delong"]["obuchowski"]["ci_coverage"] > result["delong"]["delong"]["ci_coverage"] + 0.1


@pytest.mark.slow
def test_full_coverage_meets_targets() -> None:
    """The benchmark's full size (2,000 test sets x 1,000 replicates, about 2 minutes)."""
    result = run(quick=False)
    patient = result["bootstrap"]["patient"]
    assert 0.93 <= patient["ci_coverage"] <= 0.97
    assert patient["type_i_error"] <= 0.06
    obuchowski = result["delong"]["obuchowski"]
    assert 0.93 <= obuchowski["ci_coverage"] <= 0.97 and obuchowski["type_i_error"] <= 0.07
    assert result["bootstrap"]["image"]["ci_coverage"] < 0.85
