"""ROC curves of each backbone's selected layer, drawn from the saved test predictions."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medprobe.report.figures.spec import FigureSpec
from medprobe.report.figures.style import FigureSkipped, backbone_colours, figure_style, new_figure
from medprobe.report.load import RunData


def _roc_inputs(run: RunData, part: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores for one fit: the positive class (binary) or flattened one-vs-rest (micro)."""
    classes = run.classes
    missing = [f"score[{c}]" for c in classes if f"score[{c}]" not in part.columns]
    if missing:
        raise FigureSkipped(f"predictions.parquet lacks the column(s) {missing}")
    if run.task_type == "binary":
        if "y_true" not in part.columns:
            raise FigureSkipped("predictions.parquet lacks the column 'y_true'")
        return (part["y_true"].to_numpy() == 1).astype(int), part[f"score[{classes[1]}]"].to_numpy(float)
    scores = part[[f"score[{c}]" for c in classes]].to_numpy(float)
    if run.task_type == "multilabel":
        columns = [f"true[{c}]" for c in classes]
        if any(c not in part.columns for c in columns):
            raise FigureSkipped("predictions.parquet lacks the true[<class>] columns of a multi-label task")
        truth = part[columns].to_numpy(int)
    else:
        if "y_true" not in part.columns:
            raise FigureSkipped("predictions.parquet lacks the column 'y_true'")
        truth = np.eye(len(classes), dtype=int)[part["y_true"].to_numpy(int)]
    return truth.ravel(), scores.ravel()


def roc_curves(run: RunData) -> Figure:
    """ROC of each backbone's selected layer at the full train fraction, from predictions.parquet.

    Binary tasks: the positive class (class index 1). Multi-class and multi-label tasks: the
    micro-average (every class-vs-rest decision pooled), which is one curve per backbone; its area
    is the micro AUROC and differs from the macro AUROC in the tables, so the legend says which.
    """
    from medprobe.scoring import binary_auc, roc_points

    predictions = run.predictions
    if predictions is None:
        raise FigureSkipped("the run folder has no predictions.parquet")
    if len(run.classes) < 2:
        raise FigureSkipped("run.json names fewer than two classes")
    fraction = run.full_fraction
    curves = []
    for backbone, layer, seed in run.reference_probes():
        part = predictions[(predictions["backbone"] == backbone) & (predictions["layer"] == layer)
                           & np.isclose(predictions["train_fraction"].astype(float), fraction)
                           & (predictions["seed"] == seed)]
        if part.empty:
            continue
        truth, scores = _roc_inputs(run, part)
        if truth.min() == truth.max():
            continue
        fpr, tpr = roc_points(truth == 1, scores)
        curves.append((backbone, layer, seed, fpr, tpr, binary_auc(truth == 1, scores)))
    if not curves:
        raise FigureSkipped(f"predictions.parquet has no test predictions of a selected layer at train fraction "
                            f"{fraction:g} with both classes present")
    binary = run.task_type == "binary"
    colours = backbone_colours(run)
    with figure_style():
        fig = new_figure(6.4, 6.2)
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=0.9, label="chance")
        for backbone, layer, seed, fpr, tpr, area in curves:
            name = "AUROC" if binary else "micro AUROC"
            ax.plot(fpr, tpr, color=colours[backbone], linewidth=1.6,
                    label=f"{backbone} ({layer}): {name} {area:.3f}")
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(-0.01, 1.01)
        ax.set_aspect("equal")
        ax.set_xlabel("False positive rate (1 − specificity)")
        ax.set_ylabel("True positive rate (sensitivity)")
        what = (f"positive class '{run.classes[1]}'" if binary
                else "micro-average over all class-vs-rest decisions")
        seeds = sorted({str(c[2]) for c in curves})
        ax.set_title(f"Test ROC, {what}\nselected layer, train fraction {fraction:g}, seed {', '.join(seeds)}",
                     fontsize=9.5)
        ax.legend(loc="lower right", frameon=False)
        fig.tight_layout()
    return fig


ROC_CURVES = FigureSpec(
    "roc_curves",
    "ROC curves",
    "Test ROC curves of each backbone's selected layer at the largest train fraction. Binary tasks show "
    "the positive class; multi-class and multi-label tasks show the micro-average over all "
    "class-vs-rest decisions, whose area differs from the macro AUROC reported in the tables.",
    roc_curves,
)


__all__ = ["ROC_CURVES", "roc_curves"]
