"""run.json ``label_efficiency``: the task metric per train fraction and its share of the full-data value.

A pure function of the results rows and the selected probes' replicates
(:func:`medprobe.stats.rows.metric_rows`); the CIs come from :func:`medprobe.stats.efficiency.ratio_intervals`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from medprobe.stats.efficiency import ratio_intervals
from medprobe.stats.rows import SelectedReplicates


def _sizes(values: Sequence[Any]) -> list[int | None]:
    return [None if n is None or n != n else int(n) for n in values]


def label_efficiency(rows: Sequence[dict[str, Any]], replicates: SelectedReplicates, *, metric: str,
                     seed: int) -> list[dict[str, Any]]:
    """Task metric per train fraction and its share of the full-data value, with CIs.

    ``value_mean`` / ``value_sd``: mean and SD (ddof=1; None with one seed) over seeds.
    ``fraction_of_full`` = mean over seeds / full-data value; ``chance_corrected_ratio`` =
    (mean AUC - 0.5) / (full AUC - 0.5) for AUC task metrics. Their CIs are percentile
    intervals of a two-level bootstrap: replicate r re-draws the test patients (the shared
    replicates of all rows) and the seeds (S of the S seeds, with replacement), and takes the
    ratio of the drawn seeds' mean on replicate r to the full-data value on replicate r; so
    the CI holds test-set and seed-to-seed variation, and the correlation between the
    numerator and the denominator (same test patients). ``n_train`` / ``n_val``: the sizes
    actually used (after the one-per-class top-up), per seed and their mean. ``seed`` seeds
    the re-drawing of seeds."""
    frame = pd.DataFrame([r for r in rows if r["selected"] and r["metric"] == metric])
    if frame.empty or frame["train_fraction"].nunique() < 2:
        return []
    values_on = {key: kept[1][metric] for key, kept in replicates.items()}
    rng = np.random.default_rng(seed)
    summary = []
    for backbone, part in frame.groupby("backbone", sort=False):
        full_rows = part[part["train_fraction"] == 1.0]
        full = float(full_rows["value"].mean()) if len(full_rows) else float("nan")
        full_replicates = [values_on[(backbone, 1.0, int(s))] for s in full_rows["seed"]
                           if (backbone, 1.0, int(s)) in values_on]
        full_r = np.mean(full_replicates, axis=0) if full_replicates else None
        for fraction, at in part.groupby("train_fraction"):
            values = at["value"].to_numpy(dtype=float)
            entry: dict[str, Any] = {
                "backbone": backbone, "train_fraction": float(fraction), "value_mean": float(values.mean()),
                "value_sd": float(values.std(ddof=1)) if values.size > 1 else None, "n_seeds": int(values.size),
                "seeds": [int(s) for s in at["seed"]], "n_train": _sizes(at["n_train"]), "n_val": _sizes(at["n_val"]),
                "fraction_of_full": float(values.mean() / full) if full == full else None,
                "chance_corrected_ratio": (float((values.mean() - 0.5) / (full - 0.5))
                                           if metric == "auc" and full == full and full != 0.5 else None),
            }
            known = [n for n in entry["n_train"] if n is not None]
            entry["n_train_mean"] = float(np.mean(known)) if known else None
            seed_replicates = [values_on.get((backbone, float(fraction), int(s))) for s in at["seed"]]
            if full_r is not None and all(r is not None for r in seed_replicates):
                entry.update(ratio_intervals(np.stack(seed_replicates), full_r, metric == "auc", rng))
            summary.append(entry)
    return summary


__all__ = ["label_efficiency"]
