"""L2-regularised logistic-regression probes, fitted with full-batch L-BFGS (NumPy; torch on a GPU).

Why not just scikit-learn: the study fits one probe per (backbone, layer, C, label fraction,
seed), on thousands of samples with thousands of features. scikit-learn refits every C (and, one
vs rest, every finding) separately with a generic L-BFGS; here every head and C is its own
L-BFGS problem but they share each pass over the features (:mod:`medprobe.probes.objective`), the
matrix products run in float32 by default (on a GPU when there is one), a grid of C values is
fitted as a warm-started path (or all at once, ``grid="batched"``), and the L-BFGS is
preconditioned against the few dominant directions that activations always have, which cuts the
number of iterations several-fold at weak regularisation. The objective is scikit-learn's, so
the answers agree:

    minimise  0.5 * ||W||^2 + C * sum_i logloss_i        (intercepts not penalised)

which the solver handles in the equivalent, better-scaled form ``mean_i logloss_i +
||W||^2 / (2 C n)`` -- the same scaling scikit-learn's ``lbfgs`` solver uses, so ``tol`` means the
same thing in both: stop when the largest absolute gradient entry is <= ``tol``.

Features are standardised with the training mean and (population) standard deviation of every
feature, exactly like ``StandardScaler``; constant features get scale 1 (they become all-zero and
keep a zero weight). ``coef_`` therefore holds weights on the *standardised* features, directly
comparable with ``LogisticRegression`` fitted on ``StandardScaler`` output.

Task types (labels as the rest of medprobe passes them):

* ``"binary"``: ``y`` (n,) in {0, 1}; one sigmoid; ``predict_proba`` -> (n, 2).
* ``"multiclass"``: ``y`` (n,) ints 0..K-1; multinomial softmax with K weight vectors (like
  scikit-learn); ``predict_proba`` -> (n, K).
* ``"multilabel"``: ``y`` (n, K) 0/1; K independent sigmoid probes, one per finding, each
  converging on its own gradient (stored as one (K, D) weight matrix); ``predict_proba`` -> (n, K)
  per-finding probabilities.

Results are deterministic for a given input, dtype, device and thread count: the solver starts
from zero weights with intercepts at the training log-odds, and the preconditioner's random
sketch comes from a fixed-seed NumPy generator (no global RNG is touched).

This module is the thin estimator; the fitting itself is :func:`medprobe.probes.path.fit_logistic_path`
(scikit-learn's ``_logistic_regression_path`` beside ``LogisticRegression``).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Sequence

import numpy as np

from medprobe.c_grid import check_Cs
from medprobe.errors import ConfigError, DataError
from medprobe.probes.inputs import TaskType, check_features, check_labels, check_task_type, rows_per_block
from medprobe.probes.path import GRID_MODES, SOLVERS, GridMode, PathFit, PathSettings, SolverName, fit_logistic_path
from medprobe.probes.standardise import standardise_block

#: stopping rule of every head (see :class:`LinearProbe`). Why this tight: on real activations
#: (the demo's DINOv2 features, every layer, C up to 10) 1e-4 left the objective 1-4 % above
#: scikit-learn's tightly converged optimum at weak regularisation and moved test AUC by up to
#: 0.006; 1e-6 was borderline (up to 2e-6 relative); 1e-7 stays below ~2e-8 relative
#: (tests/probes/test_probes_real.py checks 1e-6 on every layer and C)
DEFAULT_TOL = 1e-7
DEFAULT_MAX_ITER = 1000
#: a multilabel finding (or the binary positive class) is predicted when its probability exceeds this
THRESHOLD = 0.5


class EstimatorParameters:
    """scikit-learn's estimator protocol -- ``get_params``/``set_params`` from ``__init__``'s
    signature, ``__sklearn_clone__``, ``__sklearn_tags__`` -- without importing scikit-learn
    (about a second of every run): ``sklearn.base.clone``, pipelines and grid searches work on it
    as on a ``BaseEstimator``."""

    @classmethod
    @functools.cache
    def _parameter_names(cls) -> tuple[str, ...]:
        """Read once per class: ``inspect.signature`` costs more than a small probe's fit step."""
        return tuple(name for name in inspect.signature(cls.__init__).parameters if name != "self")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._parameter_names()}

    def set_params(self, **params: Any) -> EstimatorParameters:
        valid = self._parameter_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; valid: {list(valid)}")
            setattr(self, name, value)
        return self

    def __sklearn_clone__(self) -> EstimatorParameters:
        return type(self)(**self.get_params())

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import Tags, TargetTags  # only scikit-learn itself asks for tags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False), transformer_tags=None,
                    regressor_tags=None, classifier_tags=None)

    def __repr__(self) -> str:
        parameters = inspect.signature(type(self).__init__).parameters
        defaults = {name: parameter.default for name, parameter in parameters.items()}
        changed = [f"{name}={value!r}" for name, value in self.get_params().items() if defaults.get(name) != value]
        return f"{type(self).__name__}({', '.join(changed)})"


class LinearProbe(EstimatorParameters):
    """Logistic-regression probe on standardised features (scikit-learn estimator conventions).

    Parameters
    ----------
    task_type: ``"binary"``, ``"multiclass"`` or ``"multilabel"`` (see the module docstring).
    C: inverse L2 strength, as in ``LogisticRegression(C=C)``.
    n_classes: number of classes for multiclass tasks when ``y`` might not show the last one;
        default ``max(y) + 1``. Every class must occur in the training labels.
    max_iter: L-BFGS iterations per head and C.
    tol: every head (the binary sigmoid, each finding of a multilabel task, each class row of a
        multinomial) stops when the max |gradient| of its own mean-scaled objective is <= tol
        (scikit-learn's meaning).
    dtype: ``"float32"`` (fast, default) or ``"float64"``: the precision of the features and their
        products. A float32 head that runs out of precision before ``tol`` finishes with float64
        products over row blocks (see :func:`medprobe.probes.lbfgs.solve`).
    device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    history_size: L-BFGS memory (number of curvature pairs) per head and C.
    grid: how :meth:`fit_path` fits a grid of C: ``"path"`` -- one C after the other, each
        warm-started from the previous solution -- or ``"batched"`` -- every C (and head) from
        the start, all in one pass over ``X`` per iteration (see :mod:`medprobe.probes.objective`).
        Same optimum either way (to within ``tol``); which is faster depends on the shapes.
    head_names: names of the heads (findings or classes) used in convergence warnings; default
        ``"finding <k>"`` / ``"class <k>"``.
    solver: ``"auto"`` (default): Newton's method (:mod:`medprobe.probes.newton`) for sigmoid
        heads on the CPU where its cost model expects it to be faster (small problems, mostly
        n < D + 1), else the batched L-BFGS; ``"newton"`` or
        ``"lbfgs"`` to insist (``"newton"`` is refused for softmax, GPU or large problems).

    Fitted attributes: ``coef_`` (1, D) for binary else (K, D), ``intercept_`` (1,) or (K,) --
    both for the *standardised* features; ``mean_``/``scale_`` (D,) the standardiser;
    ``classes_`` (binary/multiclass) ``arange(K)``; ``n_classes_`` (K classes or findings);
    ``n_features_in_``; ``n_iter_`` (the most any head needed); ``converged_`` (every head met
    ``tol``); ``grad_max_``; per head: ``head_grad_max_``, ``head_converged_``, ``head_n_iter_``;
    ``unconverged_heads_`` (names); ``loss_`` (the summed objective of the heads);
    ``fit_seconds_`` (``"batched"``: the batch's time shared equally by its Cs).
    """

    def __init__(self, task_type: TaskType = "binary", C: float = 1.0, *, n_classes: int | None = None,
                 max_iter: int = DEFAULT_MAX_ITER, tol: float = DEFAULT_TOL, dtype: str = "float32",
                 device: str = "auto", history_size: int = 20, grid: GridMode = "path",
                 head_names: Sequence[str] | None = None, solver: SolverName = "auto") -> None:
        self.task_type = task_type
        self.C = C
        self.n_classes = n_classes
        self.max_iter = max_iter
        self.tol = tol
        self.dtype = dtype
        self.device = device
        self.history_size = history_size
        self.grid = grid
        self.head_names = head_names
        self.solver = solver

    # ---------------------------------------------------------------- fitting
    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearProbe:
        """Standardise ``X`` with its own statistics and fit the probe at ``self.C``."""
        self._fit_into([X], y, [[self]])
        return self

    def fit_path(self, X: np.ndarray, y: np.ndarray, Cs: Sequence[float]) -> list[LinearProbe]:
        """One fitted probe per C (same order as ``Cs``), cheaply.

        The features are validated and standardised once. ``grid="path"``: the Cs are fitted
        from the strongest regularisation (smallest C) upwards, each starting from the previous
        solution -- neighbouring solutions are close, so later fits need a fraction of the
        iterations. ``grid="batched"``: all Cs start together and share every pass over ``X``.
        Each result is an independent :class:`LinearProbe` (a clone of this one with ``C`` set)
        that answers like a probe fitted on that C from scratch, to within ``tol``.
        """
        check_Cs(Cs)
        probes = [self.__sklearn_clone__().set_params(C=float(c)) for c in Cs]
        self._fit_into([X], y, [probes])
        return probes

    def fit_layers_path(self, X_layers: Sequence[np.ndarray], y: np.ndarray,
                        Cs: Sequence[float]) -> list[list[LinearProbe]]:
        """:meth:`fit_path` for the features of several layers of the same samples, in one solver pass.

        Returns ``[layer][C]`` probes; each answers like ``fit_path(X_layers[l], y, Cs)[c]`` to
        within ``tol``: the same problems, stopping rule and products, only some sums run in
        another order. Why: the L-BFGS problems of every layer then share one iteration loop,
        line search and stopping test (:class:`~medprobe.probes.products.SharedPassLayers`), which is
        what a probe grid on a GPU spends its time on. The features of all these layers are in
        memory at once, and on the CPU it pays for small layers only (larger ones fall out of
        the cache between uses; benchmarks/bench_layers_per_pass.py). Layers of different
        widths are fitted in one pass per width; where Newton's method is chosen (small sigmoid
        problems on the CPU) each layer is fitted on its own, with the numbers of fit_path.
        """
        check_Cs(Cs)
        values = [float(c) for c in Cs]
        if not len(X_layers):
            raise ConfigError("fit_layers_path needs the features of at least one layer")
        probes = [[self.__sklearn_clone__().set_params(C=c) for c in values] for _ in X_layers]
        self._fit_into(list(X_layers), y, probes)
        return probes

    def _fit_into(self, X_layers: list[np.ndarray], y: np.ndarray, probes: list[list[LinearProbe]]) -> None:
        """Validate, then fit ``probes[l]`` (one per C, settings of ``self``) on ``X_layers[l]``
        through :func:`~medprobe.probes.path.fit_logistic_path`."""
        self._check_settings()
        Cs = [float(p.C) for p in probes[0]]
        check_Cs(Cs)
        single = len(X_layers) == 1
        X_layers = [check_features(X, "X" if single else f"X_layers[{number}]") for number, X in enumerate(X_layers)]
        n = X_layers[0].shape[0]
        for number, X in enumerate(X_layers):
            if X.shape[0] != n:
                raise DataError(f"X_layers[{number}] has {X.shape[0]} rows but X_layers[0] has {n}: the layers "
                                "must hold the same samples")
        labels, k = check_labels(y, self.task_type, n, "y", self.n_classes, require_all=True)
        names = self._resolved_head_names(k)
        settings = PathSettings(self.task_type, self.max_iter, self.tol, self.dtype, self.device, self.history_size,
                                self.grid, self.solver)
        fits = fit_logistic_path(X_layers, labels, k, Cs, settings, names)
        for row, fitted in zip(probes, fits):
            for probe, fit in zip(row, fitted):
                probe._set_fitted(fit, k)

    def _check_settings(self) -> None:
        check_task_type(self.task_type)
        if not (isinstance(self.max_iter, int) and self.max_iter >= 1):
            raise ConfigError(f"max_iter must be a positive integer, got {self.max_iter!r}")
        if not (self.tol > 0):
            raise ConfigError(f"tol must be positive, got {self.tol!r}")
        if not (isinstance(self.history_size, int) and self.history_size >= 1):
            raise ConfigError(f"history_size must be a positive integer, got {self.history_size!r}")
        if self.n_classes is not None and self.task_type == "binary" and self.n_classes != 2:
            raise ConfigError(f"a binary probe has 2 classes, got n_classes={self.n_classes}")
        if self.grid not in GRID_MODES:
            raise ConfigError(f"probe grid must be one of {', '.join(GRID_MODES)}, got {self.grid!r}")
        if self.solver not in SOLVERS:
            raise ConfigError(f"probe solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")

    def _resolved_head_names(self, k: int) -> list[str]:
        """One name per head: the binary positive class, or each class / finding."""
        count = 1 if self.task_type == "binary" else k
        if self.head_names is None:
            if self.task_type == "binary":
                return ["positive class"]
            return [f"{'finding' if self.task_type == 'multilabel' else 'class'} {j}" for j in range(count)]
        names = [str(name) for name in self.head_names]
        if len(names) != count:
            raise ConfigError(f"head_names has {len(names)} name(s) but this {self.task_type} probe "
                              f"has {count} head(s)")
        return names

    def _set_fitted(self, fit: PathFit, k: int) -> None:
        """The fitted attributes from this probe's share of the path (see the class docstring)."""
        self.coef_, self.intercept_ = fit.coef, fit.intercept
        self.mean_, self.scale_ = fit.mean, fit.scale
        self.n_features_in_ = fit.mean.shape[0]
        self.n_classes_ = k
        if self.task_type != "multilabel":
            self.classes_ = np.arange(k)
        self.head_grad_max_, self.head_converged_ = fit.head_grad_max, fit.head_converged
        self.head_n_iter_ = fit.head_n_iter
        self.n_iter_ = int(fit.head_n_iter.max())
        self.n_evals_ = fit.n_evals
        self.grad_max_ = float(fit.head_grad_max.max())
        self.loss_ = fit.loss
        self.converged_ = bool(fit.head_converged.all())
        self.unconverged_heads_ = fit.unconverged_heads
        self.fit_seconds_ = fit.seconds

    # ---------------------------------------------------------------- prediction
    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise DataError("this LinearProbe is not fitted yet; call fit(X, y) or fit_path(X, y, Cs) first")

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits (n, outputs): one column for binary, K for multiclass/multilabel.

        Scoring is float64 NumPy on the host whatever the fitting device: it is one cheap matrix
        product, and the same probe then scores the same way everywhere.
        """
        self._check_fitted()
        X = check_features(X, "X", self.n_features_in_)
        step = rows_per_block(X.shape[1])
        return np.concatenate([standardise_block(X[start:start + step], self.mean_, self.scale_) @ self.coef_.T
                               + self.intercept_ for start in range(0, X.shape[0], step)])

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities: (n, 2) binary, (n, K) multiclass (rows sum to 1), (n, K) per finding."""
        logits = self.decision_function(X)
        if self.task_type == "multiclass":
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            return shifted / shifted.sum(axis=1, keepdims=True)
        positive = np.exp(-np.logaddexp(0.0, -logits))
        if self.task_type == "binary":
            return np.column_stack([1.0 - positive[:, 0], positive[:, 0]])
        return positive

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class indices (n,) -- the most probable class, ties to the lower index -- or, for
        multilabel, a 0/1 matrix (n, K) of findings whose probability exceeds 0.5."""
        probabilities = self.predict_proba(X)
        if self.task_type == "multilabel":
            return (probabilities > THRESHOLD).astype(np.int64)
        return np.argmax(probabilities, axis=1)


__all__ = ["DEFAULT_MAX_ITER", "DEFAULT_TOL", "THRESHOLD", "EstimatorParameters", "LinearProbe"]
