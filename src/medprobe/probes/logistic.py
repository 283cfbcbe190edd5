"""L2-regularised logistic-regression probes, fitted with full-batch L-BFGS in torch.

Why not just scikit-learn: the study fits one probe per (backbone, layer, C, label fraction,
seed), on thousands of samples with thousands of features. scikit-learn refits every C from
scratch with a generic L-BFGS; here all classes (or findings) are one batched problem, the
matrix products run in float32 by default (on a GPU when there is one), a whole grid of C values
is fitted as a path with warm starts, and the L-BFGS is preconditioned against the few dominant
directions that activations always have (see :class:`_Preconditioner`), which cuts the number of
iterations several-fold at weak regularisation. The objective is scikit-learn's, so the answers
agree:

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

Results are deterministic for a given input, dtype, device and thread count: the solver starts
from zero weights with intercepts at the training log-odds, and the preconditioner's random
sketch comes from a fixed-seed generator (the global torch RNG is not touched).
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
from threadpoolctl import threadpool_limits

from medprobe.errors import ConfigError, DataError

TaskType = Literal["binary", "multiclass", "multilabel"]
TASK_TYPES: tuple[str, ...] = ("binary", "multiclass", "multilabel")
#: a multilabel finding (or the binary positive class) is predicted when its probability exceeds this
THRESHOLD = 0.5
#: elements per block when standardising or scoring, so temporaries stay small (32 MiB in float64)
_BLOCK_ELEMENTS = 1 << 22
_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}
#: "no more progress": a relative decrease of the (float64-accumulated) objective below this is
#: rounding noise of the dtype the products run in (float64: scikit-learn's ``64 * eps``)
_TOL_CHANGE = {"float32": 1e-11, "float64": 64 * float(np.finfo(np.float64).eps)}


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


# --------------------------------------------------------------------------- objective
class _Objective:
    """Mean log-loss plus ``||W||^2 / (2 C n)`` and its gradient, written out by hand.

    Parameters travel as one flat float64 NumPy vector ``theta = [W.ravel(), b]`` (``W`` is
    (K, D)). Only the two (n, D) x (D, K) products touch the features: they run in torch, in the
    probe's dtype, on its device. Everything of size O(n K) or O(K D) is float64 NumPy on the
    host: in float32 the solver still sees objective changes far below float32's resolution, and
    the many small operations do not pay for thread synchronisation (or GPU launches). The
    gradient of softmax/sigmoid cross-entropy w.r.t. the logits is ``p - target``, so no autograd
    graph is needed.
    """

    def __init__(self, X: torch.Tensor, targets: np.ndarray, softmax: bool) -> None:
        self.X = X
        self.targets = targets.astype(np.float64)
        self.softmax = softmax
        self.n, self.d = X.shape
        self.k = targets.shape[1]

    def split(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Views of ``theta`` as (coef (K, D), intercept (K,))."""
        return theta[:self.k * self.d].reshape(self.k, self.d), theta[self.k * self.d:]

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(device=self.X.device, dtype=self.X.dtype)

    def __call__(self, theta: np.ndarray, C: float) -> tuple[float, np.ndarray]:
        coef, intercept = self.split(theta)
        logits = F.linear(self.X, self._to_device(coef), self._to_device(intercept)).cpu().numpy().astype(np.float64)
        if self.softmax:
            shifted = logits - logits.max(axis=1, keepdims=True)
            log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            losses = log_norm[:, 0] - (shifted * self.targets).sum(axis=1)
            residual = np.exp(shifted - log_norm) - self.targets
        else:
            losses = np.logaddexp(0.0, logits) - logits * self.targets
            residual = np.exp(-np.logaddexp(0.0, -logits)) - self.targets  # sigmoid, without overflow
        l2 = 1.0 / (C * self.n)
        loss = float(losses.sum() / self.n + 0.5 * l2 * np.dot(coef.ravel(), coef.ravel()))
        product = (self._to_device(residual).T @ self.X).cpu().numpy().astype(np.float64)
        grad = np.empty_like(theta)
        grad_coef, grad_intercept = self.split(grad)
        np.multiply(product, 1.0 / self.n, out=grad_coef)
        grad_coef += l2 * coef
        grad_intercept[:] = residual.sum(axis=0) / self.n
        return loss, grad


# --------------------------------------------------------------------------- preconditioner
class _Preconditioner:
    """Flattens the dominant directions of the standardised features for L-BFGS.

    Why: activations are strongly anisotropic even after per-feature standardisation -- a few
    shared directions carry much of the variance -- so the Hessian ``~ X^T S X / n + I / (C n)``
    is badly conditioned and plain L-BFGS crawls, worst at weak regularisation. With the top
    ``q`` eigenpairs ``(lambda_i, v_i)`` of ``X^T X / n`` (a randomised sketch: three passes over
    X, once per path), the initial inverse Hessian of L-BFGS becomes
    ``P = I + sum_i (a_i - 1) v_i v_i^T`` with ``a_i = (lambda_q + l2) / (lambda_i + l2)``: the
    dominant directions are scaled down to the level of the q-th. ``P`` is symmetric positive
    definite and acts on the feature axis of every class's weights; the intercepts (decoupled
    from the centred features) are left alone. It changes only the path to the optimum.
    """

    def __init__(self, X: torch.Tensor, k: int, max_rank: int = 64, oversampling: int = 10, seed: int = 0) -> None:
        n, d = X.shape
        self.k, self.d = k, d
        rank = min(max_rank, min(n, d) - 1)
        self.eigenvalues: np.ndarray | None = None
        if rank < 2:
            return
        width = min(rank + oversampling, min(n, d))
        # seeded generator: deterministic, and the global torch RNG is left alone
        generator = torch.Generator(device=X.device).manual_seed(seed)
        probe = torch.randn(d, width, generator=generator, device=X.device, dtype=X.dtype)
        # one power step (range of X^T X G), then Rayleigh-Ritz on that subspace
        gram_probe = ((X @ probe).T @ X).T.cpu().numpy().astype(np.float64)
        basis = np.linalg.qr(gram_probe)[0]  # (D, width), orthonormal
        projected = (X @ torch.from_numpy(basis).to(device=X.device, dtype=X.dtype)).cpu().numpy().astype(np.float64)
        eigenvalues, eigenvectors = np.linalg.eigh(projected.T @ projected / n)
        order = np.argsort(eigenvalues)[::-1][:rank]
        self.eigenvalues = eigenvalues[order]
        self.vectors = basis @ eigenvectors[:, order]  # (D, q), orthonormal

    def factors(self, C: float, n: int) -> np.ndarray | None:
        """``a_i - 1`` for this C (None: no preconditioning)."""
        if self.eigenvalues is None:
            return None
        l2 = 1.0 / (C * n)
        return (self.eigenvalues[-1] + l2) / (self.eigenvalues + l2) - 1.0

    def apply(self, vector: np.ndarray, factors: np.ndarray | None) -> np.ndarray:
        """``P`` applied to a flat parameter-shaped vector (a new array)."""
        out = vector.copy()
        if factors is None:
            return out
        coef = vector[:self.k * self.d].reshape(self.k, self.d)
        out[:self.k * self.d] += (((coef @ self.vectors) * factors) @ self.vectors.T).ravel()
        return out


# --------------------------------------------------------------------------- solver
@dataclass
class _Solution:
    theta: np.ndarray
    loss: float
    grad_max: float
    n_iter: int
    n_evals: int
    stop: Literal["converged", "max_iter", "precision"]


_ARMIJO = 1e-4
_MAX_BACKTRACKS = 30


def _minimise(objective: _Objective, preconditioner: _Preconditioner, theta0: np.ndarray, C: float,
              max_iter: int, tol: float, history_size: int, tol_change: float) -> _Solution:
    """Preconditioned L-BFGS with a backtracking (Armijo) line search, from ``theta0``.

    The objective is strictly convex (L2 term), so every step satisfies the curvature condition
    ``y.s > 0`` and a sufficient-decrease line search is enough; the unit step is accepted almost
    always. Stops when max |gradient| <= ``tol`` (scikit-learn's ``gtol``, on the unpreconditioned
    gradient), after ``max_iter`` iterations, or when the objective no longer decreases by more
    than ``tol_change`` (relative) -- the precision limit of the dtype.
    """
    factors = preconditioner.factors(C, objective.n)
    theta = theta0.copy()
    loss, grad = objective(theta, C)
    n_evals = 1
    steps: list[np.ndarray] = []
    changes: list[np.ndarray] = []
    inverse_curvatures: list[float] = []
    gamma = 1.0
    n_iter = 0
    stop: Literal["converged", "max_iter", "precision"] = "max_iter"
    while True:
        if np.abs(grad).max() <= tol:
            stop = "converged"
            break
        if n_iter >= max_iter:
            break
        n_iter += 1
        # two-loop recursion with the preconditioned, scaled initial inverse Hessian gamma * P
        direction = -grad
        alphas = []
        for step, change, rho in zip(reversed(steps), reversed(changes), reversed(inverse_curvatures)):
            alpha = rho * float(step @ direction)
            direction = direction - alpha * change
            alphas.append(alpha)
        direction = gamma * preconditioner.apply(direction, factors)
        for step, change, rho, alpha in zip(steps, changes, inverse_curvatures, reversed(alphas)):
            beta = rho * float(change @ direction)
            direction += (alpha - beta) * step
        slope = float(grad @ direction)
        if slope >= 0:  # not a descent direction (rounding): restart from the preconditioned gradient
            steps.clear()
            changes.clear()
            inverse_curvatures.clear()
            direction = -preconditioner.apply(grad, factors)
            slope = float(grad @ direction)
        # without curvature information the scale of the direction is unknown: start small
        t = 1.0 if steps else min(1.0, 1.0 / float(np.abs(grad).sum()))
        for _ in range(_MAX_BACKTRACKS):
            candidate = theta + t * direction
            new_loss, new_grad = objective(candidate, C)
            n_evals += 1
            if new_loss <= loss + _ARMIJO * t * slope:
                break
            curvature = new_loss - loss - t * slope  # quadratic model through f(0), f'(0), f(t)
            t_model = -slope * t * t / (2 * curvature) if curvature > 0 else 0.5 * t
            t = min(0.5 * t, max(0.1 * t, t_model))
        else:
            stop = "precision"
            break
        step, change = candidate - theta, new_grad - grad
        curvature_pair = float(change @ step)
        if curvature_pair > np.finfo(np.float64).eps * float(change @ change):
            if len(steps) == history_size:
                del steps[0], changes[0], inverse_curvatures[0]
            steps.append(step)
            changes.append(change)
            inverse_curvatures.append(1.0 / curvature_pair)
            gamma = curvature_pair / float(change @ preconditioner.apply(change, factors))
        decrease = loss - new_loss
        theta, loss, grad = candidate, new_loss, new_grad
        if decrease <= tol_change * max(1.0, abs(loss)) and np.abs(grad).max() > tol:
            stop = "precision"
            break
    return _Solution(theta, loss, float(np.abs(grad).max()), n_iter, n_evals, stop)


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
        # The solver's NumPy work is small (vectors of K * D numbers) and alternates with torch's
        # own thread pool; a multi-threaded NumPy BLAS would fight that pool for the cores
        # (measured: ~3x slower fits on a busy 2-core machine), so it runs single-threaded here.
        with threadpool_limits(limits=1, user_api="blas"):
            mean, scale, standardised = _fit_standardiser(X, dtype)
            features = torch.from_numpy(standardised).to(device)
            del standardised  # on the CPU `features` shares its memory; on a GPU the host copy can go
            targets, softmax = self._targets(labels, k)
            objective = _Objective(features, targets, softmax)
            preconditioner = _Preconditioner(features, k=targets.shape[1])
            theta = np.concatenate([np.zeros(targets.shape[1] * X.shape[1]), self._initial_intercept(targets, softmax)])
            for probe in sorted(probes, key=lambda p: float(p.C)):
                started = time.perf_counter()
                solution = _minimise(objective, preconditioner, theta, float(probe.C), self.max_iter, self.tol,
                                     self.history_size, _TOL_CHANGE[self.dtype])
                theta = solution.theta
                coef, intercept = objective.split(solution.theta)
                probe._store(solution, coef, intercept, mean, scale, k, time.perf_counter() - started)

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

    def _store(self, solution: _Solution, coef: np.ndarray, intercept: np.ndarray, mean: np.ndarray,
               scale: np.ndarray, k: int, seconds: float) -> None:
        self.coef_ = coef.copy()
        self.intercept_ = intercept.copy()
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
            reason = (f"reached max_iter={self.max_iter}" if solution.stop == "max_iter"
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
