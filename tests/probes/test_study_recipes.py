"""The study's probe recipes against references written from its code's description.

The ``study`` recipe is replayed by a hand-written NumPy loop (float64): softmax cross-entropy
(or sigmoid + BCE) gradients of a linear layer, Adam (beta 0.9 / 0.999, eps 1e-8, lr 1e-4, no
weight decay) on shuffled mini-batches of 512, with the recipe's documented seeding (initial
weight, bias, then one permutation per epoch from one ``torch.Generator``).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medprobe.probes.selection import validation_score  # noqa: E402
from medprobe.probes.study_recipes import (  # noqa: E402
    STUDY_CLIP_SGD,
    fit_recipe,
    fit_study_linear,
    initial_weights,
    study_layer,
)


@pytest.fixture(autouse=True)
def one_thread(torch_one_thread):
    """Every test here on one torch thread (tests/conftest.py)."""


def _problem(task_type: str, n: int = 1100, d: int = 24, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32) * 3 + 1  # raw, unstandardised features
    direction = rng.normal(size=(d, k))
    logits = X @ direction / 4
    if task_type == "multilabel":
        y = (logits + rng.normal(size=logits.shape) > 0).astype(np.int64)
    elif task_type == "binary":
        y = (logits[:, 0] + rng.normal(size=n) > 0).astype(np.int64)
    else:
        y = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    return X, y


def reference_loop(X, y, task_type, n_outputs, *, seed, epochs, lr=1e-4, batch_size=512, decay=0.0):
    """The study's training loop by hand (see the module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    weight, bias = (t.numpy().astype(np.float64) for t in initial_weights(X.shape[1], n_outputs, generator))
    params = [weight, bias]
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    step = 0
    X = X.astype(np.float64)
    for _ in range(epochs):
        order = torch.randperm(len(X), generator=generator).numpy()
        for start in range(0, len(X), batch_size):
            rows = order[start:start + batch_size]
            logits = X[rows] @ params[0].T + params[1]
            if task_type == "multilabel":
                g = (1 / (1 + np.exp(-logits)) - y[rows]) / logits.size  # mean BCE over every entry
            else:
                p = np.exp(logits - logits.max(axis=1, keepdims=True))
                p /= p.sum(axis=1, keepdims=True)
                p[np.arange(len(rows)), y[rows]] -= 1
                g = p / len(rows)  # mean cross-entropy over the batch
            grads = [g.T @ X[rows], g.sum(axis=0)]
            step += 1
            for i, (param, grad) in enumerate(zip(params, grads)):
                grad = grad + decay * param
                first[i] = 0.9 * first[i] + 0.1 * grad
                second[i] = 0.999 * second[i] + 0.001 * grad ** 2
                m_hat = first[i] / (1 - 0.9 ** step)
                v_hat = second[i] / (1 - 0.999 ** step)
                params[i] = param - lr * m_hat / (np.sqrt(v_hat) + 1e-8)
    return params


def _reference_proba(params, X, task_type):
    logits = X.astype(np.float64) @ params[0].T + params[1]
    if task_type == "multilabel":
        return 1 / (1 + np.exp(-logits))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("task_type", ["binary", "multiclass", "multilabel"])
def test_one_epoch_matches_hand_written_adam(task_type):
    X, y = _problem(task_type)
    n_outputs = 2 if task_type == "binary" else 3
    probe = fit_study_linear(X, y, task_type, 2 if task_type == "binary" else 3, seed=5, epochs=1)
    start = reference_loop(X, y, task_type, n_outputs, seed=5, epochs=0)
    after = reference_loop(X, y, task_type, n_outputs, seed=5, epochs=1)
    assert probe.weight.shape == (n_outputs, X.shape[1])  # binary: two outputs, softmax
    # three Adam steps (1100 rows in batches of 512): each moves every weight by about lr
    np.testing.assert_allclose(probe.weight - start[0], after[0] - start[0], rtol=2e-3, atol=1e-8)
    np.testing.assert_allclose(probe.bias - start[1], after[1] - start[1], rtol=2e-3, atol=1e-8)
    assert np.abs(after[0] - start[0]).max() > 1e-4


@pytest.mark.parametrize("task_type", ["binary", "multiclass", "multilabel"])
def test_eighty_epochs_test_metric_matches_reference(task_type):
    X, y = _problem(task_type, n=2400, d=64)
    X, y, X_test, y_test = X[:1800], y[:1800], X[1800:], y[1800:]
    k = 2 if task_type == "binary" else 3
    probe = fit_recipe("study", X, y, task_type, k, seed=3, device="cpu")
    params = reference_loop(X, y, task_type, 2 if task_type == "binary" else 3, seed=3, epochs=80)
    ours = validation_score(y_test, probe.predict_proba(X_test), task_type)
    reference = validation_score(y_test, _reference_proba(params, X_test, task_type), task_type)
    assert ours == pytest.approx(reference, abs=1e-6)
    assert ours > 0.55  # it learned something in 80 epochs at lr 1e-4 (few steps on 1,800 rows)


def test_same_seed_same_probe_other_seed_other_probe():
    X, y = _problem("multiclass", n=600)
    a = fit_study_linear(X, y, "multiclass", 3, seed=1, epochs=2)
    b = fit_study_linear(X, y, "multiclass", 3, seed=1, epochs=2)
    c = fit_study_linear(X, y, "multiclass", 3, seed=2, epochs=2)
    np.testing.assert_array_equal(a.weight, b.weight)
    assert not np.array_equal(a.weight, c.weight)


def test_study_clip_is_the_studys_sgd_classifier():
    from sklearn.linear_model import SGDClassifier

    X, y = _problem("multiclass", n=400)
    # clip_ex.py: SGDClassifier(random_state=1, loss="log_loss", alpha=0.001, penalty="l2",
    # max_iter=10000, class_weight="balanced") on the raw embeddings
    reference = SGDClassifier(random_state=1, loss="log_loss", alpha=0.001, penalty="l2", max_iter=10000,
                              class_weight="balanced").fit(X.astype(np.float64), y)
    probe = fit_recipe("study-clip", X, y, "multiclass", 3, seed=0)
    np.testing.assert_allclose(probe.predict_proba(X), reference.predict_proba(X), rtol=0, atol=0)
    assert STUDY_CLIP_SGD["alpha"] == 1e-3


def test_study_clip_multilabel_uses_adam_with_weight_decay():
    X, y = _problem("multilabel", n=600)
    probe = fit_recipe("study-clip", X, y, "multilabel", 3, seed=4, device="cpu")
    plain = fit_recipe("study", X, y, "multilabel", 3, seed=4, device="cpu")
    params = reference_loop(X, y, "multilabel", 3, seed=4, epochs=80, decay=1e-5)
    np.testing.assert_allclose(probe.weight, params[0], rtol=1e-3, atol=1e-5)
    assert not np.array_equal(probe.weight, plain.weight)


def test_study_layer_is_the_file_index():
    assert study_layer("1") == 0 and study_layer("80") == 79 and study_layer("0") is None
    assert study_layer("vision.3") == 2 and study_layer("layer.0") == 0
    assert study_layer("block5_pool") is None and study_layer("pixels") is None
