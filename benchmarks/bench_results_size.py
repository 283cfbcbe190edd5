"""Size of results.json for a paper-scale probe grid (issue 15.6): 81 layers x 19 (fraction, seed)
plans of one backbone, for a T1-like task (9 classes) and a T7-like one (54 findings). Rows are
built with the experiment's own row builder; the statistics are placeholders (the size depends
on the number of rows and keys, not on the values).

    PYTHONPATH=src python benchmarks/bench_results_size.py
"""
import json
import numpy as np
from medprobe.config import parse_config
from medprobe.experiment import Experiment, ProbeOutcome
from medprobe.features.cache import _json_safe
from medprobe.stats.metrics import metric_names

def measure(task_type, classes, n_test=300):
    config = parse_config({"data": {"adapter": "medmnist"}, "backbones": [{"name": "pixels", "label": "IDEFICS-80B"}],
                           "stats": {"n_bootstrap": 10}})
    experiment = Experiment(config, show_progress=False)
    rng = np.random.default_rng(0)
    k = len(classes)
    if task_type == "multilabel":
        y = (rng.random((n_test, k)) < 0.2).astype(int); y[:2] = 1; y[2:4] = 0
    else:
        y = np.arange(n_test) % k
    plans = [(1.0, 0)] + [(f, s) for f in (0.01, 0.02, 0.05, 0.1, 0.25, 0.5) for s in range(3)]
    for f, s in plans:
        for layer in range(81):
            p = rng.random((n_test, k)); p = p / p.sum(1, keepdims=True) if task_type != "multilabel" else p
            experiment.outcomes.append(ProbeOutcome("IDEFICS-80B", str(layer), f, s, 1.0, 0.5, p, selected=layer == 32))
    class D: pass
    d = D(); d.task_type = task_type; d.classes = classes
    rows = [experiment.result_row(o, m, {"value": 0.5, "sd": 0.01, "ci_low": 0.4, "ci_high": 0.6, "n_dropped": 0}, n_test)
            for o in experiment.outcomes for m in metric_names(task_type, classes)]
    text = json.dumps(_json_safe(rows), indent=2, sort_keys=True, default=str, allow_nan=False)
    compact = json.dumps(_json_safe(rows), separators=(",", ":"), sort_keys=True, default=str, allow_nan=False)
    print(f"{task_type} K={k}: {len(experiment.outcomes)} outcomes x {len(metric_names(task_type, classes))} metrics "
          f"= {len(rows)} rows; results.json {len(text)/1e6:.1f} MB as written (indent=2), {len(compact)/1e6:.1f} MB compact")

measure("multiclass", [f"c{i}" for i in range(9)])
measure("multilabel", [f"f{i}" for i in range(54)])
