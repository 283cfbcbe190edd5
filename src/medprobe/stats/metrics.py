"""Classification metrics (one-vs-rest AUC, macro-F1, accuracy) for the three task types.

Every metric here is computed from *sample counts*: the plain test-set value counts every sample
once, and a bootstrap replicate that drew sample ``i`` ``w_i`` times counts it ``w_i`` times.
Because AUC, F1 and accuracy depend only on the multiset of (label, score) pairs, this gives
exactly the value a library would compute on the resampled rows, while letting
:class:`WeightedEvaluator` score a whole block of replicates with array operations (no Python
loop over replicates). The point estimate and the bootstrap replicates therefore share one code
path and cannot drift apart.

Task types and what ``y_true`` / ``scores`` look like:

* ``"binary"``: ``y_true`` (n,) in {0, 1}; ``scores`` (n, 2) class probabilities.
* ``"multiclass"``: ``y_true`` (n,) ints 0..K-1; ``scores`` (n, K).
* ``"multilabel"``: ``y_true`` (n, K) 0/1; ``scores`` (n, K) per-finding probabilities.

Metric names (see :func:`metric_names`):

* ``auc[<class>]``: one-vs-rest AUC of that class's score column.
* ``auc_macro``: unweighted mean of the per-class AUCs; undefined (NaN) as soon as one class AUC
  is undefined, because a mean over a varying subset of classes would estimate a different
  quantity in different replicates.
* ``auc``: the headline AUC. Binary: the AUC of the positive class (``classes[1]``); otherwise
  the macro AUC.
* ``f1_macro``: single-label tasks predict the argmax class (a tie goes to the lower class index;
  for binary this means "positive iff p1 > 0.5"); multilabel predicts a finding when its
  probability is > 0.5. The macro average runs over the classes whose F1 is defined on the
  scored samples as given, i.e. that occur in their labels or predictions. For single-label tasks
  this equals scikit-learn's ``f1_score(average="macro")``; for multilabel
  ``f1_score(average="macro", zero_division=nan)``. A count vector (bootstrap replicate) averages
  over that *same* class set; a replicate in which one of those classes is neither present nor
  predicted has no macro F1 (NaN), like ``auc_macro``, instead of averaging over fewer classes.
* ``f1[<class>]``: that class's F1 (one-vs-rest on the predictions above); NaN where the class is
  neither present nor predicted.
* ``accuracy``: single-label: share of samples whose argmax is the true class. Multilabel: the
  mean over findings of the per-finding accuracy (``1 - hamming_loss``), because exact-match
  accuracy is close to 0 with many findings and says little; exact match is reported as well.
* ``exact_match`` (multilabel only): share of samples with every finding predicted correctly
  (scikit-learn's ``accuracy_score`` on indicator matrices).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from medprobe.errors import ConfigError, DataError

TaskType = Literal["binary", "multiclass", "multilabel"]
TASK_TYPES: tuple[str, ...] = ("binary", "multiclass", "multilabel")
#: probability above which a multilabel finding counts as predicted present
MULTILABEL_THRESHOLD = 0.5


def metric_names(task_type: TaskType, classes: Sequence[str]) -> list[str]:
    """All metric names :func:`compute_metrics` returns for this task, in report order."""
    _check_task_type(task_type)
    names = ["auc", "auc_macro", *[f"auc[{c}]" for c in classes], "f1_macro", *[f"f1[{c}]" for c in classes],
             "accuracy"]
    if task_type == "multilabel":
        names.append("exact_match")
    return names


def _check_task_type(task_type: str) -> None:
    if task_type not in TASK_TYPES:
        raise ConfigError(f"unknown task type {task_type!r}; expected one of {', '.join(TASK_TYPES)}")


def _as_labels(values: np.ndarray, what: str) -> np.ndarray:
    """Integer labels from an int, bool or integer-valued float array (e.g. read back from parquet)."""
    if values.dtype == bool:
        return values.astype(np.int64)
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64)
    if np.issubdtype(values.dtype, np.floating):
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            where = tuple(np.argwhere(bad)[0])
            raise DataError(f"{what}: sample {where[0]} has a non-integer label {values[where]!r}")
        return values.astype(np.int64)
    raise DataError(f"{what}: labels must be integers, got dtype {values.dtype}")


def check_inputs(y_true: np.ndarray, scores: np.ndarray, task_type: TaskType,
                 classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Validate and normalise ``(y_true, scores)``; returns int64 labels and float64 scores.

    Raises :class:`DataError` naming the offending sample or class, because a shape or label
    mistake here would otherwise surface as a silently wrong AUC.
    """
    _check_task_type(task_type)
    classes = list(classes)
    n_classes = len(classes)
    if n_classes < 2:
        raise DataError(f"a {task_type} task needs at least 2 classes, got {classes}")
    if task_type == "binary" and n_classes != 2:
        raise DataError(f"a binary task has exactly 2 classes (negative, positive), got {classes}")
    y = np.asarray(y_true)
    s = np.asarray(scores)
    if not (np.issubdtype(s.dtype, np.floating) or np.issubdtype(s.dtype, np.integer)):
        raise DataError(f"scores must be numeric, got dtype {s.dtype}")
    s = s.astype(np.float64, copy=False)
    if s.ndim != 2 or s.shape[1] != n_classes:
        raise DataError(f"scores must have shape (n_samples, {n_classes}) for classes {classes}, got {s.shape}")
    n = s.shape[0]
    if n == 0:
        raise DataError("no samples to score (empty test set)")
    if not np.isfinite(s).all():
        row, col = np.argwhere(~np.isfinite(s))[0]
        raise DataError(f"score of sample {row} for class {classes[col]!r} is {s[row, col]} (not finite)")
    if task_type == "multilabel":
        if y.shape != (n, n_classes):
            raise DataError(f"multilabel y_true must have shape ({n}, {n_classes}) like the scores, got {y.shape}")
        y = _as_labels(y, "y_true")
        if not np.isin(y, (0, 1)).all():
            row, col = np.argwhere(~np.isin(y, (0, 1)))[0]
            raise DataError(f"multilabel y_true must be 0/1; sample {row}, finding {classes[col]!r} is {y[row, col]}")
    else:
        if y.shape != (n,):
            raise DataError(f"{task_type} y_true must have shape ({n},) like the scores' rows, got {y.shape}")
        y = _as_labels(y, "y_true")
        bad = np.flatnonzero((y < 0) | (y >= n_classes))
        if bad.size:
            raise DataError(f"y_true of sample {bad[0]} is {y[bad[0]]}, outside 0..{n_classes - 1} "
                            f"(classes {classes})")
    return y, s


@dataclass(frozen=True)
class _AucPlan:
    """Everything about one class's AUC that does not depend on the sample counts.

    With sample counts ``w``, ``AUC = sum_{i pos, j neg} w_i w_j ([s_i > s_j] + 0.5 [s_i == s_j])
    / (W_pos W_neg)``. Sorting the negatives by score once, the inner sum for positive ``i`` is
    ``(C[lo_i] + C[hi_i]) / 2`` where ``C`` is the running count of negatives in that order
    and ``lo_i`` / ``hi_i`` count the negatives scoring below / at most ``s_i``: ties get half
    weight without any per-replicate re-ranking, in O(n) per replicate after one O(n log n) sort.
    """

    positives: np.ndarray  # sample indices of the positives
    negatives_sorted: np.ndarray  # sample indices of the negatives, ascending score
    lo: np.ndarray  # per positive: number of negatives with a strictly lower score
    hi: np.ndarray  # per positive: number of negatives with a lower or equal score
    has_ties: bool  # some positive ties with some negative (lo != hi)

    @classmethod
    def build(cls, is_positive: np.ndarray, score: np.ndarray) -> _AucPlan:
        positives = np.flatnonzero(is_positive)
        negatives = np.flatnonzero(~is_positive)
        negatives_sorted = negatives[np.argsort(score[negatives], kind="stable")]
        sorted_scores = score[negatives_sorted]
        lo = np.searchsorted(sorted_scores, score[positives], side="left")
        hi = np.searchsorted(sorted_scores, score[positives], side="right")
        return cls(positives, negatives_sorted, lo, hi, bool(np.any(lo != hi)))

    def evaluate(self, counts: np.ndarray) -> np.ndarray:
        """AUC per row of integer sample counts; NaN where a row draws no positive or no negative."""
        n_rows = counts.shape[0]
        if self.positives.size == 0 or self.negatives_sorted.size == 0:
            return np.full(n_rows, np.nan)
        # Integer arithmetic keeps every sum exact (the only rounding is the final division) and
        # an integer running sum is several times faster than a floating-point one.
        # np.take keeps the result C-ordered (``a[:, idx]`` does not), which makes the row-wise
        # running sum several times faster.
        cumulative = np.zeros((n_rows, self.negatives_sorted.size + 1), dtype=np.int64)
        np.cumsum(np.take(counts, self.negatives_sorted, axis=1), axis=1, out=cumulative[:, 1:])
        below = np.take(cumulative, self.lo, axis=1)
        if self.has_ties:
            below += np.take(cumulative, self.hi, axis=1)
        else:
            below *= 2
        positive_counts = np.take(counts, self.positives, axis=1)
        twice_numerator = np.einsum("rp,rp->r", positive_counts, below)
        denominator = 2 * positive_counts.sum(axis=1) * cumulative[:, -1]
        auc = np.full(n_rows, np.nan)
        defined = denominator > 0
        auc[defined] = twice_numerator[defined] / denominator[defined]
        return auc


def _auc_classes(metrics: Sequence[str], task_type: TaskType, classes: Sequence[str]) -> list[int]:
    """Indices of the classes whose AUC the requested metrics need."""
    needed: set[int] = set()
    for metric in metrics:
        if metric == "auc" and task_type == "binary":
            needed.add(1)
        elif metric in ("auc", "auc_macro"):
            needed.update(range(len(classes)))
        elif metric.startswith("auc["):
            needed.add(list(classes).index(metric[4:-1]))
    return sorted(needed)


class WeightedEvaluator:
    """Metrics of one ``(y_true, scores)`` pair for many count vectors at once.

    Construction validates the inputs and precomputes everything that does not depend on the
    counts (sort orders, prediction indicators) for the requested metrics only; :meth:`evaluate`
    then maps an (R, n) integer matrix (row r: how often each sample is counted) to
    ``{metric: (R,) array}``. Undefined values (a class with no positive or no negative sample
    counted) are NaN here; :func:`compute_metrics` turns them into errors where asked.
    """

    def __init__(self, y_true: np.ndarray, scores: np.ndarray, task_type: TaskType, classes: Sequence[str],
                 metrics: Sequence[str] | None = None) -> None:
        y, s = check_inputs(y_true, scores, task_type, classes)
        self.task_type = task_type
        self.classes = [str(c) for c in classes]
        names = metric_names(task_type, self.classes)
        if metrics is None:
            self.metrics = names
        else:
            unknown = [m for m in metrics if m not in names]
            if unknown:
                raise ConfigError(f"unknown metric(s) {unknown} for a {task_type} task; available: {names}")
            self.metrics = list(dict.fromkeys(metrics))
        self.n_samples = s.shape[0]
        n_classes = len(self.classes)
        if task_type == "multilabel":
            truth = y.astype(bool)
            predicted = s > MULTILABEL_THRESHOLD
        else:
            truth = y[:, None] == np.arange(n_classes)
            predicted = s.argmax(axis=1)[:, None] == np.arange(n_classes)
        self._truth = truth
        self._needs_labels = any(not m.startswith("auc") for m in self.metrics)
        # classes whose F1 is defined on the samples as given: the fixed set macro F1 averages over
        self._f1_classes = truth.any(axis=0) | predicted.any(axis=0)
        # 0/1 columns whose count-weighted sums give the confusion counts in one matrix product.
        self._indicators = np.hstack([truth, predicted, truth & predicted]).astype(np.float64)
        if task_type == "multilabel":
            agree = truth == predicted
            self._agreement = np.hstack([agree, agree.all(axis=1, keepdims=True)]).astype(np.float64)
        self.auc_classes = _auc_classes(self.metrics, task_type, self.classes)
        self._auc_plans = {k: _AucPlan.build(truth[:, k], s[:, k]) for k in self.auc_classes}

    def class_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Number of positive and negative samples of each class (each sample counted once)."""
        positives = self._truth.sum(axis=0)
        return positives, self.n_samples - positives

    def evaluate(self, counts: np.ndarray) -> dict[str, np.ndarray]:
        """``{metric: (R,) float64}`` for an (R, n) matrix of non-negative integer sample counts."""
        counts = np.asarray(counts)
        if counts.ndim != 2 or counts.shape[1] != self.n_samples or not np.issubdtype(counts.dtype, np.integer):
            raise DataError(f"counts must be an integer array of shape (n_replicates, {self.n_samples}), "
                            f"got {counts.dtype} {counts.shape}")
        counts = counts.astype(np.int64, copy=False)
        n_classes = len(self.classes)
        out: dict[str, np.ndarray] = {}
        for k, plan in self._auc_plans.items():
            out[f"auc[{self.classes[k]}]"] = plan.evaluate(counts)
        if len(self._auc_plans) == n_classes:
            # NaN-propagating mean: a replicate missing any class has no macro AUC.
            out["auc_macro"] = np.mean([out[f"auc[{c}]"] for c in self.classes], axis=0)
        if "auc" in self.metrics:
            out["auc"] = out[f"auc[{self.classes[1]}]"] if self.task_type == "binary" else out["auc_macro"]
        if self._needs_labels:
            weights = counts.astype(np.float64)  # exact: counts are far below 2**53
            confusion = weights @ self._indicators
            support, predicted, hits = (confusion[:, i * n_classes:(i + 1) * n_classes] for i in range(3))
            f1_denominator = support + predicted
            f1_defined = f1_denominator > 0
            f1 = np.divide(2.0 * hits, f1_denominator, out=np.full_like(hits, np.nan), where=f1_defined)
            for k, name in enumerate(self.classes):
                out[f"f1[{name}]"] = f1[:, k]
            # NaN-propagating mean over the fixed class set: a replicate lacking one of them has none
            out["f1_macro"] = (f1[:, self._f1_classes].mean(axis=1) if self._f1_classes.any()
                               else np.full(counts.shape[0], np.nan))
            total = weights.sum(axis=1)
            if self.task_type == "multilabel":
                agreement = weights @ self._agreement
                out["accuracy"] = agreement[:, :n_classes].sum(axis=1) / (n_classes * total)
                out["exact_match"] = agreement[:, n_classes] / total
            else:
                out["accuracy"] = hits.sum(axis=1) / total
        return {name: out[name] for name in self.metrics}


def compute_metrics(y_true: np.ndarray, scores: np.ndarray, task_type: TaskType, classes: Sequence[str], *,
                    metrics: Sequence[str] | None = None,
                    undefined: Literal["raise", "nan"] = "raise") -> dict[str, float]:
    """Metrics of a model's test-set scores: ``{name: value}`` (names: :func:`metric_names`).

    ``metrics`` restricts the output (and the work) to those names. A class with no positive or
    no negative sample has no AUC: with ``undefined="raise"`` (default) that is a
    :class:`DataError` naming the class, so the pipeline decides what to do rather than
    reporting a made-up number; ``undefined="nan"`` returns NaN instead (used for per-group
    metrics where a group legitimately lacks a class).
    """
    evaluator = WeightedEvaluator(y_true, scores, task_type, classes, metrics)
    if undefined not in ("raise", "nan"):
        raise ConfigError(f"undefined must be 'raise' or 'nan', got {undefined!r}")
    if undefined == "raise":
        positives, negatives = evaluator.class_counts()
        for k in evaluator.auc_classes:
            if positives[k] == 0 or negatives[k] == 0:
                raise DataError(
                    f"AUC of class {evaluator.classes[k]!r} is undefined: the {evaluator.n_samples} labels "
                    f"contain {positives[k]} positive and {negatives[k]} negative samples of it")
    values = evaluator.evaluate(np.ones((1, evaluator.n_samples), dtype=np.int64))
    return {name: float(value[0]) for name, value in values.items()}


__all__ = ["TaskType", "TASK_TYPES", "MULTILABEL_THRESHOLD", "metric_names", "check_inputs",
           "WeightedEvaluator", "compute_metrics"]
