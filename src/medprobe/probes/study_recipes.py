"""The study's own probe recipes, for reproducing its numbers as it ran them.

Written from what the study's public code does (peterhan91/Multimodal-Probes), not copied from it:

* ``study`` -- ``eval_torch_ex.py`` (IDEFICS features, single-label tasks) and
  ``eval_torch_padchest.py`` (multi-label): one ``nn.Linear`` on the raw (dequantised, not
  standardised) features, Adam with learning rate 1e-4 and no weight decay, 80 epochs of shuffled
  mini-batches of 512, softmax cross-entropy over one output per class -- binary tasks too (two
  outputs) -- or, for multi-label findings, a sigmoid followed by binary cross-entropy. No class
  weights, no validation split, no early stopping: the probe is trained on every image that is
  not a test image and the last epoch's weights are scored.
* ``study-clip`` -- ``clip_ex.py``: scikit-learn's ``SGDClassifier(loss="log_loss",
  penalty="l2", alpha=1e-3, class_weight="balanced", max_iter=10000, random_state=1)`` on the raw
  CLIP image embeddings (labels re-coded with ``LabelEncoder``, i.e. sorted); for multi-label
  PadChest ``clip_padchest.py`` uses the ``study`` recipe with Adam weight decay 1e-5 instead.

What medprobe adds, and why: the study's torch runs are unseeded (initial weights and batch order
change from run to run); here the initial weights and every epoch's batch order come from one
``torch.Generator`` seeded with the subset's seed, drawn in a documented order (weights, bias,
then one permutation per epoch) so a run repeats exactly and a test can replay it. The initial
weights have ``nn.Linear``'s default distribution (uniform in +-1/sqrt(d) for weights and bias).

The study's multi-label evaluation passed its already-sigmoided outputs through a second sigmoid;
the ranking (AUC, the only metric it reported there) is the same, and medprobe's scores are the
probabilities of the model as trained (one sigmoid), so F1 and calibration stay meaningful.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from medprobe.errors import ConfigError
from medprobe.probes.inputs import TaskType

Recipe = Literal["medprobe", "study", "study-clip"]
RECIPES: tuple[str, ...] = ("medprobe", "study", "study-clip")
STUDY_RECIPES: tuple[str, ...] = ("study", "study-clip")
#: the label every result, console line, table and figure gives a layer chosen on the test split
SELECTED_ON_TEST = "selected on test (optimistic)"

#: ``eval_torch_ex.py`` / ``eval_torch_padchest.py`` command-line defaults
STUDY_EPOCHS = 80
STUDY_BATCH_SIZE = 512
STUDY_LEARNING_RATE = 1e-4
#: ``clip_padchest.py``: Adam weight decay of the multi-label CLIP probe
STUDY_CLIP_MULTILABEL_WEIGHT_DECAY = 1e-5
#: ``clip_ex.py``: the SGD probe's settings (``alpha`` is the value its ``run_study`` passes)
STUDY_CLIP_SGD = {"loss": "log_loss", "penalty": "l2", "alpha": 1e-3, "class_weight": "balanced",
                  "max_iter": 10000, "random_state": 1}


@dataclass(frozen=True)
class StudyLinear:
    """A trained study probe: ``nn.Linear`` weights (outputs x features) and bias, float32."""

    weight: np.ndarray
    bias: np.ndarray
    task_type: TaskType

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Softmax over the outputs (binary: two), or a sigmoid per finding for multi-label."""
        logits = np.asarray(X, dtype=np.float32) @ self.weight.T + self.bias
        logits = logits.astype(np.float64)
        if self.task_type == "multilabel":
            return 1.0 / (1.0 + np.exp(-logits))
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class StudySGD:
    """The study's CLIP probe; ``predict_proba`` has one column per class of the task (a class
    absent from the training subset gets probability 0, as it has no column in scikit-learn's)."""

    classifier: object
    n_classes: int

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        columns = self.classifier.predict_proba(np.asarray(X, dtype=np.float64))  # type: ignore[attr-defined]
        out = np.zeros((len(X), self.n_classes))
        out[:, np.asarray(self.classifier.classes_, dtype=np.int64)] = columns  # type: ignore[attr-defined]
        return out


def torch_device(device: str) -> str:
    """``"auto"``: the GPU when torch sees one, else the CPU (the study's own rule)."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def initial_weights(n_features: int, n_outputs: int, generator: "object") -> tuple["object", "object"]:
    """``nn.Linear``'s default initial weight and bias (uniform in +-1/sqrt(n_features)), drawn
    from ``generator`` in that order."""
    import torch

    bound = 1.0 / math.sqrt(n_features)
    weight = torch.empty(n_outputs, n_features).uniform_(-bound, bound, generator=generator)
    bias = torch.empty(n_outputs).uniform_(-bound, bound, generator=generator)
    return weight, bias


def fit_study_linear(X: np.ndarray, y: np.ndarray, task_type: TaskType, n_classes: int, *, seed: int = 0,
                     device: str = "cpu", epochs: int = STUDY_EPOCHS, batch_size: int = STUDY_BATCH_SIZE,
                     learning_rate: float = STUDY_LEARNING_RATE, weight_decay: float = 0.0) -> StudyLinear:
    """The study's torch probe (see the module docstring), seeded; ``y`` holds class ids, or a 0/1
    matrix for multi-label tasks."""
    import torch

    n, d = X.shape
    outputs = n_classes if task_type != "binary" else 2
    generator = torch.Generator().manual_seed(int(seed))
    weight, bias = initial_weights(d, outputs, generator)
    where = torch_device(device)
    linear = torch.nn.Linear(d, outputs).to(where)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    features = torch.as_tensor(np.asarray(X, dtype=np.float32), device=where)
    if task_type == "multilabel":
        targets = torch.as_tensor(np.asarray(y, dtype=np.float32), device=where)
        loss_of = torch.nn.BCELoss()

        def loss(inputs: "torch.Tensor", target: "torch.Tensor") -> "torch.Tensor":
            return loss_of(torch.sigmoid(linear(inputs)), target)  # the study's sigmoid-then-BCE
    else:
        targets = torch.as_tensor(np.asarray(y, dtype=np.int64), device=where)
        cross_entropy = torch.nn.CrossEntropyLoss()

        def loss(inputs: "torch.Tensor", target: "torch.Tensor") -> "torch.Tensor":
            return cross_entropy(linear(inputs), target)
    optimizer = torch.optim.Adam(linear.parameters(), lr=learning_rate, weight_decay=weight_decay)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(where)
        for start in range(0, n, batch_size):
            batch = order[start:start + batch_size]
            optimizer.zero_grad()
            loss(features[batch], targets[batch]).backward()
            optimizer.step()
    return StudyLinear(linear.weight.detach().cpu().numpy().copy(), linear.bias.detach().cpu().numpy().copy(),
                       task_type)


def fit_study_sgd(X: np.ndarray, y: np.ndarray, n_classes: int) -> StudySGD:
    """The study's CLIP probe: ``SGDClassifier`` with :data:`STUDY_CLIP_SGD` on the raw features."""
    from sklearn.linear_model import SGDClassifier

    classifier = SGDClassifier(**STUDY_CLIP_SGD)  # type: ignore[arg-type]
    classifier.fit(np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64))
    return StudySGD(classifier, n_classes)


def fit_recipe(recipe: str, X: np.ndarray, y: np.ndarray, task_type: TaskType, n_classes: int, *, seed: int,
               device: str = "auto") -> StudyLinear | StudySGD:
    """A probe trained by one of the study's recipes (``study`` or ``study-clip``)."""
    if recipe == "study":
        return fit_study_linear(X, y, task_type, n_classes, seed=seed, device=device)
    if recipe == "study-clip":
        if task_type == "multilabel":
            return fit_study_linear(X, y, task_type, n_classes, seed=seed, device=device,
                                    weight_decay=STUDY_CLIP_MULTILABEL_WEIGHT_DECAY)
        return fit_study_sgd(X, y, n_classes)
    raise ConfigError(f"unknown study recipe {recipe!r}; expected one of {', '.join(STUDY_RECIPES)}")


def study_layer(layer: str) -> int | None:
    """The study's file index of a hidden state: ``activation.py`` saves ``hidden_states[1:]`` as
    ``<task>.<i>.pt``, so medprobe's hidden state ``k`` (``"k"``, or ``"vision.k"``; 0 is the
    embedding output, never saved) is its file ``k - 1``; an ONNX block output ``layer.i`` (block
    ``i``'s output, hidden state ``i + 1``) is file ``i``. Other layers (pooled conv blocks,
    pixels) have no counterpart: ``None``."""
    for prefix, offset in (("", 1), ("vision.", 1), ("layer.", 0)):
        rest = layer[len(prefix):] if layer.startswith(prefix) else None
        if rest is not None and rest.isdigit():
            index = int(rest) - offset
            return index if index >= 0 else None
    return None


__all__ = ["RECIPES", "SELECTED_ON_TEST", "STUDY_BATCH_SIZE", "STUDY_CLIP_SGD", "STUDY_EPOCHS", "STUDY_LEARNING_RATE",
           "STUDY_RECIPES", "Recipe", "StudyLinear", "StudySGD", "fit_recipe", "fit_study_linear", "fit_study_sgd",
           "initial_weights", "study_layer", "torch_device"]
