"""L2-regularised logistic-regression probes, fitted with full-batch L-BFGS (NumPy; torch on a GPU).

Why not just scikit-learn: the study fits one probe per (backbone, layer, C, label fraction,
seed), on thousands of samples with thousands of features. scikit-learn refits every C (and, one
vs rest, every finding) separately with a generic L-BFGS; here every head and C is its own
L-BFGS problem but they share each pass over the features (:mod:`medprobe.probes.solver`), the
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
"""

from __future__ import annotations

import contextlib
import glob
import inspect
import math
import os
import time
import warnings
from typing import Any, Literal, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from medprobe.errors import ConfigError, ConvergenceWarning, DataError
from medprobe.probes.newton import MAX_SYSTEM, NewtonSolver, newton_applies, newton_possible
from medprobe.probes.solver import (MAX_ITER, BatchObjective, BatchSolution, FeatureProducts, LayerStack,
                                    Preconditioner, solve)

TaskType = Literal["binary", "multiclass", "multilabel"]
GridMode = Literal["path", "batched"]
GRID_MODES: tuple[str, ...] = ("path", "batched")
SolverName = Literal["auto", "newton", "lbfgs"]
SOLVERS: tuple[str, ...] = ("auto", "newton", "lbfgs")
#: stopping rule of every head (see :class:`LinearProbe`). Why this tight: on real activations
#: (the demo's DINOv2 features, every layer, C up to 10) 1e-4 left the objective 1-4 % above
#: scikit-learn's tightly converged optimum at weak regularisation and moved test AUC by up to
#: 0.006; 1e-6 was borderline (up to 2e-6 relative); 1e-7 stays below ~2e-8 relative
#: (tests/test_probes_real.py checks 1e-6 on every layer and C)
DEFAULT_TOL = 1e-7
DEFAULT_MAX_ITER = 1000
TASK_TYPES: tuple[str, ...] = ("binary", "multiclass", "multilabel")
#: a multilabel finding (or the binary positive class) is predicted when its probability exceeds this
THRESHOLD = 0.5
#: elements per block when standardising or scoring, so temporaries stay small (32 MiB in float64)
_BLOCK_ELEMENTS = 1 << 22
#: features with fewer elements than this (4 MiB in float32) are fitted with a single-threaded BLAS
_MULTITHREADED_ELEMENTS = 1 << 20
_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}
#: "no more progress": a relative decrease of the (float64-accumulated) objective below this is
#: rounding noise of the dtype the products run in (float64: scikit-learn's ``64 * eps``)
_TOL_CHANGE = {"float32": 1e-11, "float64": 64 * float(np.finfo(np.float64).eps)}


# --------------------------------------------------------------------------- settings
def _gpu_device_nodes() -> bool:
    """Whether this machine shows a GPU to processes at all (NVIDIA or ROCm device files).

    Why: ``device: auto`` must not import torch (about 2 s) just to learn that a CPU-only machine
    has no GPU; where device files exist, torch is asked.
    """
    return bool(glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd") or os.path.exists("/dev/dxg"))


def resolve_device(device: Any) -> str:
    """The device the probe's products run on: ``"cpu"`` (NumPy) or a torch GPU device name.

    ``"auto"`` means CUDA when torch sees a GPU, else the CPU; anything else is used as given
    (a ``torch.device`` too) and checked.
    """
    name = str(device)
    if name == "cpu":
        return "cpu"
    if name == "auto" and not _gpu_device_nodes():
        return "cpu"
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(name)
    except RuntimeError as error:
        raise ConfigError(f"probe device {device!r} is not a torch device ('auto', 'cpu', 'cuda', 'cuda:1', ...)") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"probe device {device!r} was requested but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    return str(resolved)


def _resolve_dtype(dtype: str) -> np.dtype:
    if dtype not in _DTYPES:
        raise ConfigError(f"probe dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


def _check_task_type(task_type: str) -> None:
    if task_type not in TASK_TYPES:
        raise ConfigError(f"unknown task type {task_type!r}; expected one of {', '.join(TASK_TYPES)}")


# --------------------------------------------------------------------------- validation
def _rows_per_block(n_features: int) -> int:
    return max(1, _BLOCK_ELEMENTS // max(1, n_features))


def check_features(X: np.ndarray, what: str = "X", n_features: int | None = None) -> np.ndarray:
    """``X`` as a 2-D real array with only finite values, or a :class:`DataError` that says where.

    The finiteness check runs over row blocks so a large feature matrix is never copied whole.
    """
    array = np.asarray(X)
    if array.ndim != 2:
        raise DataError(f"{what} must be a 2-D array (n_samples, n_features), got shape {array.shape}")
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise DataError(f"{what} must hold real numbers, got dtype {array.dtype}")
    n, d = array.shape
    if n == 0 or d == 0:
        raise DataError(f"{what} is empty (shape {array.shape})")
    if n_features is not None and d != n_features:
        raise DataError(f"{what} has {d} features but the probe was fitted on {n_features}")
    if np.issubdtype(array.dtype, np.floating):
        bad_rows: list[np.ndarray] = []
        bad_features = np.zeros(d, dtype=bool)
        step = _rows_per_block(d)
        for start in range(0, n, step):
            bad = ~np.isfinite(array[start:start + step])
            if bad.any():
                bad_rows.append(start + np.flatnonzero(bad.any(axis=1)))
                bad_features |= bad.any(axis=0)
        if bad_rows:
            rows = np.concatenate(bad_rows)
            first_row = int(rows[0])
            first_feature = int(np.flatnonzero(~np.isfinite(array[first_row]))[0])
            raise DataError(
                f"{what} has {len(rows)} row(s) with NaN or inf values in {int(bad_features.sum())} feature(s) "
                f"(first: row {first_row}, feature {first_feature}); drop or impute those samples before probing"
            )
    return array


def _integer_labels(y: np.ndarray, what: str) -> np.ndarray:
    """Labels as int64, refusing NaN and non-integer values instead of silently truncating them."""
    if y.dtype == bool or np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.floating):
        raise DataError(f"{what} must hold integer class indices, got dtype {y.dtype}")
    if np.isnan(y).any():
        raise DataError(f"{what} has {int(np.isnan(y).sum())} missing label(s) (NaN)")
    if not np.all(y == np.round(y)):
        bad = y[y != np.round(y)]
        raise DataError(f"{what} must hold integer class indices, got non-integer values such as {bad[0]!r}")
    return y.astype(np.int64)


def check_labels(
    y: np.ndarray,
    task_type: TaskType,
    n_rows: int,
    what: str = "y",
    n_classes: int | None = None,
    require_all: bool = True,
) -> tuple[np.ndarray, int]:
    """Validated labels and the number of classes (or findings).

    ``n_classes`` fixes K (multiclass); otherwise K is ``max(y) + 1`` (binary: 2; multilabel: the
    number of columns). ``require_all`` (training data) demands that every class occurs -- for
    multilabel, that every finding has both positives and negatives -- because a probe cannot
    learn a class it never sees (its weights would run off to infinity or stay meaningless).
    """
    _check_task_type(task_type)
    labels = np.asarray(y)
    if task_type == "multilabel":
        if labels.ndim != 2:
            raise DataError(f"{what} for a multilabel task must be a 0/1 matrix (n_samples, n_findings), "
                            f"got shape {labels.shape}")
    elif labels.ndim != 1:
        raise DataError(f"{what} for a {task_type} task must be a 1-D array of class indices, got shape {labels.shape}")
    if labels.shape[0] != n_rows:
        raise DataError(f"{what} has {labels.shape[0]} label rows but the features have {n_rows} rows")
    labels = _integer_labels(labels, what)

    if task_type == "multilabel":
        k = labels.shape[1]
        if n_classes is not None and k != n_classes:
            raise DataError(f"{what} has {k} findings but the probe was fitted on {n_classes}")
        if k == 0:
            raise DataError(f"{what} has no findings (0 columns)")
        outside = ~np.isin(labels, (0, 1))
        if outside.any():
            raise DataError(f"{what} for a multilabel task must be 0/1; found {np.unique(labels[outside])[:5].tolist()}")
        if require_all:
            positives = labels.sum(axis=0)
            single = np.flatnonzero((positives == 0) | (positives == n_rows))
            if len(single):
                detail = ", ".join(f"finding {j}: {'no positives' if positives[j] == 0 else 'no negatives'}"
                                   for j in single[:10])
                raise DataError(f"{what}: {len(single)} finding(s) have only one value in the training data "
                                f"({detail}); a probe needs both positives and negatives for every finding")
        return labels, k

    k = 2 if task_type == "binary" else (n_classes if n_classes is not None else int(labels.max()) + 1)
    if labels.min() < 0 or labels.max() >= k:
        outside = np.unique(labels[(labels < 0) | (labels >= k)])
        raise DataError(f"{what} has labels outside 0..{k - 1} for a {task_type} task: {outside[:10].tolist()}")
    if k < 2:
        raise DataError(f"{what} has fewer than 2 classes (only class {labels[0]}); a probe needs at least 2")
    if require_all:
        counts = np.bincount(labels, minlength=k)
        missing = np.flatnonzero(counts == 0)
        if len(missing):
            if task_type == "binary" or k - len(missing) < 2:
                present = np.flatnonzero(counts).tolist()
                raise DataError(f"{what} has fewer than 2 classes (only {present}); a probe needs at least 2")
            raise DataError(f"{what}: class(es) {missing.tolist()} of 0..{k - 1} have no training samples; a "
                            f"multinomial probe cannot learn a class it never sees -- drop it or re-split")
    return labels, k


# --------------------------------------------------------------------------- standardising
def _standardise_block(block: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``(block - mean) / scale`` in float64 (large offsets cancel exactly)."""
    return (block.astype(np.float64) - mean) / scale


def _fit_standardiser(X: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-feature mean and population std (float64, two passes) and the standardised ``X`` in ``dtype``.

    Zero-variance features get scale 1, as in ``StandardScaler``: they turn into zeros instead
    of NaNs, and their weights stay at 0 under the L2 penalty. Row blocks keep the float64
    temporaries small.
    """
    n, d = X.shape
    step = _rows_per_block(d)
    mean = np.zeros(d)
    for start in range(0, n, step):
        mean += X[start:start + step].sum(axis=0, dtype=np.float64)
    mean /= n
    squares = np.zeros(d)
    for start in range(0, n, step):
        centred = X[start:start + step].astype(np.float64) - mean
        squares += np.einsum("ij,ij->j", centred, centred)
    std = np.sqrt(squares / n)
    scale = np.where(std > 0, std, 1.0)
    standardised = np.empty((n, d), dtype=dtype)
    for start in range(0, n, step):
        standardised[start:start + step] = _standardise_block(X[start:start + step], mean, scale)
    return mean, scale, standardised


# --------------------------------------------------------------------------- estimator
class EstimatorParameters:
    """scikit-learn's estimator protocol -- ``get_params``/``set_params`` from ``__init__``'s
    signature, ``__sklearn_clone__``, ``__sklearn_tags__`` -- without importing scikit-learn
    (about a second of every run): ``sklearn.base.clone``, pipelines and grid searches work on it
    as on a ``BaseEstimator``."""

    @classmethod
    def _parameter_names(cls) -> list[str]:
        return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._parameter_names()}

    def set_params(self, **params: Any) -> EstimatorParameters:
        valid = self._parameter_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; valid: {valid}")
            setattr(self, name, value)
        return self

    def __sklearn_clone__(self) -> EstimatorParameters:
        return type(self)(**self.get_params())

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import Tags, TargetTags  # only scikit-learn itself asks for tags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False), transformer_tags=None,
                    regressor_tags=None, classifier_tags=None)

    def __repr__(self) -> str:
        defaults = {name: parameter.default for name, parameter in inspect.signature(type(self).__init__).parameters.items()}
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
        products over row blocks (see :func:`medprobe.probes.solver.solve`).
    device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    history_size: L-BFGS memory (number of curvature pairs) per head and C.
    grid: how :meth:`fit_path` fits a grid of C: ``"path"`` -- one C after the other, each
        warm-started from the previous solution -- or ``"batched"`` -- every C (and head) from
        the start, all in one pass over ``X`` per iteration (see :mod:`medprobe.probes.solver`).
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
        probes = [self.__sklearn_clone__().set_params(C=c) for c in self._checked_grid(Cs)]
        self._fit_into([X], y, [probes])
        return probes

    def fit_layers_path(self, X_layers: Sequence[np.ndarray], y: np.ndarray,
                        Cs: Sequence[float]) -> list[list[LinearProbe]]:
        """:meth:`fit_path` for the features of several layers of the same samples, in one solver pass.

        Returns ``[layer][C]`` probes; each answers like ``fit_path(X_layers[l], y, Cs)[c]`` to
        within ``tol``: the same problems, stopping rule and products, only some sums run in
        another order. Why: the L-BFGS problems of every layer then share one iteration loop,
        line search and stopping test (:class:`~medprobe.probes.solver.LayerStack`), which is
        what a probe grid on a GPU spends its time on. The features of all these layers are in
        memory at once, and on the CPU it pays for small layers only (larger ones fall out of
        the cache between uses; benchmarks/bench_layers_per_pass.py). Layers of different
        widths are fitted in one pass per width; where Newton's method is chosen (small sigmoid
        problems on the CPU) each layer is fitted on its own, with the numbers of fit_path.
        """
        values = self._checked_grid(Cs)
        if not len(X_layers):
            raise ConfigError("fit_layers_path needs the features of at least one layer")
        probes = [[self.__sklearn_clone__().set_params(C=c) for c in values] for _ in X_layers]
        self._fit_into(list(X_layers), y, probes)
        return probes

    @staticmethod
    def _checked_grid(Cs: Sequence[float]) -> list[float]:
        values = [float(c) for c in Cs]
        if not values or any(not math.isfinite(c) or c <= 0 for c in values):
            raise ConfigError(f"Cs must be a non-empty list of positive finite numbers, got {list(Cs)}")
        if len(set(values)) != len(values):
            raise ConfigError(f"Cs has repeated values: {values}")
        return values

    def _fit_into(self, X_layers: list[np.ndarray], y: np.ndarray, probes: list[list[LinearProbe]]) -> None:
        """Validate, then fit ``probes[l]`` (one per C, settings of ``self``) on ``X_layers[l]``:
        the layers of equal width in one solver pass, each standardised with its own statistics."""
        self._check_settings()
        if any(not math.isfinite(float(p.C)) or float(p.C) <= 0 for row in probes for p in row):
            raise ConfigError(f"C must be a positive finite number, got {[p.C for p in probes[0]]}")
        single = len(X_layers) == 1
        X_layers = [check_features(X, "X" if single else f"X_layers[{number}]") for number, X in enumerate(X_layers)]
        n = X_layers[0].shape[0]
        for number, X in enumerate(X_layers):
            if X.shape[0] != n:
                raise DataError(f"X_layers[{number}] has {X.shape[0]} rows but X_layers[0] has {n}: the layers "
                                "must hold the same samples")
        labels, k = check_labels(y, self.task_type, n, "y", self.n_classes, require_all=True)
        names = self._resolved_head_names(k)
        device, dtype = resolve_device(self.device), _resolve_dtype(self.dtype)
        targets, softmax = self._targets(labels, k)
        # one problem per head and C: a softmax is one problem of K outputs, sigmoids one each
        heads = 1 if softmax else targets.shape[1]
        by_width: dict[int, list[int]] = {}
        for number, X in enumerate(X_layers):
            by_width.setdefault(X.shape[1], []).append(number)
        batch = heads * (len(probes[0]) if self.grid == "batched" else 1)  # problems per layer and solve
        for width, members in by_width.items():
            newton = self._use_newton(device, softmax, n, width, batch)
            # Newton's systems are per feature matrix: one layer per pass
            for numbers in ([number] for number in members) if newton else [members]:
                self._fit_pass([X_layers[number] for number in numbers], targets, softmax, heads,
                               [probes[number] for number in numbers], device, dtype, k, names, newton)

    def _fit_pass(self, X_layers: list[np.ndarray], targets: np.ndarray, softmax: bool, heads: int,
                  probes: list[list[LinearProbe]], device: str, dtype: np.dtype, k: int, names: list[str],
                  newton: bool) -> None:
        """One solver pass: every head x C of layers of equal width (see :meth:`fit_layers_path`)."""
        n, d = X_layers[0].shape
        n_layers = len(X_layers)
        # On a GPU the solver's host-side NumPy work is small (vectors of K * D numbers) and
        # alternates with torch's own thread pool; a multi-threaded NumPy BLAS would fight that
        # pool for the cores (measured: ~3x slower fits on a busy 2-core machine), so it runs
        # single-threaded there. On the CPU NumPy's BLAS does the products: with all its threads
        # for large features, with one for small ones, where threads only add synchronisation
        # (a 384 x 60 QR took 0.2 s instead of 1 ms with two BLAS threads on a busy 2-core machine).
        single_threaded = device != "cpu" or n * d < _MULTITHREADED_ELEMENTS
        with threadpool_limits(limits=1, user_api="blas") if single_threaded else contextlib.nullcontext():
            standardisers, parts = [], []
            for X in X_layers:
                mean, scale, standardised = _fit_standardiser(X, dtype)
                standardisers.append((mean, scale))
                if device == "cpu":
                    parts.append(FeatureProducts(standardised))
                else:
                    import torch

                    parts.append(FeatureProducts(torch.from_numpy(standardised).to(device)))
                    del standardised  # the GPU holds the features; the host copy can go
            n_per_c = heads * n_layers
            if newton:
                solver = NewtonSolver(parts[0].X, targets)  # one layer (see _fit_into)
                outputs = 1

                def fit(theta0, l2, head, curvature, layer):
                    return solver.minimise(theta0, l2, head, self.max_iter, self.tol)
            else:
                stack = LayerStack(parts)
                objective = BatchObjective(stack, targets, softmax)
                preconditioner = Preconditioner(stack)
                outputs = objective.outputs

                def fit(theta0, l2, head, curvature, layer):
                    return solve(objective, preconditioner, theta0, l2, head, curvature, self.max_iter, self.tol,
                                 self.history_size, _TOL_CHANGE[self.dtype], layer)
            # the problems of one C: layer-major, then head
            start = np.zeros((n_per_c, outputs, d + 1))
            start[:, :, -1] = np.tile(self._initial_intercept(targets, softmax).reshape(heads, outputs), (n_layers, 1))
            rate = targets.mean(axis=0)
            curvature = np.tile(np.full(heads, float(np.mean(rate * (1 - rate)))) if softmax else rate * (1 - rate),
                                n_layers)
            head, layer = np.tile(np.arange(heads), n_layers), np.repeat(np.arange(n_layers), heads)
            order = sorted(range(len(probes[0])), key=lambda c: float(probes[0][c].C))
            Cs = [float(probes[0][c].C) for c in order]
            if self.grid == "batched":
                started = time.perf_counter()
                solution = fit(np.tile(start, (len(Cs), 1, 1)), np.repeat([1.0 / (C * n) for C in Cs], n_per_c),
                               np.tile(head, len(Cs)), np.tile(curvature, len(Cs)), np.tile(layer, len(Cs)))
                seconds = (time.perf_counter() - started) / (len(Cs) * n_layers)
                for position, c in enumerate(order):
                    for number in range(n_layers):
                        first = position * n_per_c + number * heads
                        probes[number][c]._store(solution, slice(first, first + heads), softmax,
                                                 *standardisers[number], k, names, seconds)
            else:
                theta = start
                for c, C in zip(order, Cs):
                    started = time.perf_counter()
                    solution = fit(theta, np.full(n_per_c, 1.0 / (C * n)), head, curvature, layer)
                    theta = solution.theta
                    seconds = (time.perf_counter() - started) / n_layers
                    for number in range(n_layers):
                        probes[number][c]._store(solution, slice(number * heads, (number + 1) * heads), softmax,
                                                 *standardisers[number], k, names, seconds)

    def _check_settings(self) -> None:
        _check_task_type(self.task_type)
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

    def _use_newton(self, device: str, softmax: bool, n: int, d: int, n_problems: int) -> bool:
        """Newton for small sigmoid problems on the CPU (``solver="auto"``), or as asked."""
        if self.solver == "lbfgs":
            return False
        possible = device == "cpu" and not softmax and newton_possible(n, d, n_problems)
        if self.solver == "newton" and not possible:
            raise ConfigError(f"solver='newton' needs sigmoid heads (binary or multilabel), the CPU and a small "
                              f"problem (min(n, D + 1) <= {MAX_SYSTEM}); got task {self.task_type!r}, device "
                              f"{device!r}, n={n}, D={d}, {n_problems} problems")
        return possible and (self.solver == "newton" or newton_applies(n, d, n_problems))

    def _resolved_head_names(self, k: int) -> list[str]:
        """One name per head: the binary positive class, or each class / finding."""
        count = 1 if self.task_type == "binary" else k
        if self.head_names is None:
            if self.task_type == "binary":
                return ["positive class"]
            return [f"{'finding' if self.task_type == 'multilabel' else 'class'} {j}" for j in range(count)]
        names = [str(name) for name in self.head_names]
        if len(names) != count:
            raise ConfigError(f"head_names has {len(names)} name(s) but this {self.task_type} probe has {count} head(s)")
        return names

    def _targets(self, labels: np.ndarray, k: int) -> tuple[np.ndarray, bool]:
        """(n, outputs) 0/1 float64 targets and whether the outputs share a softmax."""
        if self.task_type == "multiclass":
            return np.eye(k)[labels], True
        return (labels[:, None] if self.task_type == "binary" else labels).astype(np.float64), False

    @staticmethod
    def _initial_intercept(targets: np.ndarray, softmax: bool) -> np.ndarray:
        """Intercepts at the training log-odds (log-priors for softmax): the optimum when W = 0."""
        rate = targets.mean(axis=0)
        if softmax:
            logits = np.log(rate)
            return logits - logits.mean()
        return np.log(rate / (1 - rate))

    def _store(self, solution: BatchSolution, problems: slice, softmax: bool, mean: np.ndarray, scale: np.ndarray,
               k: int, names: list[str], seconds: float) -> None:
        """Take this C's problems out of the batch solution; warn, by name, about heads above tol."""
        theta = solution.theta[problems]
        # rows of (K, D + 1): the softmax's K outputs, or the K sigmoid heads' single output each
        rows = theta[0] if softmax else theta[:, 0]
        self.coef_ = rows[:, :-1].copy()
        self.intercept_ = rows[:, -1].copy()
        self.mean_, self.scale_ = mean.copy(), scale.copy()
        self.n_features_in_ = mean.shape[0]
        self.n_classes_ = k
        if self.task_type != "multilabel":
            self.classes_ = np.arange(k)
        head_grad = solution.row_grad_max[problems]
        self.head_grad_max_ = (head_grad[0] if softmax else head_grad[:, 0]).copy()
        self.head_converged_ = self.head_grad_max_ <= self.tol
        per_problem = np.arange(problems.start, problems.stop)
        iterations, evaluations = solution.n_iter[per_problem], solution.n_evals[per_problem]
        stops = [solution.stop[i] for i in per_problem]
        if softmax:
            iterations, evaluations, stops = np.repeat(iterations, k), np.repeat(evaluations, k), stops * k
        self.head_n_iter_ = iterations.copy()
        self.n_iter_ = int(iterations.max())
        self.n_evals_ = int(evaluations.max())
        self.grad_max_ = float(self.head_grad_max_.max())
        self.loss_ = float(solution.loss[problems].sum())
        self.converged_ = bool(self.head_converged_.all())
        self.unconverged_heads_ = [names[j] for j in np.flatnonzero(~self.head_converged_)]
        self.fit_seconds_ = seconds
        if not self.converged_:
            failing = np.flatnonzero(~self.head_converged_)
            detail = "; ".join(
                f"{names[j]!r}: max |gradient| {self.head_grad_max_[j]:.2e}, "
                + (f"reached max_iter={self.max_iter}" if stops[j] == MAX_ITER else f"stopped at the precision of {self.dtype}")
                for j in failing[:10]) + ("; ..." if len(failing) > 10 else "")
            warnings.warn(
                f"LinearProbe(task_type={self.task_type!r}, C={self.C:g}) did not converge for {len(failing)} of "
                f"{len(names)} head(s) (tol {self.tol:g}): {detail}. Raise max_iter, use dtype='float64' or a larger "
                f"tol", ConvergenceWarning, stacklevel=5)

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
        step = _rows_per_block(X.shape[1])
        return np.concatenate([_standardise_block(X[start:start + step], self.mean_, self.scale_) @ self.coef_.T
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
