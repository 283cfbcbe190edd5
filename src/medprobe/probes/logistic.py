"""L2-regularised logistic-regression probes, fitted with full-batch L-BFGS in torch.

Why not just scikit-learn: the study fits one probe per (backbone, layer, C, label fraction,
seed), on thousands of samples with thousands of features. scikit-learn refits every C from
scratch in float64 NumPy; here all classes (or findings) are one batched problem, the matrix
products run in float32 by default (on a GPU when there is one), and a whole grid of C values is
fitted as a path with warm starts. The objective is scikit-learn's, so the answers agree:

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
* ``"multilabel"``: ``y`` (n, K) 0/1; K independent sigmoid probes, one per finding, fitted as one
  (K, D) weight matrix whose loss is the sum of the K separate losses; ``predict_proba`` -> (n, K)
  per-finding probabilities.

Results are deterministic for a given input, dtype, device and thread count: the solver has no
randomness, and it starts from zero weights with intercepts at the training log-odds.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import ConvergenceWarning

from medprobe.errors import ConfigError, DataError

TaskType = Literal["binary", "multiclass", "multilabel"]
TASK_TYPES: tuple[str, ...] = ("binary", "multiclass", "multilabel")
#: a multilabel finding (or the binary positive class) is predicted when its probability exceeds this
THRESHOLD = 0.5
#: elements per block when standardising or scoring, so temporaries stay small (32 MiB in float64)
_BLOCK_ELEMENTS = 1 << 22
_DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: "no more progress" threshold on the mean-scaled objective (an O(1) number accumulated in
#: float64): changes below it are rounding noise of the dtype the products run in
_TOL_CHANGE = {torch.float32: 1e-11, torch.float64: 1e-14}


# --------------------------------------------------------------------------- settings
def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` means CUDA when torch sees a GPU, else the CPU; anything else is used as given."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ConfigError(f"probe device {device!r} is not a torch device ('auto', 'cpu', 'cuda', 'cuda:1', ...)") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"probe device {device!r} was requested but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    return resolved


def _resolve_dtype(dtype: str) -> torch.dtype:
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
def _standardise_block(block: np.ndarray, mean: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(block - mean) / scale``: centred in float64 (large offsets cancel exactly), scaled in ``dtype``."""
    centred = torch.as_tensor(block).to(device=mean.device, dtype=torch.float64) - mean
    return centred.to(dtype).div_(scale)


def _fit_standardiser(X: np.ndarray, device: torch.device, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Per-feature mean and population std (float64, two passes) and the standardised ``X`` on ``device``.

    Zero-variance features get scale 1, as in ``StandardScaler``: they turn into zeros instead
    of NaNs, and their weights stay at 0 under the L2 penalty.
    """
    n, d = X.shape
    step = _rows_per_block(d)
    total = torch.zeros(d, dtype=torch.float64, device=device)
    for start in range(0, n, step):
        total += torch.as_tensor(X[start:start + step]).to(device=device, dtype=torch.float64).sum(dim=0)
    mean = total / n
    squares = torch.zeros(d, dtype=torch.float64, device=device)
    for start in range(0, n, step):
        centred = torch.as_tensor(X[start:start + step]).to(device=device, dtype=torch.float64) - mean
        squares += (centred * centred).sum(dim=0)
    std = torch.sqrt(squares / n)
    scale = torch.where(std > 0, std, torch.ones_like(std))
    standardised = torch.empty((n, d), dtype=dtype, device=device)
    scale_in_dtype = scale.to(dtype)
    for start in range(0, n, step):
        standardised[start:start + step] = _standardise_block(X[start:start + step], mean, scale_in_dtype, dtype)
    return mean.cpu().numpy(), scale.cpu().numpy(), standardised


# --------------------------------------------------------------------------- objective and solver
class _Objective:
    """Mean log-loss plus ``||W||^2 / (2 C n)`` and its gradient, written out by hand.

    The gradient of softmax/sigmoid cross-entropy w.r.t. the logits is ``p - target``; computing
    it directly costs two matrix products per evaluation and no autograd graph.
    """

    def __init__(self, X: torch.Tensor, targets: torch.Tensor, softmax: bool) -> None:
        self.X = X
        self.targets = targets.double()
        self.softmax = softmax
        self.n = X.shape[0]

    def __call__(self, coef: torch.Tensor, intercept: torch.Tensor, C: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # the products run in the probe's dtype; the O(n K) loss terms in float64, so that in
        # float32 the line search still sees objective changes well below float32's resolution
        logits = F.linear(self.X, coef, intercept).double()
        if self.softmax:
            log_norm = torch.logsumexp(logits, dim=1)
            losses = log_norm - (logits * self.targets).sum(dim=1)
            residual = torch.exp(logits - log_norm[:, None]) - self.targets
        else:
            losses = F.softplus(logits) - logits * self.targets
            residual = torch.sigmoid(logits) - self.targets
        l2 = 1.0 / (C * self.n)
        loss = losses.sum() / self.n + 0.5 * l2 * (coef * coef).sum(dtype=torch.float64)
        residual = residual.to(self.X.dtype)
        grad_coef = (residual.T @ self.X).div_(self.n).add_(coef, alpha=l2)
        grad_intercept = residual.sum(dim=0).div_(self.n)
        return loss, grad_coef, grad_intercept


@dataclass
class _Solution:
    coef: torch.Tensor
    intercept: torch.Tensor
    loss: float
    grad_max: float
    n_iter: int
    n_evals: int


def _minimise(objective: _Objective, coef0: torch.Tensor, intercept0: torch.Tensor, C: float,
              max_iter: int, tol: float, history_size: int) -> _Solution:
    """Full-batch L-BFGS with a strong-Wolfe line search (``torch.optim.LBFGS``) from the given start.

    Stops when the largest absolute gradient entry is <= ``tol`` (scikit-learn's ``gtol``), after
    ``max_iter`` iterations, or when the objective stops changing at the precision of the dtype.
    """
    coef = coef0.clone().requires_grad_(True)
    intercept = intercept0.clone().requires_grad_(True)
    precision = _TOL_CHANGE[coef.dtype]
    optimiser = torch.optim.LBFGS(
        [coef, intercept], lr=1.0, max_iter=max_iter, max_eval=max(2 * max_iter, max_iter + 25),
        tolerance_grad=tol, tolerance_change=precision, history_size=history_size, line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        with torch.no_grad():
            loss, coef.grad, intercept.grad = objective(coef, intercept, C)
        return loss

    optimiser.step(closure)
    state = optimiser.state[coef]
    with torch.no_grad():
        loss, grad_coef, grad_intercept = objective(coef, intercept, C)
    grad_max = max(float(grad_coef.abs().max()), float(grad_intercept.abs().max()))
    return _Solution(coef.detach(), intercept.detach(), float(loss), grad_max,
                     int(state.get("n_iter", 0)), int(state.get("func_evals", 0)) + 1)


# --------------------------------------------------------------------------- estimator
class LinearProbe(BaseEstimator):
    """Logistic-regression probe on standardised features (scikit-learn estimator conventions).

    Parameters
    ----------
    task_type: ``"binary"``, ``"multiclass"`` or ``"multilabel"`` (see the module docstring).
    C: inverse L2 strength, as in ``LogisticRegression(C=C)``.
    n_classes: number of classes for multiclass tasks when ``y`` might not show the last one;
        default ``max(y) + 1``. Every class must occur in the training labels.
    max_iter: L-BFGS iterations per fit (per C on a path).
    tol: stop when max |gradient| of the mean-scaled objective is <= tol (scikit-learn's meaning).
    dtype: ``"float32"`` (fast, default) or ``"float64"`` (for tight agreement with scikit-learn).
    device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    history_size: L-BFGS memory (number of curvature pairs).

    Fitted attributes: ``coef_`` (1, D) for binary else (K, D), ``intercept_`` (1,) or (K,) --
    both for the *standardised* features; ``mean_``/``scale_`` (D,) the standardiser;
    ``classes_`` (binary/multiclass) ``arange(K)``; ``n_classes_`` (K classes or findings);
    ``n_features_in_``; ``n_iter_``; ``converged_``; ``grad_max_``; ``fit_seconds_``.
    """

    def __init__(self, task_type: TaskType = "binary", C: float = 1.0, *, n_classes: int | None = None,
                 max_iter: int = 500, tol: float = 1e-4, dtype: str = "float32", device: str = "auto",
                 history_size: int = 20) -> None:
        self.task_type = task_type
        self.C = C
        self.n_classes = n_classes
        self.max_iter = max_iter
        self.tol = tol
        self.dtype = dtype
        self.device = device
        self.history_size = history_size

    # ---------------------------------------------------------------- fitting
    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearProbe:
        """Standardise ``X`` with its own statistics and fit the probe at ``self.C``."""
        self._fit_into(X, y, [self])
        return self

    def fit_path(self, X: np.ndarray, y: np.ndarray, Cs: Sequence[float]) -> list[LinearProbe]:
        """One fitted probe per C (same order as ``Cs``), cheaply: a regularisation path.

        The features are validated and standardised once; the Cs are then fitted from the
        strongest regularisation (smallest C) upwards, each starting from the previous solution.
        Neighbouring solutions are close, so later fits need a fraction of the iterations, and
        the strongly regularised problems that come first are the best conditioned. Each result
        is an independent :class:`LinearProbe` (a clone of this one with ``C`` set) that answers
        like a probe fitted on that C from scratch, to within ``tol``.
        """
        values = [float(c) for c in Cs]
        if not values or any(not math.isfinite(c) or c <= 0 for c in values):
            raise ConfigError(f"Cs must be a non-empty list of positive finite numbers, got {list(Cs)}")
        if len(set(values)) != len(values):
            raise ConfigError(f"Cs has repeated values: {values}")
        probes = [clone(self).set_params(C=c) for c in values]
        self._fit_into(X, y, probes)
        return probes

    def _fit_into(self, X: np.ndarray, y: np.ndarray, probes: list[LinearProbe]) -> None:
        """Validate and standardise once, then fit ``probes`` (settings of ``self``) in increasing C."""
        self._check_settings()
        if any(not math.isfinite(float(p.C)) or float(p.C) <= 0 for p in probes):
            raise ConfigError(f"C must be a positive finite number, got {[p.C for p in probes]}")
        X = check_features(X, "X")
        labels, k = check_labels(y, self.task_type, X.shape[0], "y", self.n_classes, require_all=True)
        device, dtype = resolve_device(self.device), _resolve_dtype(self.dtype)
        mean, scale, standardised = _fit_standardiser(X, device, dtype)
        targets, softmax = self._targets(labels, k, device, dtype)
        objective = _Objective(standardised, targets, softmax)
        coef = torch.zeros((targets.shape[1], X.shape[1]), dtype=dtype, device=device)
        intercept = self._initial_intercept(targets, softmax)
        for probe in sorted(probes, key=lambda p: float(p.C)):
            started = time.perf_counter()
            solution = _minimise(objective, coef, intercept, float(probe.C), self.max_iter, self.tol, self.history_size)
            coef, intercept = solution.coef, solution.intercept
            probe._store(solution, mean, scale, k, time.perf_counter() - started)

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

    def _targets(self, labels: np.ndarray, k: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, bool]:
        """(n, outputs) float targets and whether the outputs share a softmax."""
        if self.task_type == "multiclass":
            return F.one_hot(torch.as_tensor(labels), k).to(device=device, dtype=dtype), True
        column = labels[:, None] if self.task_type == "binary" else labels
        return torch.as_tensor(column).to(device=device, dtype=dtype), False

    @staticmethod
    def _initial_intercept(targets: torch.Tensor, softmax: bool) -> torch.Tensor:
        """Intercepts at the training log-odds (log-priors for softmax): the optimum when W = 0."""
        rate = targets.double().mean(dim=0)
        if softmax:
            logits = torch.log(rate)
            return (logits - logits.mean()).to(targets.dtype)
        return torch.log(rate / (1 - rate)).to(targets.dtype)

    def _store(self, solution: _Solution, mean: np.ndarray, scale: np.ndarray, k: int, seconds: float) -> None:
        self.coef_ = solution.coef.to(torch.float64).cpu().numpy()
        self.intercept_ = solution.intercept.to(torch.float64).cpu().numpy()
        self.mean_, self.scale_ = mean.copy(), scale.copy()
        self.n_features_in_ = mean.shape[0]
        self.n_classes_ = k
        if self.task_type != "multilabel":
            self.classes_ = np.arange(k)
        self.n_iter_ = solution.n_iter
        self.n_evals_ = solution.n_evals
        self.grad_max_ = solution.grad_max
        self.loss_ = solution.loss
        self.converged_ = solution.grad_max <= self.tol
        self.fit_seconds_ = seconds
        if not self.converged_:
            reason = (f"reached max_iter={self.max_iter}" if solution.n_iter >= self.max_iter
                      else f"stopped at the precision of {self.dtype}")
            warnings.warn(
                f"LinearProbe(task_type={self.task_type!r}, C={self.C:g}) did not converge: {reason} with "
                f"max |gradient| {solution.grad_max:.2e} > tol {self.tol:g}; raise max_iter, use dtype='float64' "
                f"or a larger tol", ConvergenceWarning, stacklevel=3)

    # ---------------------------------------------------------------- prediction
    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise DataError("this LinearProbe is not fitted yet; call fit(X, y) or fit_path(X, y, Cs) first")

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits (n, outputs): one column for binary, K for multiclass/multilabel."""
        self._check_fitted()
        X = check_features(X, "X", self.n_features_in_)
        device, dtype = resolve_device(self.device), _resolve_dtype(self.dtype)
        mean = torch.as_tensor(self.mean_, device=device)
        scale = torch.as_tensor(self.scale_, device=device).to(dtype)
        coef = torch.as_tensor(self.coef_, device=device).to(dtype)
        intercept = torch.as_tensor(self.intercept_, device=device).to(dtype)
        step = _rows_per_block(X.shape[1])
        blocks = [F.linear(_standardise_block(X[start:start + step], mean, scale, dtype), coef, intercept)
                  for start in range(0, X.shape[0], step)]
        return torch.cat(blocks).to(torch.float64).cpu().numpy()

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities: (n, 2) binary, (n, K) multiclass (rows sum to 1), (n, K) per finding."""
        logits = torch.as_tensor(self.decision_function(X))
        if self.task_type == "multiclass":
            return torch.softmax(logits, dim=1).numpy()
        positive = torch.sigmoid(logits).numpy()
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
