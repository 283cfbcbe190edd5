"""Choosing the regularisation strength C (and the layer) of a probe without looking at test data.

* :func:`select_probe`: fit the whole C grid on the training split (one warm-started path) and
  keep the C with the best score on the validation split; :func:`select_probes` does so for
  several layers in one solver pass.
* :func:`cv_select`: for data without a validation split -- K folds inside the training data
  (class-stratified, optionally grouped by patient), C chosen on the mean held-out score.
* :func:`select_best`: the one best-of-grid rule -- of validation scores by layer and C, the
  best (layer, C) and the pairs that tie it -- used for C here, and for the layer by the
  experiment.

Refit policy (kept simple, as in the study): after choosing C on the validation split the probe
that was fitted on the *training split alone* is returned -- it is not refitted on train + val, so
its validation score is the one it was chosen by and the validation data stay out of the fit.
:func:`cv_select` has no such probe (each fold's probe saw only part of the training data), so it
refits once on all of the training data at the chosen C.

Ties go to the smallest C (the simplest model) and, for layers, to the first (shallowest) layer
given; scores within :data:`TIE_TOLERANCE` of the best are reported as ties.

Validation metrics (scikit-learn, per class then averaged):

* ``"auc"``: binary -- AUC of the positive class; multiclass -- macro one-vs-rest AUC;
  multilabel -- mean AUC over findings. Classes (findings) whose validation labels are all
  positive or all negative have no AUC and are left out of the mean (with every class present
  this is exactly ``roc_auc_score(average="macro", multi_class="ovr")``).
* ``"f1"``: macro-F1 of the predicted classes (argmax, ties to the lower index; multilabel:
  probability > 0.5), averaged over the classes that occur in the labels or the predictions.
"""

from __future__ import annotations

from typing import Any, Hashable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from medprobe.c_grid import check_Cs
from medprobe.errors import ConfigError, DataError
from medprobe.probes.inputs import TaskType, check_features, check_labels
from medprobe.probes.logistic import THRESHOLD, LinearProbe
from medprobe.scoring import binary_auc, macro_f1

Metric = Literal["auc", "f1"]
METRICS: tuple[str, ...] = ("auc", "f1")
#: the default C grid: inverse L2 strengths from very strong to weak regularisation
DEFAULT_CS: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 2, 7))
#: validation scores closer than this to the best one count as a tie (AUC / F1 live in [0, 1]; two
#: layers whose probes rank the validation samples identically differ by summation noise at most)
TIE_TOLERANCE = 1e-12


def validation_score(y_true: np.ndarray, probabilities: np.ndarray, task_type: TaskType,
                     metric: Metric = "auc") -> float:
    """Macro AUC (default) or macro-F1 of predicted probabilities; see the module docstring."""
    if metric not in METRICS:
        raise ConfigError(f"unknown selection metric {metric!r}; expected one of {', '.join(METRICS)}")
    y = np.asarray(y_true)
    p = np.asarray(probabilities)
    if metric == "f1":
        if task_type == "multilabel":
            return macro_f1(y, (p > THRESHOLD).astype(np.int64))
        return macro_f1(y, np.argmax(p, axis=1))
    if task_type == "binary":
        columns = [(y == 1, p[:, 1])]
    elif task_type == "multiclass":
        columns = [(y == k, p[:, k]) for k in range(p.shape[1])]
    else:
        columns = [(y[:, k] == 1, p[:, k]) for k in range(p.shape[1])]
    aucs = [binary_auc(positive, score) for positive, score in columns if 0 < positive.sum() < len(positive)]
    if not aucs:
        raise DataError("the validation labels have only one class (for every finding), so AUC is undefined; "
                        "use a larger validation split or metric='f1'")
    return float(np.mean(aucs))


def select_best(scores_by_layer_and_C: Mapping[Hashable, Mapping[float, float]],
                ) -> tuple[Hashable, float, list[tuple[Hashable, float]]]:
    """``(layer, C, ties)``: the best validation score of a grid and the (layer, C) pairs that tie it.

    Layers are taken in the mapping's order (shallowest first), each layer's Cs in ascending order.
    The best is the highest score, the first in that order -- shallowest layer, then smallest C --
    among equal ones; ``ties`` are the pairs within :data:`TIE_TOLERANCE` of it, in the same order
    (the best among them), so a tie is reported instead of being hidden. A grid of one layer
    chooses C; one C per layer (each layer's own choice) chooses the layer.
    """
    pairs = [(layer, C) for layer, by_C in scores_by_layer_and_C.items() for C in sorted(by_C)]
    if not pairs:
        raise DataError("select_best needs validation scores of at least one layer and C")
    values = np.asarray([scores_by_layer_and_C[layer][C] for layer, C in pairs], dtype=float)
    best = int(np.argmax(values))
    top = float(np.max(values))
    ties = [pair for pair, value in zip(pairs, values) if top - value <= TIE_TOLERANCE]
    return (*pairs[best], ties)


def select_probe(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    task_type: TaskType,
    Cs: Sequence[float] = DEFAULT_CS,
    metric: Metric = "auc",
    **probe_params: Any,
) -> tuple[LinearProbe, pd.DataFrame]:
    """Fit every C on train (one path), score each on val, return the best probe and the table.

    ``probe_params`` go to :class:`LinearProbe` (``max_iter``, ``tol``, ``dtype``, ``device``,
    ``n_classes``, ``history_size``, ``grid``, ``head_names``). The table has one row per C
    (ascending): ``C``, ``val_score``, ``n_iter``, ``converged`` (every head met ``tol``),
    ``fit_seconds``, ``selected``, ``unconverged`` (the names of the heads that did not, comma-separated).
    The returned probe is the one fitted on the training split (see the refit policy in the module docstring).
    """
    (probe, table), = select_probes([X_train], y_train, [X_val], y_val, task_type, Cs, metric, **probe_params)
    return probe, table


def select_probes(
    X_train_layers: Sequence[np.ndarray],
    y_train: np.ndarray,
    X_val_layers: Sequence[np.ndarray],
    y_val: np.ndarray,
    task_type: TaskType,
    Cs: Sequence[float] = DEFAULT_CS,
    metric: Metric = "auc",
    **probe_params: Any,
) -> list[tuple[LinearProbe, pd.DataFrame]]:
    """:func:`select_probe` for several layers' features of the same samples, fitted in one solver
    pass (:meth:`LinearProbe.fit_layers_path`): ``[(probe, table)]`` per layer, each C chosen on
    that layer's own validation scores."""
    if metric not in METRICS:
        raise ConfigError(f"unknown selection metric {metric!r}; expected one of {', '.join(METRICS)}")
    if len(X_train_layers) != len(X_val_layers):
        raise DataError(f"{len(X_train_layers)} layers of training features but {len(X_val_layers)} of validation")
    grid = list(check_Cs(Cs))
    single = len(X_train_layers) == 1
    X_train_layers = [check_features(X, "X_train" if single else f"X_train of layer {number}")
                      for number, X in enumerate(X_train_layers)]
    X_val_layers = [check_features(X, "X_val" if single else f"X_val of layer {number}", X_train.shape[1])
                    for number, (X, X_train) in enumerate(zip(X_val_layers, X_train_layers))]
    _, k = check_labels(y_train, task_type, X_train_layers[0].shape[0], "y_train", probe_params.get("n_classes"))
    check_labels(y_val, task_type, X_val_layers[0].shape[0], "y_val", k, require_all=False)

    results = []
    probes_by_layer = LinearProbe(task_type, **probe_params).fit_layers_path(X_train_layers, y_train, grid)
    for probes, X_val in zip(probes_by_layer, X_val_layers):
        scores = [validation_score(y_val, probe.predict_proba(X_val), task_type, metric) for probe in probes]
        _, best_C, _ = select_best({"layer": dict(zip(grid, scores))})
        best = grid.index(best_C)
        table = pd.DataFrame({
            "C": grid, "val_score": scores,
            "n_iter": [p.n_iter_ for p in probes], "converged": [p.converged_ for p in probes],
            "fit_seconds": [p.fit_seconds_ for p in probes], "selected": [i == best for i in range(len(grid))],
            "unconverged": [", ".join(p.unconverged_heads_) for p in probes],
        })
        results.append((probes[best], table))
    return results


def _fold_names(n_splits: int) -> list[str]:
    return [f"fold{i}" for i in range(n_splits)]


def cv_select(
    X: np.ndarray,
    y: np.ndarray,
    task_type: TaskType,
    Cs: Sequence[float] = DEFAULT_CS,
    metric: Metric = "auc",
    n_splits: int = 5,
    groups: Sequence | np.ndarray | None = None,
    seed: int = 0,
    **probe_params: Any,
) -> tuple[LinearProbe, pd.DataFrame]:
    """Choose C by K-fold cross-validation inside the training data; refit on all of it.

    Folds come from :func:`medprobe.data.splits.group_stratified_split` with K equal shares, so
    they are class-stratified for all three task types and, with ``groups`` (a patient id per
    sample), never split a patient across folds. Each fold's C path is scored on its held-out
    fold; C maximises the mean held-out score. The table has ``C``, ``val_score`` (the mean),
    ``val_std``, one ``fold<i>`` column per fold and ``selected``.
    """
    from medprobe.data.splits import group_stratified_split

    if metric not in METRICS:
        raise ConfigError(f"unknown selection metric {metric!r}; expected one of {', '.join(METRICS)}")
    if not (isinstance(n_splits, int) and n_splits >= 2):
        raise ConfigError(f"n_splits must be an integer >= 2, got {n_splits!r}")
    grid = list(check_Cs(Cs))
    X = check_features(X, "X")
    labels, k = check_labels(y, task_type, X.shape[0], "y", probe_params.get("n_classes"))
    names = _fold_names(n_splits)
    folds = group_stratified_split(labels, groups, {name: 1.0 / n_splits for name in names}, seed)
    if task_type == "multiclass":
        probe_params = {**probe_params, "n_classes": k}

    fold_scores: dict[str, list[float]] = {}
    for name in names:
        held_out = folds == name
        if held_out.all() or not held_out.any():
            raise DataError(f"cross-validation {name} is empty or holds every sample; use fewer folds")
        try:
            probes = LinearProbe(task_type, **probe_params).fit_path(X[~held_out], labels[~held_out], grid)
            fold_scores[name] = [validation_score(labels[held_out], p.predict_proba(X[held_out]), task_type, metric)
                                 for p in probes]
        except DataError as error:
            raise DataError(f"cross-validation {name} ({int(held_out.sum())} held-out samples): {error}") from error

    table = pd.DataFrame({"C": grid, **fold_scores})
    table["val_score"] = table[names].mean(axis=1)
    table["val_std"] = table[names].std(axis=1, ddof=1)
    _, best_C, _ = select_best({"layer": dict(zip(grid, table["val_score"].to_numpy()))})
    best = grid.index(best_C)
    table["selected"] = np.arange(len(grid)) == best
    probe = LinearProbe(task_type, C=grid[best], **probe_params).fit(X, labels)
    return probe, table[["C", "val_score", "val_std", *names, "selected"]]
