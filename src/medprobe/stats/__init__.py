"""Statistics stage: metrics, bootstrap CIs, paired model comparisons, calibration, multiplicity.

Plain numpy arrays in, plain dicts of floats out; nothing here keeps state between calls. The
same replicates (:func:`resampling_plan`: patient-level :class:`ClusteredIndices` when patients
have several images, else a ``bootstrap_indices`` matrix) must be passed for every model of a
comparison: that is what makes the comparisons paired.
"""

from medprobe.stats.binomial import BINOMIAL_METHODS, binomial_ci
from medprobe.stats.bootstrap import bootstrap_metrics, summarise
from medprobe.stats.calibration import CalibrationEvaluator, calibration_summary
from medprobe.stats.groups import per_group_metrics
from medprobe.stats.metrics import (
    MULTILABEL_THRESHOLD,
    TASK_TYPES,
    TaskType,
    WeightedEvaluator,
    check_inputs,
    compute_metrics,
    metric_names,
)
from medprobe.stats.efficiency import ratio_intervals
from medprobe.stats.multiplicity import add_adjusted_p_values, benjamini_hochberg, holm
from medprobe.stats.outcomes import ProbeOutcome
from medprobe.stats.paired import (
    REPLICATE_T_TEST_WARNING,
    delong_auc,
    delong_test,
    paired_bootstrap_test,
    paired_difference,
    replicate_t_test,
    t_test_on_replicates,
)
from medprobe.stats.resampling import (
    BOOTSTRAP_UNITS,
    BootstrapUnit,
    ClusteredIndices,
    bootstrap_indices,
    cluster_bootstrap_indices,
    cluster_codes,
    has_clusters,
    resample_counts,
    resampling_plan,
)
from medprobe.stats.rows import EvaluationSet, GroupColumn, result_row
from medprobe.stats.comparisons import compare
from medprobe.stats.label_efficiency import label_efficiency
from medprobe.stats.probe_statistics import ProbeStatistics, probe_statistics

__all__ = [
    "BOOTSTRAP_UNITS", "BootstrapUnit", "ClusteredIndices", "cluster_bootstrap_indices", "cluster_codes",
    "has_clusters", "resampling_plan", "CalibrationEvaluator", "calibration_summary", "benjamini_hochberg", "holm",
    "REPLICATE_T_TEST_WARNING", "replicate_t_test", "add_adjusted_p_values", "ratio_intervals",
    "paired_difference", "t_test_on_replicates",
    "BINOMIAL_METHODS", "MULTILABEL_THRESHOLD", "TASK_TYPES", "TaskType", "WeightedEvaluator",
    "binomial_ci", "bootstrap_indices", "bootstrap_metrics", "check_inputs", "compute_metrics",
    "delong_auc", "delong_test", "metric_names", "paired_bootstrap_test", "per_group_metrics",
    "resample_counts", "summarise",
    "ProbeOutcome", "EvaluationSet", "GroupColumn", "result_row", "compare", "label_efficiency", "ProbeStatistics",
    "probe_statistics",
]
