"""Radiology task T8: knee osteoarthritis Kellgren-Lawrence grade (OAI, MOST), as the study ran it.

The study's test sets are per cohort: OAI 7,108 knee images of 677 patients and MOST 2,796 of
418 patients, each cohort also giving training images. Both cohorts publish KL grades per knee
and visit, and bilateral knee radiographs (DICOM) that must be cut into one image per knee before
probing; neither publishes the study's patient lists, visits or knee crops. So this adapter reads
the published KL files, names each knee image by ``image_pattern`` (how your cropping step saved
it), and draws each cohort's test patients (``test_fraction``, default 14 %: 677 of OAI's 4,796
and 418 of MOST's 3,026 patients) by patient, stratified by grade and seeded. Image counts
follow from the visits you include and the knee images you have; they cannot be checked against
the study without its lists. Results per cohort: ``stats.group_column: cohort``.

Formats assumed (the text versions of the releases; ``|``- or ``,``-separated, header row):

* OAI: ``kxr_sq_bu<visit>.txt`` (Boston University central readings, ``kXR_SQ_BU<visit>``) with
  ``ID``, ``SIDE`` (``1`` right, ``2`` left; ``"1: Right"`` also read), optionally ``READPRJ``,
  and one grade column ``V<visit>XRKL`` (e.g. ``V00XRKL``); one file per visit.
* MOST: the central x-ray reading file with ``MOSTID`` and one grade column per visit and side,
  ``V<visit>X<L|R>KL`` (e.g. ``V0XLKL``, ``V0XRKL``, ``V2XRKL``).

A grade cell that is empty or not a number (``.``, ``".: Missing Form"``) means "not graded":
the knee is excluded and listed. A knee graded twice in one visit (two reading projects) keeps
the first reading; the others are listed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from medprobe.data.dataset import Dataset
from medprobe.data.paper.sample_table import (
    absolute,
    check_fraction,
    drop_missing,
    exclusion,
    finish,
    selected,
    split_pool,
)
from medprobe.errors import DataError

KL_CLASSES = ["KL0", "KL1", "KL2", "KL3", "KL4"]
#: Images and patients in the study's per-cohort test sets.
STUDY_KNEE_TEST = {"OAI": (7_108, 677), "MOST": (2_796, 418)}
DEFAULT_IMAGE_PATTERN = "{cohort}/{patient}_V{visit}_{side}.png"
_OAI_GRADE = re.compile(r"^V(\d{2})XRKL$", re.IGNORECASE)
_MOST_GRADE = re.compile(r"^V(\d{1,2})X([LR])KL$", re.IGNORECASE)
_LEADING_INTEGER = re.compile(r"^\s*(-?\d+)(\.0*)?\s*(:.*)?$")


def _leading_integer(value: object) -> int | None:
    """``"2"``, ``"2.0"``, ``"2: KL2"`` -> 2; empty, ``.`` and other missing codes -> None."""
    if not isinstance(value, str):
        return None
    match = _LEADING_INTEGER.match(value)
    return int(match.group(1)) if match else None


def _read_release_table(path: str | Path, what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    with path.open(encoding="utf-8", errors="replace") as handle:
        header = handle.readline()
    separator = "|" if "|" in header else ","
    try:
        table = pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise DataError(f"{what} {path} cannot be read: {error}") from error
    table.columns = [str(c).strip().upper() for c in table.columns]
    return table


def read_oai_kl(path: str | Path) -> pd.DataFrame:
    """One OAI ``kxr_sq_bu<visit>.txt``: rows ``cohort, patient, visit, side, grade, where``."""
    table = _read_release_table(path, "OAI KL file")
    grade_columns = [c for c in table.columns if _OAI_GRADE.match(c)]
    if "ID" not in table.columns or "SIDE" not in table.columns or len(grade_columns) != 1:
        raise DataError(f"OAI KL file {path}: expected columns ID, SIDE and one V<visit>XRKL; "
                        f"it has {list(table.columns)}")
    sides = table["SIDE"].map(_leading_integer).map({1: "R", 2: "L"})
    if sides.isna().any():
        bad = table.loc[sides.isna(), "SIDE"].unique()[:5].tolist()
        raise DataError(f"OAI KL file {path}: SIDE must be 1 (right) or 2 (left); found {bad}")
    return pd.DataFrame({
        "cohort": "OAI",
        "patient": table["ID"].str.strip(),
        "visit": _OAI_GRADE.match(grade_columns[0]).group(1),
        "side": sides,
        "grade": table[grade_columns[0]],
        "where": [f"{Path(path).name} line {i + 2}" for i in range(len(table))],
    })


def read_most_kl(path: str | Path) -> pd.DataFrame:
    """The MOST x-ray reading file: one row per patient, one grade column per visit and side."""
    table = _read_release_table(path, "MOST KL file")
    grade_columns = [c for c in table.columns if _MOST_GRADE.match(c)]
    if "MOSTID" not in table.columns or not grade_columns:
        raise DataError(f"MOST KL file {path}: expected MOSTID and columns V<visit>X<L|R>KL; "
                        f"it has {list(table.columns)}")
    frames = []
    for column in grade_columns:
        visit, side = _MOST_GRADE.match(column).groups()
        frames.append(pd.DataFrame({
            "cohort": "MOST",
            "patient": table["MOSTID"].str.strip(),
            "visit": visit,
            "side": side.upper(),
            "grade": table[column],
            "where": [f"{Path(path).name} line {i + 2} column {column}" for i in range(len(table))],
        }))
    return pd.concat(frames, ignore_index=True)


def _oai_file(folder: Path, visit: str) -> Path:
    wanted = f"kxr_sq_bu{visit}.txt"
    if not folder.is_dir():
        raise DataError(f"OAI KL folder not found: {folder}")
    found = [p for p in folder.iterdir() if p.name.lower() == wanted]
    if not found:
        raise DataError(f"OAI KL file for visit {visit!r} not found: {folder / wanted} (the text release "
                        "of kXR_SQ_BU; visits are two digits, e.g. 00, 01, 03)")
    return found[0]


def load_knee_kl(
    image_dir: str | Path,
    *,
    oai_kl_dir: str | Path | None = None,
    oai_visits: Sequence[str] = ("00",),
    most_kl_file: str | Path | None = None,
    image_pattern: str = DEFAULT_IMAGE_PATTERN,
    test_fraction: float = 0.14,
    val_fraction: float = 0.1,
    seed: int = 0,
    check_files: bool = True,
    max_size: int = 1024,
) -> Dataset:
    """T8: KL grade 0-4 per knee image, OAI and MOST, with a test set from each cohort.

    ``oai_kl_dir``: the folder holding OAI's ``kxr_sq_bu<visit>.txt`` files (name matched without
    regard to case), read for each of ``oai_visits`` (e.g. ``["00", "01", "03"]``);
    ``most_kl_file``: MOST's reading file (formats: see the module). Each graded knee and visit is
    one sample, image ``<image_dir>/<image_pattern>`` with fields ``cohort`` (``OAI``/``MOST``),
    ``patient``, ``visit`` (as in the column name, e.g. ``00`` or ``0``) and ``side`` (``L``/``R``).
    Splits, per cohort and by patient (group ``<cohort>:<patient>``: the cohorts number patients
    independently), stratified by grade and seeded: ``test_fraction`` test, ``val_fraction`` val,
    the rest train. Extra columns ``cohort``, ``visit``, ``side``. Sample id:
    ``<cohort>/<patient>_V<visit>_<side>``.
    """
    check_fraction(val_fraction, "val_fraction")
    check_fraction(test_fraction, "test_fraction")
    if not 0 < test_fraction + val_fraction < 1:
        raise DataError(f"test_fraction + val_fraction must be in (0, 1), got {test_fraction + val_fraction}")
    tables = [read_oai_kl(_oai_file(Path(oai_kl_dir), str(visit))) for visit in oai_visits] if oai_kl_dir else []
    if most_kl_file is not None:
        tables.append(read_most_kl(most_kl_file))
    if not tables:
        raise DataError("knee_kl: give oai_kl_dir and/or most_kl_file (the cohorts' published KL grades)")
    knees = pd.concat(tables, ignore_index=True)
    knees["sample_id"] = (knees["cohort"] + "/" + knees["patient"] + "_V" + knees["visit"] + "_" + knees["side"])
    excluded: list[dict] = []

    grades = knees["grade"].map(_leading_integer)
    out_of_range = grades.notna() & ~grades.isin(range(5))
    if out_of_range.any():
        examples = knees.loc[out_of_range, ["where", "grade"]].head(5).values.tolist()
        raise DataError(f"knee KL grades must be 0-4; found {int(out_of_range.sum())} others, e.g. {examples}")
    for sample_id, where, value in knees.loc[grades.isna(), ["sample_id", "where", "grade"]].itertuples(index=False):
        excluded.append(exclusion(sample_id, "", "no KL grade", where=where, value=value))
    knees = knees[grades.notna()].assign(label=grades[grades.notna()].astype(int)).reset_index(drop=True)
    repeated = knees["sample_id"].duplicated()
    for sample_id, where in knees.loc[repeated, ["sample_id", "where"]].itertuples(index=False):
        excluded.append(exclusion(sample_id, "", "another reading of the same knee and visit", where=where))
    knees = knees[~repeated].reset_index(drop=True)

    folder = absolute(image_dir)
    try:
        sources = [image_pattern.format(cohort=c, patient=p, visit=v, side=s)
                   for c, p, v, s in knees[["cohort", "patient", "visit", "side"]].itertuples(index=False)]
    except (KeyError, IndexError, ValueError) as error:
        raise DataError(f"knee_kl image_pattern {image_pattern!r}: use the fields {{cohort}}, {{patient}}, "
                        f"{{visit}} and {{side}} ({error})") from None
    if check_files:
        sources = [s if (folder / s).is_file() else None for s in sources]
        if sources and all(s is None for s in sources):
            raise DataError(f"none of the {len(sources)} knee images were found under {folder} "
                            f"(e.g. {image_pattern.format(**knees.iloc[0][['cohort', 'patient', 'visit', 'side']])}); "
                            "check image_dir and image_pattern")
    table = pd.DataFrame({
        "sample_id": knees["sample_id"], "split": "train", "label": knees["label"],
        "group": knees["cohort"] + ":" + knees["patient"], "source": sources,
        "cohort": knees["cohort"], "visit": knees["visit"], "side": knees["side"],
    })
    table = drop_missing(table, excluded, folder)
    fractions = {"train": 1 - test_fraction - val_fraction, "val": val_fraction, "test": test_fraction}
    for cohort in table["cohort"].unique():
        rows = (table["cohort"] == cohort).to_numpy()
        table.loc[rows, "split"] = split_pool(table.loc[rows, "label"].to_numpy(),
                                              table.loc[rows, "group"].to_numpy(), fractions, seed)
    table["label"] = table["label"].astype(int).tolist()
    cohorts = sorted(table["cohort"].unique())
    description = (f"Knee KL grade ({', '.join(cohorts)}): per cohort by patient, test {test_fraction:.0%}, "
                   f"val {val_fraction:.0%} (stratified by grade, seed {seed}); images {image_pattern}")
    selection = [selected(f"{cohort} test patients (study: {STUDY_KNEE_TEST[cohort][1]})",
                          table.loc[(table["cohort"] == cohort) & (table["split"] == "test"), "group"].nunique(),
                          table.loc[table["cohort"] == cohort, "group"].nunique(), "patients")
                 for cohort in cohorts]
    return finish("knee_kl", table, KL_CLASSES, "multiclass", folder, description, excluded, max_size,
                  selection=selection)
