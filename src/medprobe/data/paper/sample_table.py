"""Building a study task's sample table from its label files: the steps every study adapter shares.

Checked CSV reading, finding each listed image under its folder, exclusion records, splitting
pools of samples, and :func:`finish`, which turns the table into the checked Dataset.

Every rule that drops a row records it with :func:`exclusion`, whose ``reason`` is a fixed text
per rule (details go in extra keys), so ``medprobe data`` can count the rows each rule removed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from medprobe.data.dataset import Dataset, TaskType
from medprobe.data.images import preprocessing_fingerprint
from medprobe.data.readers import FileImageReader
from medprobe.data.splits import group_stratified_split
from medprobe.errors import DataError

COLUMNS = ["sample_id", "split", "label", "group", "source"]

def exclusion(sample_id: str, source: str, reason: str, **details: object) -> dict[str, object]:
    """One excluded row: ``reason`` is the rule's fixed text (counted per reason by ``medprobe
    data``); what differs per row (a count, a keyword) goes into ``details``."""
    return {"sample_id": sample_id, "source": source, "reason": reason, **details}


def read_csv(path: str | Path, what: str, required: Sequence[str]) -> pd.DataFrame:
    """A CSV read as strings (ids like ``0001`` keep their zeros), with its columns checked."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        table = pd.read_csv(path, dtype=str)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise DataError(f"{what} {path} cannot be read as CSV: {error}") from error
    return require_columns(table, required, f"{what} {path}")


def require_columns(table: pd.DataFrame, required: Sequence[str], where: str) -> pd.DataFrame:
    """``table`` with stripped column names, after checking it has ``required``; ``where`` names the file."""
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(f"{where} lacks columns {missing}; it has {list(table.columns)}")
    return table


def integers(values: pd.Series, allowed: Iterable[int], where: str, ids: pd.Series) -> np.ndarray:
    """Integer labels (``"2"``, ``"2.0"``) checked against ``allowed``; anything else is an error."""
    numbers = pd.to_numeric(values, errors="coerce")
    allowed_set = set(allowed)
    bad = ~numbers.isin(allowed_set)
    if bad.any():
        examples = [f"{i}: {v!r}" for i, v in zip(ids[bad][:5], values[bad][:5])]
        raise DataError(f"{where}: {int(bad.sum())} label(s) not in {sorted(allowed_set)}, e.g. {examples}")
    return numbers.to_numpy(dtype=np.int64)


def absolute(path: str | Path) -> Path:
    """``path`` with ``~`` expanded and made absolute, so that folders of one data set can be compared."""
    return Path(path).expanduser().resolve()


def common_root(*folders: Path) -> Path:
    """The deepest folder holding all ``folders``: the data set's root, against which sources are relative."""
    return Path(os.path.commonpath([str(f) for f in folders]))


def folder_prefix(folder: Path, root: Path) -> str:
    """``folder`` relative to ``root`` as a prefix for source paths (``""`` when they are the same)."""
    relative = folder.relative_to(root).as_posix()
    return "" if relative == "." else relative + "/"


def index_folder(folder: Path) -> dict[str, str]:
    """File name -> path relative to ``folder`` for every file below it (hidden ones skipped).

    A name found twice is mapped to ``""`` so that asking for it is an error, never a guess."""
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    index: dict[str, str] = {}
    for current, subfolders, files in os.walk(folder):
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        relative = Path(current).relative_to(folder).as_posix()
        for name in files:
            if name.startswith("."):
                continue
            index[name] = "" if name in index else (name if relative == "." else f"{relative}/{name}")
    return index


def locate(
    folder: Path,
    file_names: Sequence[str],
    root: Path,
    check_files: bool,
    expected: Sequence[str] | None = None,
) -> list[str | None]:
    """Source paths (relative to ``root``) of ``file_names`` under ``folder``; ``None`` if missing.

    ``expected`` gives each file's documented path inside ``folder`` (default: directly in it);
    it is used as is when ``check_files`` is False.
    """
    prefix = folder_prefix(folder, root)
    expected = list(file_names) if expected is None else list(expected)
    if not check_files:
        return [prefix + e for e in expected]
    index = index_folder(folder)
    duplicated = sorted({n for n in file_names if index.get(n) == ""})
    if duplicated:
        raise DataError(
            f"{folder}: image file names found more than once below this folder, so the image "
            f"meant is ambiguous: {duplicated[:5]}"
        )
    found = [prefix + index[n] if n in index else None for n in file_names]
    if file_names and all(f is None for f in found):
        raise DataError(
            f"none of the {len(file_names)} listed images were found under {folder} "
            f"(looked for e.g. {list(file_names[:3])}); check the image folder path, or set "
            "data.check_files: false to check the label files without images (medprobe data)"
        )
    return found


def drop_missing(table: pd.DataFrame, excluded: list[dict], folder: Path) -> pd.DataFrame:
    """``table`` without the rows whose image was not found, each listed in ``excluded`` with the reason."""
    missing = table["source"].isna()
    for sample_id in table.loc[missing, "sample_id"]:
        excluded.append(exclusion(str(sample_id), "", "image file not found", folder=str(folder)))
    return table[~missing].reset_index(drop=True)


def finish(
    name: str,
    table: pd.DataFrame,
    classes: Sequence[str],
    task_type: TaskType,
    root: Path,
    description: str,
    excluded: list[dict],
    max_size: int,
    reader: Callable[[pd.Series], np.ndarray] | None = None,
    selection: list[dict] | None = None,
) -> Dataset:
    """Order the columns, normalise missing groups to ``None`` and build the checked Dataset."""
    extras = [c for c in table.columns if c not in COLUMNS]
    table = table[COLUMNS + extras].reset_index(drop=True)
    groups = table["group"].astype(object)
    table["group"] = groups.where(groups.notna(), None)
    return Dataset(
        name=name,
        samples=table,
        classes=list(classes),
        task_type=task_type,
        read_image=reader or FileImageReader(root, max_size),
        root=root,
        description=description,
        excluded=excluded,
        preprocessing=preprocessing_fingerprint(max_size),
        selection=selection or [],
    )


def split_pool(
    labels: np.ndarray, groups: Sequence | np.ndarray | None, fractions: Mapping[str, float], seed: int
) -> np.ndarray:
    """Split names for a pool of samples; fractions of 0 are left out."""
    shares = {name: share for name, share in fractions.items() if share > 0}
    if set(shares) == {"train"}:
        return np.full(len(labels), "train", dtype=object)
    return group_stratified_split(labels, groups, shares, seed)


def selected(rule: str, n: int, of: int, unit: str = "images") -> dict[str, object]:
    """One selection rule's count for ``Dataset.selection`` (see ``medprobe data``)."""
    return {"rule": rule, "selected": int(n), "of": int(of), "unit": unit}


def check_fraction(value: float, what: str) -> float:
    """``value`` as a float after checking it is a split fraction in [0, 1); ``what`` names it in the error."""
    if not 0 <= value < 1:
        raise DataError(f"{what} must be in [0, 1), got {value}")
    return float(value)
