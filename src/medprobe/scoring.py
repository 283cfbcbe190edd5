"""Rank-based scores and the few distribution functions medprobe needs, without heavy imports.

Why not ``sklearn.metrics`` / ``scipy.stats``: importing them costs 1-2 s, a large part of a
small run's fixed cost, for a handful of formulas. Each function here equals its counterpart
(tested against it, ties included):

* :func:`midranks` -- ``scipy.stats.rankdata(method="average")`` along the last axis;

* :func:`binary_auc` -- ``roc_auc_score``: the Mann-Whitney statistic with mid-ranks for ties,
  i.e. the trapezoidal area under the ROC curve;
* :func:`roc_points` -- ``roc_curve(drop_intermediate=False)``: one point per distinct score;
* :func:`macro_f1` -- ``f1_score(average="macro")`` over the labels present in truth or
  prediction, and for 0/1 indicator matrices the per-column mean that skips columns with no
  positive in truth or prediction (``zero_division=nan``).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr


def midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks along the last axis, ties sharing the mean of their ranks (float64)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, axis=-1, kind="mergesort")
    ordered = np.take_along_axis(values, order, axis=-1)
    size = values.shape[-1]
    position = np.broadcast_to(np.arange(size), values.shape)
    starts_group = np.ones(values.shape, dtype=bool)
    starts_group[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    ends_group = np.ones(values.shape, dtype=bool)
    ends_group[..., :-1] = starts_group[..., 1:]
    first = np.maximum.accumulate(np.where(starts_group, position, 0), axis=-1)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends_group, position, size), axis=-1), axis=-1), axis=-1)
    ranks = np.empty(values.shape)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=-1)
    return ranks


def normal_two_sided_p(z: float) -> float:
    """``2 * P(Z > |z|)`` for a standard normal ``Z``."""
    return float(2.0 * ndtr(-abs(z)))


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the boolean labels ``positive`` (both classes
    must occur)."""
    positive = np.asarray(positive, dtype=bool)
    n_positive = int(positive.sum())
    n_negative = positive.size - n_positive
    if n_positive == 0 or n_negative == 0:
        raise ValueError("AUC needs both a positive and a negative sample")
    ranks = midranks(scores)
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def roc_points(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    positive = np.asarray(positive, dtype=bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    ranked, hits = np.asarray(scores, dtype=np.float64)[order], positive[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]
    true_positives = np.cumsum(hits)[last_of_each]
    false_positives = last_of_each + 1 - true_positives
    return (np.r_[0.0, false_positives / max(1, positive.size - positive.sum())],
            np.r_[0.0, true_positives / max(1, positive.sum())])


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-averaged F1: class labels (n,) or 0/1 indicator matrices (n, K)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim == 2:
        truth, predicted = y_true == 1, y_pred == 1
        true_positive = (truth & predicted).sum(axis=0)
        denominator = truth.sum(axis=0) + predicted.sum(axis=0)
        scores = np.where(denominator > 0, 2 * true_positive / np.maximum(denominator, 1), np.nan)
        return float(np.nanmean(scores)) if np.isfinite(scores).any() else float("nan")
    labels = np.union1d(y_true, y_pred)
    truth, predicted = y_true[:, None] == labels, y_pred[:, None] == labels
    true_positive = (truth & predicted).sum(axis=0)
    return float(np.mean(2 * true_positive / (truth.sum(axis=0) + predicted.sum(axis=0))))
