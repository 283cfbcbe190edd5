"""Pathology tasks: T1 Kather colorectal tissue classes, T2 PanNuke benign vs malignant patches."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from medprobe.data.dataset import Dataset
from medprobe.data.images import looks_like_image, preprocess, read_image
from medprobe.errors import DataError, ImageReadError
from medprobe.data.paper.sample_table import (
    absolute,
    check_fraction,
    common_root,
    exclusion,
    finish,
    folder_prefix,
    selected,
    split_pool,
)

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
    prefix = folder_prefix(folder, root)
    rows = []
    for index, name in enumerate(classes):
        for entry in sorted(os.scandir(folder / name), key=lambda e: e.name):
            if not entry.is_file() or entry.name.startswith("."):
                continue
            source = f"{prefix}{name}/{entry.name}"
            if looks_like_image(entry.path):
                rows.append((source, index))
            else:
                excluded.append(exclusion(source, source, "not an image file"))
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
    train_folder, test_folder = absolute(train_dir), absolute(test_dir)
    if train_folder == test_folder:
        raise DataError(f"Kather train and test folders are the same: {train_folder}")
    check_fraction(val_fraction, "val_fraction")
    root = common_root(train_folder, test_folder)
    excluded: list[dict] = []
    train = _scan_class_folders(train_folder, KATHER_CLASSES, root, excluded)
    test = _scan_class_folders(test_folder, KATHER_CLASSES, root, excluded)
    if not train or not test:
        raise DataError(f"no images found under {train_folder if not train else test_folder}")
    train_labels = np.array([label for _, label in train])
    train_splits = split_pool(train_labels, None, {"train": 1 - val_fraction, "val": val_fraction}, seed)
    table = pd.DataFrame({
        "source": [s for s, _ in train] + [s for s, _ in test],
        "label": np.concatenate([train_labels, [label for _, label in test]]).astype(int).tolist(),
        "split": list(train_splits) + ["test"] * len(test),
    })
    table["sample_id"] = table["source"]
    table["group"] = None
    description = (f"Kather colorectal tissue: train/val {train_folder.name} "
                   f"(val {val_fraction:.0%}, seed {seed}), test {test_folder.name}")
    return finish("kather", table, KATHER_CLASSES, "multiclass", root, description, excluded, max_size)


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
    folds: Sequence[int] = (1, 2, 3),
    test_fraction: float | None = 0.2,
    test_folds: Sequence[int] = (),
    val_fraction: float = 0.1,
    min_neoplastic: int = 10,
    min_neoplastic_fraction: float = 0.3,
    seed: int = 0,
    max_size: int = 1024,
) -> Dataset:
    """T2: PanNuke 256x256 patches, benign vs malignant by their nuclei, as the study ran it.

    Layouts: see :func:`pannuke_fold_files`. ``masks.npy`` is ``(N, 256, 256, 6)``, channels
    Neoplastic, Inflammatory, Connective/Soft tissue, Dead, Epithelial, Background; the first five
    hold instance ids. Per patch (nuclei counted by :func:`count_nuclei`), the study's rule:

    * malignant: *more than* ``min_neoplastic`` (10) neoplastic nuclei, and neoplastic nuclei
      more than ``min_neoplastic_fraction`` (30 %) of all nuclei; a patch with exactly 10 is not;
    * benign: no neoplastic nucleus (patches without any nucleus included);
    * anything else is ambiguous and goes to ``Dataset.excluded`` with its counts.

    Split: the study reports 4,971 train / 1,263 test patches (6,234 kept, about 80/20) but does
    not publish which; PanNuke publishes three folds and no slide or patient ids. So by default
    the kept patches of ``folds`` are pooled and ``test_fraction`` (0.2) of them drawn as test,
    stratified by label and tissue type, seeded by ``seed`` (patches of one slide may then sit on
    both sides, as they may have in the study). ``test_fraction=None`` with ``test_folds`` (e.g.
    ``[3]``) uses whole published folds as test instead. Val: ``val_fraction`` of the training
    patches, stratified the same way. The tissue type from ``types.npy`` is kept in the ``organ``
    column, with ``fold``, ``n_neoplastic`` and ``n_nuclei``. Sample ids: ``fold<k>/<index>``.
    """
    folder = absolute(root)
    check_fraction(val_fraction, "val_fraction")
    folds = [int(f) for f in folds]
    test_folds = [int(f) for f in test_folds]
    if (test_fraction is None) == (not test_folds):
        raise DataError("PanNuke: give either test_fraction (a seeded draw from the pooled folds) or "
                        "test_folds (whole folds as test, with test_fraction: null), not both or neither")
    if test_fraction is not None and not 0 < test_fraction < 1:
        raise DataError(f"PanNuke test_fraction must be in (0, 1), got {test_fraction}")
    unknown = sorted(set(test_folds) - set(folds))
    if unknown or len(set(folds)) != len(folds) or not folds:
        raise DataError(f"PanNuke: folds {folds} must be distinct and include the test folds {test_folds}")

    frames, excluded = [], []
    for fold in folds:
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
        malignant = (neoplastic > min_neoplastic) & (neoplastic > min_neoplastic_fraction * nuclei)
        benign = neoplastic == 0
        images_source = files["images"].relative_to(folder).as_posix()
        ids = [f"fold{fold}/{i:05d}" for i in range(len(images))]
        for i in np.flatnonzero(~(malignant | benign)):
            excluded.append(exclusion(
                ids[i], f"{images_source}#{i}",
                f"ambiguous: some neoplastic nuclei, but not > {min_neoplastic} and > "
                f"{min_neoplastic_fraction:.0%} of all", n_neoplastic=int(neoplastic[i]), n_nuclei=int(nuclei[i]),
            ))
        keep = malignant | benign
        frames.append(pd.DataFrame({
            "sample_id": np.asarray(ids)[keep],
            "split": "test" if fold in test_folds else "train",
            "label": malignant[keep].astype(int),
            "group": None,
            "source": [f"{images_source}#{i}" for i in np.flatnonzero(keep)],
            "organ": organs[keep],
            "fold": fold,
            "n_neoplastic": neoplastic[keep],
            "n_nuclei": nuclei[keep],
        }))
    table = pd.concat(frames, ignore_index=True)
    strata = (table["label"].astype(str) + "/" + table["organ"]).to_numpy()
    if test_fraction is not None:
        table["split"] = split_pool(strata, None, {"train": 1 - test_fraction, "test": test_fraction}, seed)
    pool = (table["split"] == "train").to_numpy()
    if val_fraction > 0:
        table.loc[pool, "split"] = split_pool(strata[pool], None, {"train": 1 - val_fraction, "val": val_fraction},
                                              seed)
    table["label"] = table["label"].astype(int).tolist()
    test_text = (f"test {test_fraction:.0%} drawn from folds {folds} (stratified by label and tissue, seed {seed})"
                 if test_fraction is not None else f"test folds {test_folds}")
    description = (f"PanNuke: {test_text}, val {val_fraction:.0%} of train; malignant: > {min_neoplastic} "
                   f"neoplastic nuclei and > {min_neoplastic_fraction:.0%} of nuclei, benign: none; "
                   f"{len(excluded)} ambiguous patches excluded")
    n_patches = len(table) + len(excluded)
    selection = [selected(f"malignant: > {min_neoplastic} neoplastic nuclei and > {min_neoplastic_fraction:.0%} "
                          "of nuclei", int(table["label"].sum()), n_patches),
                 selected("benign: no neoplastic nucleus", int(len(table) - table["label"].sum()), n_patches)]
    return finish("pannuke", table, PANNUKE_CLASSES, "binary", folder, description, excluded, max_size,
                  reader=PanNukeReader(folder, max_size), selection=selection)
