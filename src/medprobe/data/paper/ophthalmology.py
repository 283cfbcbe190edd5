"""Ophthalmology tasks: T5 EyePACS -> APTOS-2019 DR grade, T6 AIROGS -> ODIR-2019 glaucoma."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from medprobe.data.dataset import Dataset
from medprobe.errors import DataError
from medprobe.data.paper.sample_table import (
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
    selected,
    split_pool,
)

DR_CLASSES = ["no DR", "mild", "moderate", "severe", "proliferative DR"]
_EYEPACS_NAME = re.compile(r"^(?P<patient>.+)_(?P<eye>left|right)$")


#: The study's EyePACS division: 73,622 train and 15,078 held-out images of the 88,702 pooled.
STUDY_EYEPACS_VAL_FRACTION = round(15_078 / 88_702, 4)
EYEPACS_USAGE = ("Public", "Private")


def _eyepacs_rows(csv_path: str | Path, folder: Path, root: Path, check_files: bool, part: str) -> pd.DataFrame:
    """One Kaggle EyePACS label file (``trainLabels.csv`` or ``retinopathy_solution.csv``)."""
    required = ["image", "level"] + (["Usage"] if part == "test" else [])
    table = read_csv(csv_path, f"EyePACS {part} label CSV", required)
    names = table["image"].str.strip()
    parsed = names.str.extract(_EYEPACS_NAME)
    unparsed = parsed["patient"].isna()
    if unparsed.any():
        raise DataError(f"{csv_path}: image names must look like '<patient>_left' or "
                        f"'<patient>_right'; not so for {names[unparsed][:5].tolist()}")
    if part == "test":
        usage = table["Usage"].str.strip()
        unknown = sorted(set(usage) - set(EYEPACS_USAGE))
        if unknown:
            raise DataError(f"{csv_path}: Usage must be one of {EYEPACS_USAGE}; found {unknown[:5]}")
    return pd.DataFrame({
        "sample_id": "eyepacs/" + names,
        "split": "train",
        "label": integers(table["level"], range(5), f"{csv_path} column level", names),
        # One patient numbering for both Kaggle parts is not documented, so ids are merged across
        # them: the same number is treated as one patient (at worst coarser groups, never a leak).
        "group": "eyepacs:" + parsed["patient"],
        "source": locate(folder, (names + ".jpeg").tolist(), root, check_files),
        "cohort": "EyePACS",
        "eye": parsed["eye"],
        "kaggle_part": part if part == "train" else "test/" + table["Usage"].str.strip(),
    })


def load_eyepacs_aptos(
    eyepacs_dir: str | Path,
    eyepacs_csv: str | Path,
    aptos_dir: str | Path,
    aptos_csv: str | Path,
    *,
    eyepacs_test_dir: str | Path | None = None,
    eyepacs_test_csv: str | Path | None = None,
    val_fraction: float = STUDY_EYEPACS_VAL_FRACTION,
    seed: int = 0,
    check_files: bool = True,
    max_size: int = 1024,
) -> Dataset:
    """T5: diabetic retinopathy grade 0-4; EyePACS for train/val, APTOS-2019 as external test.

    As the study ran it: the Kaggle 2015 EyePACS training *and* test images are pooled (88,702 =
    35,126 + 53,576), split by patient into 73,622 + 15,078, and APTOS-2019 (3,662 images) is the
    external test. The study does not say what its 15,078 images were used for nor publish its
    patient list; here they are the val split (``val_fraction`` = 15,078 / 88,702), drawn by
    patient, stratified by grade and seeded.

    EyePACS: ``trainLabels.csv`` (``image, level``) with images ``<eyepacs_dir>/<image>.jpeg``,
    and the published test solution ``retinopathy_solution.csv`` (``image, level, Usage``; Usage
    ``Public``/``Private``, both kept) with images ``<eyepacs_test_dir>/<image>.jpeg``. Names are
    ``<patient>_left`` / ``<patient>_right``; the patient is the group. Without the test files
    only the training images are used. APTOS-2019: ``train.csv`` (``id_code, diagnosis``),
    images ``<aptos_dir>/<id_code>.png``; it publishes no patient ids (groups ``None``). Sample
    ids: ``eyepacs/<image>``, ``aptos/<id_code>``; extra columns ``cohort``, ``eye`` and
    ``kaggle_part`` (``train``, ``test/Public``, ``test/Private``).
    """
    check_fraction(val_fraction, "val_fraction")
    if (eyepacs_test_dir is None) != (eyepacs_test_csv is None):
        raise DataError("EyePACS test images: give both eyepacs_test_dir and eyepacs_test_csv "
                        "(retinopathy_solution.csv), or neither")
    folders = {"train": absolute(eyepacs_dir)}
    if eyepacs_test_dir is not None:
        folders["test"] = absolute(eyepacs_test_dir)
    aptos_folder = absolute(aptos_dir)
    root = common_root(*folders.values(), aptos_folder)
    excluded: list[dict] = []

    parts = []
    for part, csv_path in (("train", eyepacs_csv), ("test", eyepacs_test_csv)):
        if csv_path is not None:
            rows = _eyepacs_rows(csv_path, folders[part], root, check_files, part)
            parts.append(drop_missing(rows, excluded, folders[part]))
    train = pd.concat(parts, ignore_index=True)
    duplicated = train["sample_id"][train["sample_id"].duplicated()].tolist()
    if duplicated:
        raise DataError(f"EyePACS: images listed in both label files: {duplicated[:5]}")
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
        "kaggle_part": None,
    })
    test = drop_missing(test, excluded, aptos_folder)
    table = pd.concat([train, test], ignore_index=True)
    table["label"] = table["label"].astype(int).tolist()
    pooled = "train + test (solution file)" if len(parts) == 2 else "train only"
    description = (f"DR grading: EyePACS Kaggle {pooled} as train/val (val {val_fraction:.1%} by patient, "
                   f"seed {seed}), APTOS-2019 external test")
    parts_count = train["kaggle_part"].str.split("/").str[0].value_counts()
    selection = [selected(f"EyePACS Kaggle {part} images pooled into train/val", int(n), len(train))
                 for part, n in sorted(parts_count.items(), reverse=True)]
    return finish("eyepacs_aptos", table, DR_CLASSES, "multiclass", root, description, excluded, max_size,
                  selection=selection)


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
            import openpyxl  # noqa: F401  (pandas' xlsx engine; imported only to say it is missing)
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


def odir_eye_label(keywords: Any, all_eyes: bool = True) -> int | None:
    """1 for glaucoma (any keyword containing "glaucoma", e.g. "suspected glaucoma"), else 0.

    ``all_eyes=False`` (the narrower task) labels only "normal fundus" eyes 0 and returns None
    for eyes with other findings. Eyes without keywords are None either way."""
    if not isinstance(keywords, str) or not keywords.strip():
        return None
    terms = [t.strip().lower() for t in _KEYWORD_SEPARATORS.split(keywords) if t.strip()]
    if any("glaucoma" in t for t in terms):
        return 1
    if all_eyes or "normal fundus" in terms:
        return 0
    return None


def load_airogs_odir(
    airogs_dir: str | Path,
    airogs_csv: str | Path,
    odir_dir: str | Path,
    odir_xlsx_or_csv: str | Path,
    *,
    all_odir_eyes: bool = True,
    val_fraction: float = 0.1,
    seed: int = 0,
    check_files: bool = True,
    max_size: int = 1024,
) -> Dataset:
    """T6: referable glaucoma; AIROGS for train/val, ODIR-2019 eyes as external test.

    As the study ran it: tested on all 7,000 eyes of ODIR-5K's 3,500 patients (its published
    training annotations; the challenge's test labels were never released). AIROGS:
    ``train_labels.csv`` (``challenge_id, class``, class ``NRG``/``RG``), images
    ``<challenge_id>.jpg`` (directly in ``airogs_dir`` or in its part folders ``0``..``5``); no
    patient ids are published, so val (``val_fraction``, stratified) is drawn per image.
    ODIR-5K: the published ``ODIR-5K_Training_Annotations(Updated)_V2.xlsx`` (read with
    ``openpyxl``, the ``paper`` extra) or a CSV export of it with the same columns (``ID, Patient
    Age, Patient Sex, Left-Fundus, Right-Fundus, Left-Diagnostic Keywords, Right-Diagnostic
    Keywords, N, D, G, C, A, H, M, O``); images ``<odir_dir>/<Left-Fundus>`` etc. (ODIR's
    ``Training Images`` folder). Each eye is one sample labelled from its own keywords
    (:func:`odir_eye_label`): glaucoma if a keyword contains "glaucoma", else no glaucoma. The
    per-patient ``G`` column is not used: it marks the patient, not the eye.
    ``all_odir_eyes=False`` keeps only glaucoma and "normal fundus" eyes (others are excluded and
    listed). The patient ``ID`` is the group. Sample ids: ``airogs/<challenge_id>``,
    ``odir/<fundus file>``.
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
    labels = eyes_table["keywords"].map(lambda k: odir_eye_label(k, all_odir_eyes))
    for file, keywords in zip(eyes_table.loc[labels.isna(), "file"], eyes_table.loc[labels.isna(), "keywords"]):
        reason = ("no diagnostic keywords" if not isinstance(keywords, str) or not keywords.strip()
                  else "neither glaucoma nor normal fundus (all_odir_eyes: false)")
        excluded.append(exclusion(f"odir/{file}", "", reason, keywords=keywords))
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
    description = (f"Glaucoma: AIROGS train/val (val {val_fraction:.0%}, seed {seed}), "
                   + ("all ODIR-5K eyes" if all_odir_eyes else "ODIR-5K eyes with glaucoma or normal fundus")
                   + " as external test")
    return finish("airogs_odir", table, GLAUCOMA_CLASSES, "binary", root, description, excluded, max_size)
