"""What the statistics score: one fitted probe's test scores and how it was chosen.

It lives in ``stats`` (not with the probe stage that makes it) because every results.json and
comparisons.json row is built from it, and the row builders must not import the stages above them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ProbeOutcome:
    """One probe: a backbone layer trained on one train subset, scored on the test split.

    Frozen: the probe stage builds each outcome once, selection included, so nothing downstream can
    change which layer a row says was selected."""

    backbone: str
    layer: str
    train_fraction: float
    seed: int
    C: float
    val_score: float
    #: (n_test, n_classes) probabilities, or an array-like read back from disk (``SpilledScores``)
    test_scores: np.ndarray
    converged: bool = True
    selected: bool = False
    #: heads (classes / findings) of this probe that did not meet the solver's tol
    unconverged: str = ""
    #: training / validation samples the probe actually used (after the one-per-class top-up)
    n_train: int | None = None
    n_val: int | None = None
    #: the stack this layer was selected within: "lm" / "vision" for a VLM, "main" otherwise
    stack: str = "main"
    #: True when other layers (``tied_layers``) or Cs (``tied_Cs``) of this selection scored the same
    #: on validation: the pick among them went to the first (shallowest layer, smallest C)
    val_tie: bool = False
    tied_layers: list[str] = field(default_factory=list)
    tied_Cs: list[float] = field(default_factory=list)
    #: kept for probes the run saves (``probe.save``) and scores at operating points (selected ones
    #: by default): the fitted arrays (:class:`~medprobe.probes.saved.ProbeWeights`), and the
    #: validation probabilities and labels of the rows the probe was selected on
    weights: Any = field(default=None, compare=False, repr=False)
    val_scores: np.ndarray | None = field(default=None, compare=False, repr=False)
    val_labels: np.ndarray | None = field(default=None, compare=False, repr=False)

    #: how the probe was trained ("medprobe", or the study's "study" / "study-clip" recipe) and where
    #: its layer was chosen ("validation", or "test": the study's optimistic choice)
    recipe: str = "medprobe"
    selected_on: str = "validation"
    #: a study-protocol row: the backbone row (stack included) of the medprobe protocol it is paired with
    protocol_of: str | None = None
    #: set (True) when a study option is active: rows then carry the study's file index of the layer
    study_labels: bool = False

    @property
    def key(self) -> tuple[str, float, int]:
        """``(backbone, train_fraction, seed)``: what a selected probe is compared and pooled by."""
        return (self.backbone, self.train_fraction, self.seed)


__all__ = ["ProbeOutcome"]
