"""Probe stage: L2 logistic-regression probes on (cached) activations, and choosing C and the layer.

Plain NumPy arrays in and out. Labels: ``(n,)`` class indices for binary/multiclass tasks,
``(n, K)`` 0/1 for multilabel. Probabilities: ``(n, 2)`` binary, ``(n, K)`` otherwise.
"""

from medprobe.probes.inputs import TASK_TYPES, check_features, check_labels, resolve_device
from medprobe.probes.logistic import THRESHOLD, LinearProbe
from medprobe.probes.selection import (DEFAULT_CS, METRICS, TIE_TOLERANCE, cv_select, select_best, select_probe,
                                      select_probes, validation_score)

__all__ = [
    "DEFAULT_CS", "METRICS", "TASK_TYPES", "THRESHOLD", "TIE_TOLERANCE", "LinearProbe", "check_features",
    "check_labels", "cv_select", "resolve_device", "select_best", "select_probe", "select_probes", "validation_score",
]
