"""Radiology task T8: knee osteoarthritis Kellgren-Lawrence grade (OAI, MOST)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medprobe.data.dataset import Dataset
from medprobe.errors import DataError
from medprobe.data.paper.common import (
    absolute,
    check_fraction,
    drop_missing,
    exclusion,
    finish,
    integers,
    read_csv,
    split_pool,
)

KL_CLASSES = ["KL0", "KL1", "KL2", "KL3", "KL4"]


def load_knee_kl(
    csv_path: str | Path,
    root: str | Path,
    *,
    test_cohort: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    check_files: bool = True,
    max_size: int = 1024,
) -> Dataset:
    """T8: Kellgren-Lawrence grade 0-4 of knee radiographs (OAI and MOST).

    ``csv_path``: one row per knee image with ``path`` (relative to ``root``, or absolute),
    ``kl_grade`` (0-4), ``patient_id`` and ``cohort`` (``OAI`` or ``MOST``). Rows without a grade
    are excluded. Splits: with ``test_cohort`` (e.g. ``"MOST"``) that cohort is the external test
    set and val (``val_fraction``) is drawn from the others; otherwise train/val/test are drawn
    from all rows (test share ``test_fraction``). Always by patient; the group is
    ``<cohort>:<patient_id>`` since the cohorts number patients independently. Sample id: ``path``.
    """
    check_fraction(val_fraction, "val_fraction")
    check_fraction(test_fraction, "test_fraction")
    folder = absolute(root)
    csv = read_csv(csv_path, "knee KL CSV", ["path", "kl_grade", "patient_id", "cohort"])
    csv["path"] = csv["path"].str.strip()
    csv["cohort"] = csv["cohort"].str.strip()
    excluded: list[dict] = []
    ungraded = csv["kl_grade"].isna() | (csv["kl_grade"].str.strip() == "")
    for path in csv.loc[ungraded, "path"]:
        excluded.append(exclusion(path, path, "no KL grade"))
    csv = csv[~ungraded].reset_index(drop=True)
    sources: list[str | None] = []
    for path in csv["path"]:
        file = Path(path) if Path(path).is_absolute() else folder / path
        sources.append(path if not check_files or file.is_file() else None)
    table = pd.DataFrame({
        "sample_id": csv["path"],
        "split": "train",
        "label": integers(csv["kl_grade"], range(5), f"{csv_path} column kl_grade", csv["path"]),
        "group": csv["cohort"] + ":" + csv["patient_id"].str.strip(),
        "source": sources,
        "cohort": csv["cohort"],
    })
    table = drop_missing(table, excluded, folder)
    if check_files and table.empty:
        raise DataError(f"none of the images listed in {csv_path} were found under {folder}")
    if test_cohort is not None:
        is_test = (table["cohort"] == test_cohort).to_numpy()
        if not is_test.any():
            raise DataError(f"{csv_path}: no rows of test_cohort {test_cohort!r}; cohorts: "
                            f"{sorted(table['cohort'].unique())}")
        table.loc[is_test, "split"] = "test"
        pool = ~is_test
        fractions = {"train": 1 - val_fraction, "val": val_fraction}
    else:
        pool = np.ones(len(table), dtype=bool)
        fractions = {"train": 1 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    table.loc[pool, "split"] = split_pool(
        table.loc[pool, "label"].to_numpy(), table.loc[pool, "group"].to_numpy(), fractions, seed
    )
    table["label"] = table["label"].astype(int).tolist()
    description = ("Knee KL grade: " + (f"test cohort {test_cohort}, " if test_cohort else "")
                   + ", ".join(f"{s} {f:.0%}" for s, f in fractions.items())
                   + f" of {'the other cohorts' if test_cohort else 'all images'} by patient (seed {seed})")
    return finish("knee_kl", table, KL_CLASSES, "multiclass", folder, description, excluded, max_size)
