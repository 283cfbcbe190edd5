"""Adapters for the study's eight tasks, each reading its data set's published on-disk format.

=====  ==================  ==========================================  ===========  ==========
task   adapter             data (train/val -> test)                    labels       metric
=====  ==================  ==========================================  ===========  ==========
t1     ``kather``          NCT-CRC-HE-100K -> CRC-VAL-HE-7K            9 tissues    F1 (macro)
t2     ``pannuke``         PanNuke fold 1 / fold 2 -> fold 3           benign/mal.  F1 (macro)
t3     ``isic2018``        HAM10000 (ISIC 2018 task 3)                 7 diagnoses  AUC
t4     ``siim_isic2020``   SIIM-ISIC 2020 train, split by patient      benign/mal.  AUC
t5     ``eyepacs_aptos``   EyePACS -> APTOS-2019 (external)            5 DR grades  AUC
t6     ``airogs_odir``     AIROGS -> ODIR-2019 (external)              glaucoma     AUC
t7     ``padchest``        PadChest automatic labels -> manual labels  findings     AUC
t8     ``knee_kl``         OAI / MOST knee radiographs                 KL 0-4       AUC
=====  ==================  ==========================================  ===========  ==========

Conventions shared by all adapters:

* Images are never read while the table is built; ``Dataset.read_image`` reads one lazily and
  applies the study's preprocessing (:func:`medprobe.data.images.preprocess`, ``max_size``).
* ``source`` is the image path relative to ``Dataset.root`` (the common parent of the image
  folders); ``sample_id`` is a stable, readable id (the image name, prefixed by the cohort when a
  task combines two data sets).
* ``group`` is the patient (or lesion) id where the data set publishes one, else ``None``; no group
  ever spans two splits (:class:`~medprobe.data.dataset.Dataset` checks this).
* Splits the data set does not define are drawn with
  :func:`medprobe.data.splits.group_stratified_split` (whole patients, stratified by class,
  seeded by ``seed``).
* ``check_files=True`` lists the image folders once and drops (into ``Dataset.excluded``, with the
  reason) rows whose image is missing; a folder holding none of the listed images is an error, as
  it almost always means a wrong path. Images may sit directly in the folder or in subfolders.
  ``check_files=False`` skips the listing and assumes the documented layout.
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from medprobe.data.adapters import FileImageReader
from medprobe.data.dataset import Dataset, TaskType
from medprobe.data.images import looks_like_image, preprocess, preprocessing_fingerprint, read_image
from medprobe.data.splits import group_stratified_split
from medprobe.errors import DataError, ImageReadError

COLUMNS = ["sample_id", "split", "label", "group", "source"]


# =============================================================================== shared helpers
def _exclusion(sample_id: str, source: str, reason: str) -> dict[str, str]:
    return {"sample_id": sample_id, "source": source, "reason": reason}


def _read_csv(path: str | Path, what: str, required: Sequence[str]) -> pd.DataFrame:
    """A CSV read as strings (ids like ``0001`` keep their zeros), with its columns checked."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        table = pd.read_csv(path, dtype=str)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise DataError(f"{what} {path} cannot be read as CSV: {error}") from error
    return _require_columns(table, required, f"{what} {path}")


def _require_columns(table: pd.DataFrame, required: Sequence[str], where: str) -> pd.DataFrame:
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(f"{where} lacks columns {missing}; it has {list(table.columns)}")
    return table


def _integers(values: pd.Series, allowed: Iterable[int], where: str, ids: pd.Series) -> np.ndarray:
    """Integer labels (``"2"``, ``"2.0"``) checked against ``allowed``; anything else is an error."""
    numbers = pd.to_numeric(values, errors="coerce")
    allowed_set = set(allowed)
    bad = ~numbers.isin(allowed_set)
    if bad.any():
        examples = [f"{i}: {v!r}" for i, v in zip(ids[bad][:5], values[bad][:5])]
        raise DataError(f"{where}: {int(bad.sum())} label(s) not in {sorted(allowed_set)}, e.g. {examples}")
    return numbers.to_numpy(dtype=np.int64)


def _absolute(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _common_root(*folders: Path) -> Path:
    return Path(os.path.commonpath([str(f) for f in folders]))


def _prefix(folder: Path, root: Path) -> str:
    relative = folder.relative_to(root).as_posix()
    return "" if relative == "." else relative + "/"


def _index_folder(folder: Path) -> dict[str, str]:
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


def _locate(
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
    prefix = _prefix(folder, root)
    expected = list(file_names) if expected is None else list(expected)
    if not check_files:
        return [prefix + e for e in expected]
    index = _index_folder(folder)
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
            f"(looked for e.g. {list(file_names[:3])}); check the image folder path"
        )
    return found


def _drop_missing(table: pd.DataFrame, excluded: list[dict], folder: Path) -> pd.DataFrame:
    missing = table["source"].isna()
    for sample_id in table.loc[missing, "sample_id"]:
        excluded.append(_exclusion(str(sample_id), "", f"image file not found under {folder}"))
    return table[~missing].reset_index(drop=True)


def _finish(
    name: str,
    table: pd.DataFrame,
    classes: Sequence[str],
    task_type: TaskType,
    root: Path,
    description: str,
    excluded: list[dict],
    max_size: int,
    reader: Callable[[pd.Series], np.ndarray] | None = None,
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
    )


def _split_pool(
    labels: np.ndarray, groups: Sequence | np.ndarray | None, fractions: Mapping[str, float], seed: int
) -> np.ndarray:
    """Split names for a pool of samples; fractions of 0 are left out."""
    shares = {name: share for name, share in fractions.items() if share > 0}
    if set(shares) == {"train"}:
        return np.full(len(labels), "train", dtype=object)
    return group_stratified_split(labels, groups, shares, seed)


def _check_fraction(value: float, what: str) -> float:
    if not 0 <= value < 1:
        raise DataError(f"{what} must be in [0, 1), got {value}")
    return float(value)


# ======================================================================== T1: Kather colorectal
KATHER_CLASSES = ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]


def _scan_class_folders(
    folder: Path, classes: Sequence[str], root: Path, excluded: list[dict]
) -> list[tuple[str, int]]:
    """(source, class index) for the images in ``folder/<class>/``; other folders are an error,
    other files (``Thumbs.db``, notes) are listed in ``excluded``."""
    if not folder.is_dir():
        raise DataError(f"Kather folder not found: {folder}")
    present = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = sorted(set(present) - set(classes))
    missing = [c for c in classes if c not in present]
    if unknown or missing:
        raise DataError(
            f"{folder}: expected one folder per tissue class {list(classes)}; "
            + (f"missing {missing}" if missing else "")
            + ("; " if missing and unknown else "")
            + (f"unexpected {unknown}" if unknown else "")
        )
    prefix = _prefix(folder, root)
    rows = []
    for index, name in enumerate(classes):
        for entry in sorted(os.scandir(folder / name), key=lambda e: e.name):
            if not entry.is_file() or entry.name.startswith("."):
                continue
            source = f"{prefix}{name}/{entry.name}"
            if looks_like_image(entry.path):
                rows.append((source, index))
            else:
                excluded.append(_exclusion(source, source, "not an image file"))
    return rows


def load_kather(
    train_dir: str | Path,
    test_dir: str | Path,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    max_size: int = 1024,
) -> Dataset:
    """T1: colorectal tissue classes (Kather et al. 2019), 9-class.

    ``train_dir``: NCT-CRC-HE-100K (or its ``-NONORM`` variant), ``test_dir``: CRC-VAL-HE-7K;
    each holds one folder per class ``ADI BACK DEB LYM MUC MUS NORM STR TUM`` with ``.tif``
    tiles. The test set comes from other patients (it is the data set's external validation set).
    Validation: ``val_fraction`` of the training tiles, stratified by class and seeded; tiles
    carry no patient ids, so groups are ``None`` and val is drawn per tile (it is only used to
    choose C and the layer).
    """
    train_folder, test_folder = _absolute(train_dir), _absolute(test_dir)
    if train_folder == test_folder:
        raise DataError(f"Kather train and test folders are the same: {train_folder}")
    _check_fraction(val_fraction, "val_fraction")
    root = _common_root(train_folder, test_folder)
    excluded: list[dict] = []
    train = _scan_class_folders(train_folder, KATHER_CLASSES, root, excluded)
    test = _scan_class_folders(test_folder, KATHER_CLASSES, root, excluded)
    if not train or not test:
        raise DataError(f"no images found under {train_folder if not train else test_folder}")
    train_labels = np.array([label for _, label in train])
    train_splits = _split_pool(train_labels, None, {"train": 1 - val_fraction, "val": val_fraction}, seed)
    table = pd.DataFrame({
        "source": [s for s, _ in train] + [s for s, _ in test],
        "label": np.concatenate([train_labels, [label for _, label in test]]).astype(int).tolist(),
        "split": list(train_splits) + ["test"] * len(test),
    })
    table["sample_id"] = table["source"]
    table["group"] = None
    description = (f"Kather colorectal tissue: train/val {train_folder.name} "
                   f"(val {val_fraction:.0%}, seed {seed}), test {test_folder.name}")
    return _finish("kather", table, KATHER_CLASSES, "multiclass", root, description, excluded, max_size)


# =============================================================================== T2: PanNuke
PANNUKE_TYPES = ["Neoplastic", "Inflammatory", "Connective/Soft tissue", "Dead", "Epithelial"]
PANNUKE_CLASSES = ["benign", "malignant"]


def pannuke_fold_files(root: Path, fold: int) -> dict[str, Path]:
    """Paths of one fold's ``images``, ``masks`` and ``types`` arrays.

    Accepted layouts (the first that exists wins):

    * as published: ``Fold 1/images/fold1/images.npy``, ``Fold 1/images/fold1/types.npy``,
      ``Fold 1/masks/fold1/masks.npy``;
    * flat: ``fold1/images.npy``, ``fold1/masks.npy``, ``fold1/types.npy``.
    """
    layouts = [
        {
            "images": root / f"Fold {fold}" / "images" / f"fold{fold}" / "images.npy",
            "types": root / f"Fold {fold}" / "images" / f"fold{fold}" / "types.npy",
            "masks": root / f"Fold {fold}" / "masks" / f"fold{fold}" / "masks.npy",
        },
        {kind: root / f"fold{fold}" / f"{kind}.npy" for kind in ("images", "types", "masks")},
    ]
    for layout in layouts:
        if all(path.is_file() for path in layout.values()):
            return layout
    looked = "\n".join(f"  {p}" for layout in layouts for p in layout.values())
    raise DataError(f"PanNuke fold {fold} not found under {root}; looked for:\n{looked}")


def _load_array(path: Path, mmap: bool) -> np.ndarray:
    """``np.load`` without pickle (an object array is refused with a way to convert it)."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise DataError(
                f"{path} stores Python objects; medprobe never unpickles data files. Convert it "
                "once to a plain array, e.g. np.save(path, np.load(path, allow_pickle=True).astype(str))"
            ) from error
        raise DataError(f"{path}: unreadable .npy file ({error})") from error
    except OSError as error:
        raise DataError(f"{path}: unreadable .npy file ({error})") from error


def count_nuclei(masks: np.ndarray, chunk: int = 16) -> np.ndarray:
    """``(n, 5)`` number of nuclei of each type per image from PanNuke instance masks.

    ``masks``: ``(n, H, W, >=5)``; channel ``c < 5`` holds instance ids of nucleus type
    :data:`PANNUKE_TYPES` ``[c]`` (0 = none); a nucleus is one distinct non-zero id in its channel.
    Read ``chunk`` images at a time so memory-mapped folds never load whole.
    """
    if masks.ndim != 4 or masks.shape[3] < 5:
        raise DataError(f"PanNuke masks must have shape (n, H, W, 6), got {masks.shape}")
    n = masks.shape[0]
    counts = np.zeros((n, 5), dtype=np.int64)
    for start in range(0, n, chunk):
        block = np.asarray(masks[start:start + chunk, :, :, :5])
        image, _, _, channel = np.nonzero(block)
        if not len(image):
            continue
        ids = np.rint(block[block != 0]).astype(np.int64)
        span = int(ids.max()) + 1
        # np.nonzero and boolean indexing both walk the block in C order, so entries line up.
        cell = image.astype(np.int64) * 5 + channel
        distinct = np.unique(cell * span + ids)
        counts[start:start + len(block)] += np.bincount(distinct // span, minlength=len(block) * 5).reshape(-1, 5)
    return counts


class PanNukeReader:
    """Reads ``images.npy[i]`` of a fold via a memory map, so a fold is never loaded whole.

    ``row['source']`` is ``<images.npy path relative to root>#<index>``. The maps are opened
    lazily per process (they are dropped when the reader is pickled for worker processes).
    """

    def __init__(self, root: Path, max_size: int) -> None:
        self.root = root
        self.max_size = max_size
        self._maps: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "max_size": self.max_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["root"], state["max_size"])

    def __call__(self, row: pd.Series) -> np.ndarray:
        source = str(row["source"])
        relative, _, index = source.rpartition("#")
        try:
            if relative not in self._maps:
                try:
                    self._maps[relative] = _load_array(self.root / relative, mmap=True)
                except DataError as error:
                    raise ImageReadError(str(error), path=source) from error
            images = self._maps[relative]
            return preprocess(read_image(np.array(images[int(index)])), self.max_size)
        except ImageReadError as error:
            error.sample_id, error.path = str(row["sample_id"]), source
            raise


def load_pannuke(
    root: str | Path,
    *,
    train_folds: Sequence[int] = (1,),
    val_folds: Sequence[int] = (2,),
    test_folds: Sequence[int] = (3,),
    min_neoplastic: int = 10,
    min_neoplastic_fraction: float = 0.3,
    max_size: int = 1024,
) -> Dataset:
    """T2: PanNuke 256x256 patches, benign vs malignant by their nuclei.

    Layouts: see :func:`pannuke_fold_files`. ``masks.npy`` is ``(N, 256, 256, 6)``, channels
    Neoplastic, Inflammatory, Connective/Soft tissue, Dead, Epithelial, Background; the first five
    hold instance ids. Per patch (nuclei counted by :func:`count_nuclei`):

    * malignant: ``>= min_neoplastic`` neoplastic nuclei and neoplastic ``> min_neoplastic_fraction``
      of all nuclei;
    * benign: no neoplastic nucleus (patches without any nucleus included);
    * anything else is ambiguous and goes to ``Dataset.excluded`` with its counts.

    Splits by fold, default the PanNuke benchmark's fold 1 train, fold 2 val, fold 3 test (an
    empty ``val_folds`` leaves val to be carved later). There are no patient ids (groups ``None``);
    the tissue type from ``types.npy`` is kept in the ``organ`` column, with ``fold``,
    ``n_neoplastic`` and ``n_nuclei``. Sample ids: ``fold<k>/<index>`` (5 digits).
    """
    folder = _absolute(root)
    assignment: dict[int, str] = {}
    for split, folds in (("train", train_folds), ("val", val_folds), ("test", test_folds)):
        for fold in folds:
            if fold in assignment:
                raise DataError(f"PanNuke fold {fold} assigned to both {assignment[fold]!r} and {split!r}")
            assignment[int(fold)] = split
    if not any(s == "train" for s in assignment.values()) or not any(s == "test" for s in assignment.values()):
        raise DataError("PanNuke needs at least one train fold and one test fold")

    frames, excluded = [], []
    for fold, split in sorted(assignment.items()):
        files = pannuke_fold_files(folder, fold)
        images = _load_array(files["images"], mmap=True)
        masks = _load_array(files["masks"], mmap=True)
        organs = np.asarray(_load_array(files["types"], mmap=False)).astype(str)
        if not (len(images) == len(masks) == len(organs)) or images.ndim != 4 or images.shape[3] != 3:
            raise DataError(
                f"PanNuke fold {fold}: images {images.shape}, masks {masks.shape} and types "
                f"{organs.shape} do not describe the same (N, H, W, 3) patches"
            )
        counts = count_nuclei(masks)
        neoplastic, nuclei = counts[:, 0], counts.sum(axis=1)
        malignant = (neoplastic >= min_neoplastic) & (neoplastic > min_neoplastic_fraction * nuclei)
        benign = neoplastic == 0
        images_source = files["images"].relative_to(folder).as_posix()
        ids = [f"fold{fold}/{i:05d}" for i in range(len(images))]
        for i in np.flatnonzero(~(malignant | benign)):
            excluded.append(_exclusion(
                ids[i], f"{images_source}#{i}",
                f"ambiguous: {neoplastic[i]} neoplastic of {nuclei[i]} nuclei (benign needs 0; malignant "
                f">= {min_neoplastic} and > {min_neoplastic_fraction:.0%})",
            ))
        keep = malignant | benign
        frames.append(pd.DataFrame({
            "sample_id": np.asarray(ids)[keep],
            "split": split,
            "label": malignant[keep].astype(int),
            "group": None,
            "source": [f"{images_source}#{i}" for i in np.flatnonzero(keep)],
            "organ": organs[keep],
            "fold": fold,
            "n_neoplastic": neoplastic[keep],
            "n_nuclei": nuclei[keep],
        }))
    table = pd.concat(frames, ignore_index=True)
    table["label"] = table["label"].astype(int).tolist()
    folds_text = ", ".join(f"fold {f} {s}" for f, s in sorted(assignment.items()))
    description = (f"PanNuke ({folds_text}); malignant: >= {min_neoplastic} neoplastic nuclei and > "
                   f"{min_neoplastic_fraction:.0%} of nuclei, benign: none; {len(excluded)} ambiguous "
                   "patches excluded")
    return _finish("pannuke", table, PANNUKE_CLASSES, "binary", folder, description, excluded, max_size,
                   reader=PanNukeReader(folder, max_size))


# ============================================================================ T3: ISIC 2018
ISIC2018_CLASSES = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]


def _isic_labels(table: pd.DataFrame, where: str) -> np.ndarray:
    """Class index per row from the one-hot ground-truth columns (exactly one 1 per row)."""
    values = table[ISIC2018_CLASSES].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    valid = np.isin(values, (0.0, 1.0)).all(axis=1) & (values.sum(axis=1) == 1)
    if not valid.all():
        bad = table.loc[~valid, "image"].head(5).tolist()
        raise DataError(f"{where}: rows must be one-hot over {ISIC2018_CLASSES}; not so for {bad}")
    return values.argmax(axis=1)


def load_isic2018(
    image_dir: str | Path,
    ground_truth_csv: str | Path,
    *,
    metadata_csv: str | Path | None = None,
    val_image_dir: str | Path | None = None,
    val_csv: str | Path | None = None,
    test_image_dir: str | Path | None = None,
    test_csv: str | Path | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    image_suffix: str = ".jpg",
    check_files: bool = True,
    max_size: int = 1024,
) -> Dataset:
    """T3: ISIC 2018 task 3 / HAM10000, 7 diagnoses.

    ``ground_truth_csv``: ``ISIC2018_Task3_Training_GroundTruth.csv`` (``image, MEL, NV, BCC,
    AKIEC, BKL, DF, VASC``, one-hot); images ``<image_dir>/<image><image_suffix>``. The official
    validation and test sets are used when their CSV and folder are given (same CSV format);
    otherwise ``val_fraction`` / ``test_fraction`` of the training images are drawn, by group.
    ``metadata_csv`` (``HAM10000_metadata.csv``: ``lesion_id, image_id, dx, ...``) makes the lesion
    the group, so several photographs of one lesion never span splits; its ``dx`` must agree with
    the ground truth. Without it, every image is its own group.
    """
    _check_fraction(val_fraction, "val_fraction")
    _check_fraction(test_fraction, "test_fraction")
    sources = {"train": (image_dir, ground_truth_csv)}
    for split, folder, csv in (("val", val_image_dir, val_csv), ("test", test_image_dir, test_csv)):
        if (folder is None) != (csv is None):
            raise DataError(f"ISIC 2018 official {split} set: give both {split}_image_dir and {split}_csv")
        if folder is not None:
            sources[split] = (folder, csv)
    folders = {split: _absolute(folder) for split, (folder, _) in sources.items()}
    root = _common_root(*folders.values())

    lesions: dict[str, str] = {}
    diagnoses: dict[str, str] = {}
    if metadata_csv is not None:
        metadata = _read_csv(metadata_csv, "HAM10000 metadata", ["lesion_id", "image_id", "dx"])
        lesions = dict(zip(metadata["image_id"], metadata["lesion_id"]))
        diagnoses = dict(zip(metadata["image_id"], metadata["dx"].str.strip().str.upper()))

    frames, excluded = [], []
    for split, (_, csv) in sources.items():
        table = _read_csv(csv, f"ISIC 2018 {split} ground truth", ["image", *ISIC2018_CLASSES])
        labels = _isic_labels(table, str(csv))
        names = table["image"].str.strip()
        disagree = [(n, diagnoses[n], ISIC2018_CLASSES[k]) for n, k in zip(names, labels)
                    if n in diagnoses and diagnoses[n] != ISIC2018_CLASSES[k]]
        if disagree:
            raise DataError(f"{metadata_csv}: dx disagrees with {csv} for {len(disagree)} image(s), "
                            f"e.g. (image, dx, ground truth) {disagree[:3]}")
        frame = pd.DataFrame({
            "sample_id": names,
            "split": split,
            "label": labels,
            "group": [lesions.get(n) for n in names],
            "source": _locate(folders[split], [n + image_suffix for n in names], root, check_files),
        })
        frames.append(_drop_missing(frame, excluded, folders[split]))
    table = pd.concat(frames, ignore_index=True)

    pool = (table["split"] == "train").to_numpy()
    fractions = {"train": 1.0, "val": 0.0 if "val" in sources else val_fraction,
                 "test": 0.0 if "test" in sources else test_fraction}
    fractions["train"] = 1.0 - fractions["val"] - fractions["test"]
    table.loc[pool, "split"] = _split_pool(
        table.loc[pool, "label"].to_numpy(), table.loc[pool, "group"].to_numpy(), fractions, seed
    )
    table["label"] = table["label"].astype(int).tolist()
    official = [s for s in ("val", "test") if s in sources]
    drawn = ", ".join(f"{s} {f:.0%}" for s, f in fractions.items() if f and s != "train") or "none"
    description = ("ISIC 2018 task 3 (HAM10000), 7 diagnoses; "
                   + (f"official {' and '.join(official)} set(s); " if official else "")
                   + f"drawn from training: {drawn} (seed {seed}); "
                   + f"groups: {'lesion_id' if lesions else 'none'}")
    return _finish("isic2018", table, ISIC2018_CLASSES, "multiclass", root, description, excluded, max_size)


# ======================================================================= T4: SIIM-ISIC 2020
SIIM_CLASSES = ["benign", "malignant"]


def load_siim_isic2020(
    image_dir: str | Path,
    train_csv: str | Path,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    image_suffix: str = ".jpg",
    check_files: bool = True,
    max_size: int = 1024,
) -> Dataset:
    """T4: SIIM-ISIC Melanoma Classification 2020, benign vs malignant.

    ``train_csv``: the challenge's ``train.csv`` (``image_name, patient_id, sex, age_approx,
    anatom_site_general_challenge, diagnosis, benign_malignant, target``); images
    ``<image_dir>/<image_name><image_suffix>`` (``.jpg``; ``.dcm`` for the DICOM release). The
    challenge's test labels were never published, so train/val/test (default 70/10/20) are drawn
    from the training set by ``patient_id``, stratified by ``target``. ``target`` must agree with
    ``benign_malignant``. Kept columns: sex, age_approx, anatom_site_general_challenge, diagnosis.
    """
    _check_fraction(val_fraction, "val_fraction")
    _check_fraction(test_fraction, "test_fraction")
    folder = _absolute(image_dir)
    columns = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge",
               "diagnosis", "benign_malignant", "target"]
    csv = _read_csv(train_csv, "SIIM-ISIC 2020 train CSV", columns)
    names = csv["image_name"].str.strip()
    labels = _integers(csv["target"], (0, 1), f"{train_csv} column target", names)
    stated = csv["benign_malignant"].str.strip().str.lower()
    mismatch = stated != np.asarray(SIIM_CLASSES, dtype=object)[labels]
    if mismatch.any():
        raise DataError(f"{train_csv}: target disagrees with benign_malignant for {names[mismatch][:5].tolist()}")
    table = pd.DataFrame({
        "sample_id": names,
        "split": "train",
        "label": labels,
        "group": csv["patient_id"].str.strip(),
        "source": _locate(folder, [n + image_suffix for n in names], folder, check_files),
        "sex": csv["sex"],
        "age_approx": pd.to_numeric(csv["age_approx"], errors="coerce"),
        "anatom_site_general_challenge": csv["anatom_site_general_challenge"],
        "diagnosis": csv["diagnosis"],
    })
    excluded: list[dict] = []
    table = _drop_missing(table, excluded, folder)
    fractions = {"train": 1 - val_fraction - test_fraction, "val": val_fraction, "test": test_fraction}
    table["split"] = _split_pool(table["label"].to_numpy(), table["group"].to_numpy(), fractions, seed)
    table["label"] = table["label"].astype(int).tolist()
    description = (f"SIIM-ISIC 2020 training set split by patient (train/val/test "
                   f"{fractions['train']:.0%}/{val_fraction:.0%}/{test_fraction:.0%}, seed {seed})")
    return _finish("siim_isic2020", table, SIIM_CLASSES, "binary", folder, description, excluded, max_size)


# ==================================================================== T5: EyePACS -> APTOS
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
    _check_fraction(val_fraction, "val_fraction")
    eyepacs_folder, aptos_folder = _absolute(eyepacs_dir), _absolute(aptos_dir)
    root = _common_root(eyepacs_folder, aptos_folder)
    excluded: list[dict] = []

    eyepacs = _read_csv(eyepacs_csv, "EyePACS label CSV", ["image", "level"])
    names = eyepacs["image"].str.strip()
    parsed = names.str.extract(_EYEPACS_NAME)
    unparsed = parsed["patient"].isna()
    if unparsed.any():
        raise DataError(f"{eyepacs_csv}: image names must look like '<patient>_left' or "
                        f"'<patient>_right'; not so for {names[unparsed][:5].tolist()}")
    train = pd.DataFrame({
        "sample_id": "eyepacs/" + names,
        "split": "train",
        "label": _integers(eyepacs["level"], range(5), f"{eyepacs_csv} column level", names),
        "group": "eyepacs:" + parsed["patient"],
        "source": _locate(eyepacs_folder, (names + ".jpeg").tolist(), root, check_files),
        "cohort": "EyePACS",
        "eye": parsed["eye"],
    })
    train = _drop_missing(train, excluded, eyepacs_folder)
    train["split"] = _split_pool(train["label"].to_numpy(), train["group"].to_numpy(),
                                 {"train": 1 - val_fraction, "val": val_fraction}, seed)

    aptos = _read_csv(aptos_csv, "APTOS-2019 label CSV", ["id_code", "diagnosis"])
    codes = aptos["id_code"].str.strip()
    test = pd.DataFrame({
        "sample_id": "aptos/" + codes,
        "split": "test",
        "label": _integers(aptos["diagnosis"], range(5), f"{aptos_csv} column diagnosis", codes),
        "group": None,
        "source": _locate(aptos_folder, (codes + ".png").tolist(), root, check_files),
        "cohort": "APTOS-2019",
        "eye": None,
    })
    test = _drop_missing(test, excluded, aptos_folder)
    table = pd.concat([train, test], ignore_index=True)
    table["label"] = table["label"].astype(int).tolist()
    description = (f"DR grading: EyePACS train/val (val {val_fraction:.0%} by patient, seed {seed}), "
                   "APTOS-2019 external test")
    return _finish("eyepacs_aptos", table, DR_CLASSES, "multiclass", root, description, excluded, max_size)


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
        return _require_columns(table, ODIR_COLUMNS, f"ODIR annotations {path}")
    return _read_csv(path, "ODIR annotations", ODIR_COLUMNS)


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
    _check_fraction(val_fraction, "val_fraction")
    airogs_folder, odir_folder = _absolute(airogs_dir), _absolute(odir_dir)
    root = _common_root(airogs_folder, odir_folder)
    excluded: list[dict] = []

    airogs = _read_csv(airogs_csv, "AIROGS label CSV", ["challenge_id", "class"])
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
        "source": _locate(airogs_folder, (ids + ".jpg").tolist(), root, check_files),
        "cohort": "AIROGS",
        "keywords": stated,
    })
    train = _drop_missing(train, excluded, airogs_folder)
    train["split"] = _split_pool(train["label"].to_numpy(), None,
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
        excluded.append(_exclusion(f"odir/{file}", "", f"neither glaucoma nor normal fundus: {keywords!r}"))
    eyes_table = eyes_table[labels.notna()]
    test = pd.DataFrame({
        "sample_id": "odir/" + eyes_table["file"],
        "split": "test",
        "label": labels[labels.notna()].astype(int).to_numpy(),
        "group": "odir:" + eyes_table["patient"],
        "source": _locate(odir_folder, eyes_table["file"].tolist(), root, check_files),
        "cohort": "ODIR-2019",
        "keywords": eyes_table["keywords"],
    })
    test = _drop_missing(test, excluded, odir_folder)
    table = pd.concat([train, test], ignore_index=True)
    table["label"] = table["label"].astype(int).tolist()
    description = (f"Glaucoma: AIROGS train/val (val {val_fraction:.0%}, seed {seed}), ODIR-2019 eyes "
                   "with glaucoma or normal fundus as external test")
    return _finish("airogs_odir", table, GLAUCOMA_CLASSES, "binary", root, description, excluded, max_size)


# ============================================================================= T7: PadChest
PADCHEST_COLUMNS = ["ImageID", "ImageDir", "StudyID", "PatientID", "Projection", "MethodLabel", "Labels"]
#: Label terms that mark the whole image as unusable: such images are excluded.
PADCHEST_EXCLUDE_TERMS = ("exclude",)
#: Label terms that are remarks about the study, not findings on the image: dropped from labels.
PADCHEST_IGNORED_TERMS = ("suboptimal study", "unchanged")


def parse_padchest_labels(value: Any) -> list[str] | None:
    """The terms of one ``Labels`` cell, or ``None`` when the cell is empty (NaN).

    Cells are Python list literals such as ``"['pleural effusion', ' cardiomegaly']"``; parsed
    with :func:`ast.literal_eval` (literals only, never code), terms stripped of stray whitespace,
    empty terms (``"['']"``) dropped, duplicates removed (order kept).
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError) as error:
        raise DataError(f"PadChest Labels cell is not a list literal: {text[:80]!r}") from error
    if not isinstance(parsed, (list, tuple)) or not all(isinstance(t, str) for t in parsed):
        raise DataError(f"PadChest Labels cell is not a list of strings: {text[:80]!r}")
    return list(dict.fromkeys(t.strip() for t in parsed if t.strip()))


def padchest_csv_path() -> Path | None:
    """The PadChest label CSV shipped inside the ``torchxrayvision`` wheel, if installed.

    Found through the package metadata, without importing ``torchxrayvision`` (whose import pulls
    torchvision)."""
    from importlib import metadata

    try:
        distribution = metadata.distribution("torchxrayvision")
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(distribution.locate_file(
        "torchxrayvision/data/PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz")))
    return path if path.is_file() else None


def load_padchest(
    image_dir: str | Path,
    labels_csv: str | Path,
    *,
    min_test_positives: int = 50,
    projections: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    ignored_terms: Sequence[str] = PADCHEST_IGNORED_TERMS,
    check_files: bool = True,
    max_size: int = 1024,
) -> Dataset:
    """T7: PadChest chest radiograph findings, multi-label.

    ``labels_csv``: ``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv(.gz)``. Images
    ``<image_dir>/<ImageDir>/<ImageID>`` (as unpacked from the zip parts) or
    ``<image_dir>/<ImageID>``; 16-bit PNGs. How rows become samples, in order:

    1. ``Labels`` parsed by :func:`parse_padchest_labels`; an empty cell (NaN) is excluded.
    2. An image labelled ``exclude`` is excluded (the data set's own flag for unusable images).
    3. ``projections`` (e.g. ``["PA", "AP", "AP_horizontal"]``), if given, keeps only those values
       of ``Projection``.
    4. ``ignored_terms`` (default "suboptimal study", "unchanged": remarks about the study, not
       findings) are removed from the labels; an image left with no term is excluded.
    5. Test = every image with ``MethodLabel == "Physician"`` (labelled by radiologists). Train/val
       = the ``RNN_model`` images (labels extracted from reports) of patients with no test image;
       the automatic images of patients who also have a manual image are excluded, so no patient
       is in two splits and the test set stays exactly the manual one.
    6. Missing image files are excluded (``check_files``).
    7. Classes: findings with more than ``min_test_positives`` positive test images, most frequent
       first; other terms are dropped from the labels (an image may end with no class: negative
       for all). Val: ``val_fraction`` of train by ``PatientID``, stratified over the classes.

    Group: ``PatientID``; extra columns ``study_id``, ``projection``, ``method_label``.
    """
    _check_fraction(val_fraction, "val_fraction")
    folder = _absolute(image_dir)
    csv = _read_csv(labels_csv, "PadChest label CSV", PADCHEST_COLUMNS)
    unknown_methods = sorted(set(csv["MethodLabel"].dropna()) - {"Physician", "RNN_model"})
    if unknown_methods or csv["MethodLabel"].isna().any():
        raise DataError(f"{labels_csv}: MethodLabel must be 'Physician' or 'RNN_model'; "
                        f"found {unknown_methods or ['<empty>']}")
    excluded: list[dict] = []
    image_ids = csv["ImageID"].str.strip()

    parsed_cache: dict[Any, list[str] | None] = {}
    terms = [parsed_cache[v] if v in parsed_cache else parsed_cache.setdefault(v, parse_padchest_labels(v))
             for v in csv["Labels"]]
    ignored = set(ignored_terms)
    wanted = None if projections is None else set(projections)
    keep = np.zeros(len(csv), dtype=bool)
    findings: list[list[str]] = [[] for _ in range(len(csv))]
    for i, (image_id, row_terms, projection) in enumerate(zip(image_ids, terms, csv["Projection"])):
        if row_terms is None:
            reason = "no Labels entry"
        elif any(t in PADCHEST_EXCLUDE_TERMS for t in row_terms):
            reason = "labelled 'exclude' by PadChest"
        elif wanted is not None and projection not in wanted:
            reason = f"projection {projection!r} not in {sorted(wanted)}"
        else:
            findings[i] = [t for t in row_terms if t not in ignored]
            if findings[i]:
                keep[i] = True
                continue
            reason = f"no finding label besides ignored terms {row_terms}"
        excluded.append(_exclusion(image_id, "", reason))

    is_test = (csv["MethodLabel"] == "Physician").to_numpy()
    test_patients = set(csv.loc[keep & is_test, "PatientID"])
    overlap = keep & ~is_test & csv["PatientID"].isin(test_patients).to_numpy()
    for image_id in image_ids[overlap]:
        excluded.append(_exclusion(image_id, "", "automatic labels of a patient whose manual images are in test"))
    keep &= ~overlap

    rows = np.flatnonzero(keep)
    directories = csv["ImageDir"].astype(str).str.strip().to_numpy()[rows]
    names = image_ids.to_numpy()[rows]
    if check_files:
        sources = _locate(folder, list(names), folder, True)
    else:
        nested = {d: (folder / d).is_dir() for d in set(directories)}
        sources = [f"{d}/{n}" if nested[d] else n for d, n in zip(directories, names)]
    table = pd.DataFrame({
        "sample_id": names,
        "split": np.where(is_test[rows], "test", "train").astype(object),
        "group": csv["PatientID"].to_numpy()[rows],
        "source": sources,
        "study_id": csv["StudyID"].to_numpy()[rows],
        "projection": csv["Projection"].to_numpy()[rows],
        "method_label": csv["MethodLabel"].to_numpy()[rows],
        "terms": [findings[i] for i in rows],
    })
    table = _drop_missing(table, excluded, folder)

    test_counts = pd.Series(
        [t for row_terms in table.loc[table["split"] == "test", "terms"] for t in row_terms], dtype=object
    ).value_counts()
    kept = test_counts[test_counts > min_test_positives]
    classes = sorted(kept.index, key=lambda t: (-kept[t], t))
    if not classes:
        raise DataError(f"{labels_csv}: no finding has more than {min_test_positives} positive test images")
    position = {term: k for k, term in enumerate(classes)}
    table["label"] = [tuple(sorted(position[t] for t in row_terms if t in position)) for row_terms in table["terms"]]
    table = table.drop(columns="terms")

    pool = (table["split"] == "train").to_numpy()
    if pool.any() and val_fraction > 0:
        matrix = np.zeros((int(pool.sum()), len(classes)), dtype=np.int8)
        for r, label in enumerate(table.loc[pool, "label"]):
            matrix[r, list(label)] = 1
        table.loc[pool, "split"] = group_stratified_split(
            matrix, table.loc[pool, "group"].to_numpy(),
            {"train": 1 - val_fraction, "val": val_fraction}, seed,
        )
    description = (f"PadChest: {len(classes)} findings with > {min_test_positives} positives among the "
                   f"manually labelled test images; train/val from automatically labelled images of other "
                   f"patients (val {val_fraction:.0%} by patient, seed {seed})"
                   + (f"; projections {sorted(wanted)}" if wanted else ""))
    return _finish("padchest", table, classes, "multilabel", folder, description, excluded, max_size)


# ========================================================================== T8: knee KL grade
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
    _check_fraction(val_fraction, "val_fraction")
    _check_fraction(test_fraction, "test_fraction")
    folder = _absolute(root)
    csv = _read_csv(csv_path, "knee KL CSV", ["path", "kl_grade", "patient_id", "cohort"])
    csv["path"] = csv["path"].str.strip()
    csv["cohort"] = csv["cohort"].str.strip()
    excluded: list[dict] = []
    ungraded = csv["kl_grade"].isna() | (csv["kl_grade"].str.strip() == "")
    for path in csv.loc[ungraded, "path"]:
        excluded.append(_exclusion(path, path, "no KL grade"))
    csv = csv[~ungraded].reset_index(drop=True)
    sources: list[str | None] = []
    for path in csv["path"]:
        file = Path(path) if Path(path).is_absolute() else folder / path
        sources.append(path if not check_files or file.is_file() else None)
    table = pd.DataFrame({
        "sample_id": csv["path"],
        "split": "train",
        "label": _integers(csv["kl_grade"], range(5), f"{csv_path} column kl_grade", csv["path"]),
        "group": csv["cohort"] + ":" + csv["patient_id"].str.strip(),
        "source": sources,
        "cohort": csv["cohort"],
    })
    table = _drop_missing(table, excluded, folder)
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
    table.loc[pool, "split"] = _split_pool(
        table.loc[pool, "label"].to_numpy(), table.loc[pool, "group"].to_numpy(), fractions, seed
    )
    table["label"] = table["label"].astype(int).tolist()
    description = ("Knee KL grade: " + (f"test cohort {test_cohort}, " if test_cohort else "")
                   + ", ".join(f"{s} {f:.0%}" for s, f in fractions.items())
                   + f" of {'the other cohorts' if test_cohort else 'all images'} by patient (seed {seed})")
    return _finish("knee_kl", table, KL_CLASSES, "multiclass", folder, description, excluded, max_size)


# ================================================================================== registry
PROMPT_TEMPLATE = "What can you see on this {domain} image?"


@dataclass(frozen=True)
class PaperTask:
    """One of the study's tasks: how to load it and what the study used with it."""

    task_id: str
    adapter_name: str
    loader: Callable[..., Dataset]
    title: str
    discipline: str
    #: the adjective in the study's prompt template
    domain: str
    #: the prompt given with each image to vision-language backbones
    prompt: str
    #: headline metric, as the run file's ``task_metric`` spells it
    metric: str
    task_type: TaskType


def _task(task_id: str, adapter_name: str, loader: Callable[..., Dataset], title: str, discipline: str,
          domain: str, metric: str, task_type: TaskType) -> PaperTask:
    return PaperTask(task_id, adapter_name, loader, title, discipline, domain,
                     PROMPT_TEMPLATE.format(domain=domain), metric, task_type)


#: The study's eight tasks: F1 for the two pathology tasks, AUC for the others.
PAPER_TASKS: dict[str, PaperTask] = {
    task.task_id: task
    for task in (
        _task("t1", "kather", load_kather, "Colorectal tissue classes (Kather)", "pathology",
              "histological", "f1_macro", "multiclass"),
        _task("t2", "pannuke", load_pannuke, "Benign vs malignant nuclei patches (PanNuke)", "pathology",
              "histological", "f1_macro", "binary"),
        _task("t3", "isic2018", load_isic2018, "Skin lesion diagnosis (ISIC 2018 / HAM10000)", "dermatology",
              "dermatological", "auc", "multiclass"),
        _task("t4", "siim_isic2020", load_siim_isic2020, "Melanoma detection (SIIM-ISIC 2020)", "dermatology",
              "dermatological", "auc", "binary"),
        _task("t5", "eyepacs_aptos", load_eyepacs_aptos, "Diabetic retinopathy grade (EyePACS -> APTOS)",
              "ophthalmology", "ophthalmological", "auc", "multiclass"),
        _task("t6", "airogs_odir", load_airogs_odir, "Referable glaucoma (AIROGS -> ODIR)", "ophthalmology",
              "ophthalmological", "auc", "binary"),
        _task("t7", "padchest", load_padchest, "Chest radiograph findings (PadChest)", "radiology",
              "radiological", "auc", "multilabel"),
        _task("t8", "knee_kl", load_knee_kl, "Knee osteoarthritis KL grade (OAI / MOST)", "radiology",
              "radiological", "auc", "multiclass"),
    )
}
