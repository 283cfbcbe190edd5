"""Size of results.json for a paper-scale probe grid (issue 15.6): 81 layers x 19 (fraction, seed)
plans of one backbone, for a T1-like task (9 classes) and a T7-like one (54 findings), with the
default ``stats.per_class_rows: selected`` (per-class rows for the selected probes only). Rows are
built with the run's own row builder (:func:`medprobe.stats.result_row`) and written the way results.json is;
the statistics are placeholders (the size depends on the number of rows and keys, not on the values).

    PYTHONPATH=src python benchmarks/bench_results_size.py
"""

from __future__ import annotations

import json

import numpy as np

from medprobe.io import json_safe
from medprobe.stats import EvaluationSet, ProbeOutcome, result_row
from medprobe.stats.metrics import metric_names

N_LAYERS = 81
#: the study's label-efficiency grid: all data once, six fractions x three seeds
PLANS = [(1.0, 0)] + [(fraction, seed) for fraction in (0.01, 0.02, 0.05, 0.1, 0.25, 0.5) for seed in range(3)]
SUMMARY = {"value": 0.5, "sd": 0.01, "ci_low": 0.4, "ci_high": 0.6, "n_dropped": 0}


def measure(task_type: str, classes: list[str], n_test: int = 1000) -> None:
    scores = np.zeros((1, len(classes)))  # not used by the row builder
    # only the task name and the resampling keys of the test set enter a row (placeholders, like SUMMARY)
    evaluation = EvaluationSet("run", task_type, classes, np.zeros(n_test, int), None, np.zeros((0, n_test), int),
                               {"bootstrap_unit": None, "n_units": None})
    outcomes = [ProbeOutcome("IDEFICS-80B", str(layer), fraction, seed, 1.0, 0.5, scores, selected=layer == 32)
                for fraction, seed in PLANS for layer in range(N_LAYERS)]
    names = metric_names(task_type, classes)
    summary_names = [name for name in names if "[" not in name]
    # stats.per_class_rows: selected (the default) writes per-class rows for the selected probes only
    rows = [result_row(evaluation, outcome, metric, SUMMARY, n_test) for outcome in outcomes
            for metric in (names if outcome.selected else summary_names)]
    written = json.dumps(json_safe(rows), indent=2, sort_keys=True, allow_nan=False)
    compact = json.dumps(json_safe(rows), separators=(",", ":"), sort_keys=True, allow_nan=False)
    print(f"{task_type}, {len(classes)} classes: {len(outcomes)} probes ({len(PLANS)} selected with all "
          f"{len(names)} metrics, the rest {len(summary_names)}) = {len(rows)} rows; "
          f"results.json {len(written) / 1e6:.1f} MB as written (indent 2), {len(compact) / 1e6:.1f} MB without")


if __name__ == "__main__":
    measure("multiclass", [f"class{i}" for i in range(9)])
    measure("multilabel", [f"finding{i}" for i in range(54)])
