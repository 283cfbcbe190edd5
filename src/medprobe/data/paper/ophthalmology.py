"""Ophthalmology tasks: T5 EyePACS -> APTOS-2019 DR grade, T6 AIROGS -> ODIR-2019 glaucoma."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from medprobe.data.dataset import Dataset
from medprobe.errors import DataError
from medprobe.data.paper.common import (
    absolute,
    check_fraction,
    common_root,
    drop_missing,
    exclusion,
    finish,
    integers,
    locate,
    read_csv,
    require_columns,
    split_pool,
)

DR_CLASSES = ["no DR", "mild", "moderate", "severe", "proliferative DR"]
_EYEPACS_NAME = re.compile(r"^(?P<patient>.+)_(?P<eye>left|right)$")


def load_eyepacs_aptos(
    eyepacs_dir: str | Path,
    eyepacs_csv: str | Path,
    aptos_dir: str | Path,
    aptos_csv: str | Path,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    check_files: bool = True,
    max_size: int = 1024,
) -> Dataset:
    """T5: diabetic retinopathy grade 0-4; EyePACS for train/val, APTOS-2019 as external test.

    EyePACS (Kaggle 2015): ``trainLabels.csv`` (``image, level``), images
    ``<eyepacs_dir>/<image>.jpeg``; names are ``<patient>_left`` / ``<patient>_right``, so the
    patient is the group and val (``val_fraction``) never shares a patient with train.
    APTOS-2019: ``train.csv`` (``id_code, diagnosis``), images ``<aptos_dir>/<id_code>.png``; it
    publishes no patient ids (groups ``None``). Sample ids: ``eyepacs/<image>``, ``aptos/<id_code>``;
    extra columns ``cohort`` and ``eye``.
    """
    check_fraction(val_fraction, "val_fraction")
    eyepacs_folder, aptos_folder = absolute(eyepacs_dir), absolute(aptos_dir)
    root = common_root(eyepacs_folder, aptos_folder)
    excluded: list[dict] = []

    eyepacs = read_csv(eyepacs_csv, "EyePACS label CSV", ["image", "level"])
    names = eyepacs["image"].str.strip()
    parsed = names.str.extract(_EYEPACS_NAME)
    unparsed = parsed["patient"].isna()
    if unparsed.any():
        raise DataError(f"{eyepacs_csv}: image names must look like '<patient>_left' or "
                        f"'<patient>_right'; not so for {names[unparsed][:5].tolist()}")
    train = pd.DataFrame({
        "sample_id": "eyepacs/" + names,
        "split": "train",
        "label": integers(eyepacs["level"], range(5), f"{eyepacs_csv} column level", names),
        "group": "eyepacs:" + parsed["patient"],
        "source": locate(eyepacs_folder, (names + ".jpeg").tolist(), root, check_files),
        "cohort": "EyePACS",
        "eye": parsed["eye"],
    })
    train = drop_missing(train, excluded, eyepacs_folder)
    train["split"] = split_pool(train["label"].to_numpy(), train["group"].to_numpy(),
                                 {"train": 1 - val_fraction, "val": val_fraction}, seed)

    aptos = read_csv(aptos_csv, "APTOS-2019 label CSV", ["id_code", "diagnosis"])
    codes = aptos["id_code"].str.strip()
    test = pd.DataFrame({
        "sample_id": "aptos/" + codes,
        "split": "test",
        "label": integers(aptos["diagnosis"], range(5), f"{aptos_csv} column diagnosis", codes),
        "group": None,
        "source": locate(aptos_folder, (codes + ".png").tolist(), root, check_files),
        "cohort": "APTOS-2019",
        "eye": None,
    })
    test = drop_missing(test, excluded, aptos_folder)
    table = pd.concat([train, test], ignore_index=True)
    table["label"] = table["label"].astype(int).tolist()
    description = (f"DR grading: EyePACS train/val (val {val_fraction:.0%} by patient, seed {seed}), "
                   "APTOS-2019 external test")
    return finish("eyepacs_aptos", table, DR_CLASSES, "multiclass", root, description, excluded, max_size)


# ====================================================================== T6: AIROGS -> ODIR
GLAUCOMA_CLASSES = ["no glaucoma", "glaucoma"]
ODIR_COLUMNS = ["ID", "Left-Fundus", "Right-Fundus", "Left-Diagnostic Keywords", "Right-Diagnostic Keywords"]
# ODIR joins keywords with the full-width comma "，" (sometimes an ASCII comma or semicolon).
_KEYWORD_SEPARATORS = re.compile(r"[，,;；]")


def _read_odir(path: str | Path) -> pd.DataFrame:
    """ODIR-5K annotations from the published ``.xlsx`` (needs ``openpyxl``) or a CSV export."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"ODIR annotation file not found: {path}")
    if path.suffix.lower() in (".xlsx", ".xlsm", ".xls"):
        try:
            import openpyxl  # noqa: F401  (pandas' xlsx engine)
        except ImportError:
            raise DataError(
                f"{path}: reading .xlsx needs the 'openpyxl' package (pip install openpyxl), or "
                "export the sheet to CSV with the same columns and pass that file instead"
            ) from None
        try:
            table = pd.read_excel(path, dtype=str)
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: cannot read the ODIR spreadsheet ({error})") from error
        return require_columns(table, ODIR_COLUMNS, f"ODIR annotations {path}")
    return read_csv(path, "ODIR annotations", ODIR_COLUMNS)


def odir_eye_label(keywords: Any) -> int | None:
    """1 for glaucoma (any keyword containing "glaucoma"), 0 for "normal fundus", else None."""
    if not isinstance(keywords, str):
        return None
    terms = [t.strip().lower() for t in _KEYWORD_SEPARATORS.split(keywords) if t.strip()]
    if any("glaucoma" in t for t in terms):
        return 1
    if "normal fundus" in terms:
        return 0
    return None


def load_airogs_odir(
    airogs_dir: str | Path,
    airogs_csv: str | Path,
    odir_dir: str | Path,
    odir_xlsx_or_csv: str | Path,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    check_files: bool = True,
    max_size: int = 1024,
) -> Dataset:
    """T6: referable glaucoma; AIROGS for train/val, ODIR-2019 eyes as external test.

    AIROGS: ``train_labels.csv`` (``challenge_id, class``, class ``NRG``/``RG``), images
    ``<challenge_id>.jpg`` (directly in ``airogs_dir`` or in its part folders ``0``..``5``); no
    patient ids are published, so val (``val_fraction``, stratified) is drawn per image.
    ODIR-5K: ``ODIR-5K_Training_Annotations(Updated)_V2.xlsx`` or a CSV export with the same
    columns (``ID, ..., Left-Fundus, Right-Fundus, Left-Diagnostic Keywords, Right-Diagnostic
    Keywords, N, D, G, ...``). Each eye is one sample, labelled from its own keywords
    (:func:`odir_eye_label`): glaucoma if a keyword contains "glaucoma" (including "suspected
    glaucoma"), no glaucoma if "normal fundus"; other eyes (other diseases) are excluded. The
    patient ``ID`` is the group. Sample ids: ``airogs/<challenge_id>``, ``odir/<fundus file>``.
    """
    check_fraction(val_fraction, "val_fraction")
    airogs_folder, odir_folder = absolute(airogs_dir), absolute(odir_dir)
    root = common_root(airogs_folder, odir_folder)
    excluded: list[dict] = []

    airogs = read_csv(airogs_csv, "AIROGS label CSV", ["challenge_id", "class"])
    ids = airogs["challenge_id"].str.strip()
    stated = airogs["class"].str.strip().str.upper()
    unknown = ~stated.isin(["NRG", "RG"])
    if unknown.any():
        raise DataError(f"{airogs_csv}: class must be NRG or RG; got {stated[unknown].unique()[:5].tolist()}")
    train = pd.DataFrame({
        "sample_id": "airogs/" + ids,
        "split": "train",
        "label": (stated == "RG").astype(int).to_numpy(),
        "group": None,
        "source": locate(airogs_folder, (ids + ".jpg").tolist(), root, check_files),
        "cohort": "AIROGS",
        "keywords": stated,
    })
    train = drop_missing(train, excluded, airogs_folder)
    train["split"] = split_pool(train["label"].to_numpy(), None,
                                 {"train": 1 - val_fraction, "val": val_fraction}, seed)

    odir = _read_odir(odir_xlsx_or_csv)
    eyes = []
    for side in ("Left", "Right"):
        eyes.append(pd.DataFrame({
            "file": odir[f"{side}-Fundus"].str.strip(),
            "patient": odir["ID"].str.strip(),
            "keywords": odir[f"{side}-Diagnostic Keywords"],
        }))
    eyes_table = pd.concat(eyes, ignore_index=True)
    labels = eyes_table["keywords"].map(odir_eye_label)
    for file, keywords in zip(eyes_table.loc[labels.isna(), "file"], eyes_table.loc[labels.isna(), "keywords"]):
        excluded.append(exclusion(f"odir/{file}", "", f"neither glaucoma nor normal fundus: {keywords!r}"))
    eyes_table = eyes_table[labels.notna()]
    test = pd.DataFrame({
        "sample_id": "odir/" + eyes_table["file"],
        "split": "test",
        "label": labels[labels.notna()].astype(int).to_numpy(),
        "group": "odir:" + eyes_table["patient"],
        "source": locate(odir_folder, eyes_table["file"].tolist(), root, check_files),
        "cohort": "ODIR-2019",
        "keywords": eyes_table["keywords"],
    })
    test = drop_missing(test, excluded, odir_folder)
    table = pd.concat([train, test], ignore_index=True)
    table["label"] = table["label"].astype(int).tolist()
    description = (f"Glaucoma: AIROGS train/val (val {val_fraction:.0%}, seed {seed}), ODIR-2019 eyes "
                   "with glaucoma or normal fundus as external test")
    return finish("airogs_odir", table, GLAUCOMA_CLASSES, "binary", root, description, excluded, max_size)
