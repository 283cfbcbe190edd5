"""Generic data-set adapters: MedMNIST ``.npz`` files, class-per-folder trees, CSV/Parquet manifests.

Each adapter returns a :class:`~medprobe.data.dataset.Dataset`; images are only read when
features are extracted, never while the table is built. The class-per-folder adapter lives here;
MedMNIST in :mod:`medprobe.data.medmnist`, manifests in :mod:`medprobe.data.manifest`, and what
they share in :mod:`medprobe.data.root` (the data root), :mod:`medprobe.data.splits`
(:func:`assign_splits`) and :mod:`medprobe.data.readers` (image readers). All of them are
importable from here, where :mod:`medprobe.data.loaders` finds the adapters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from medprobe.data.dataset import Dataset, task_type_for
from medprobe.data.images import looks_like_image, preprocessing_fingerprint
from medprobe.data.manifest import MISSING_LABEL_TEXTS, load_manifest
from medprobe.data.medmnist import MEDMNIST, MedMNISTInfo, load_medmnist
from medprobe.data.medmnist_files import MEDMNIST_URL
from medprobe.data.readers import ArrayImageReader, FileImageReader
from medprobe.data.root import DATA_DIR_ENV, DEFAULT_DATA_DIR, resolve_data_root
from medprobe.data.splits import CARVED_SPLITS_OPTION, DEFAULT_TRAIN_VAL_TEST, SPLIT_ALIASES, assign_splits
from medprobe.errors import DataError


# ------------------------------------------------------------------------------ image folder
def _scan_images(folder: Path, root: Path, excluded: list[dict]) -> list[Path]:
    """Image files anywhere under ``folder`` (sorted); others are noted in ``excluded``."""
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue  # hidden files and folders (.DS_Store, .ipynb_checkpoints) are never data
        if path.is_dir():
            continue
        if looks_like_image(path):
            found.append(path)
        else:
            excluded.append({"source": relative.as_posix(), "reason": "not an image file; ignored"})
    return found


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_image_folder(
    root: str | Path,
    *,
    classes: Sequence[str] | None = None,
    fractions: Sequence[float] = DEFAULT_TRAIN_VAL_TEST,
    seed: int = 0,
    max_size: int = 1024,
    name: str | None = None,
) -> Dataset:
    """One folder per class, optionally inside split folders.

    * ``root/train/<class>/...``, ``root/val/<class>/...``, ``root/test/<class>/...`` (also
      ``valid``/``validation``/``testing``...): those splits are used as given; a missing ``val``
      is carved from train later by the experiment. A class folder under ``val``/``test`` with
      no folder of that name under ``train`` is an error (usually a misspelt folder).
    * ``root/<class>/...``: splits are carved with :func:`assign_splits` (stratified, seeded,
      ``fractions`` train/val/test).

    Images may sit anywhere below a class folder. Files that are not images are ignored and listed
    in ``Dataset.excluded``; hidden files are skipped. Classes are the folder names sorted
    alphabetically unless ``classes`` gives the order. There are no patient ids: if several images
    come from one patient, write a manifest with a ``patient_id`` column instead.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder")
    excluded: list[dict] = []
    top = _subfolders(root)
    split_dirs = [d for d in top if d.name.lower() in SPLIT_ALIASES]
    if split_dirs:
        others = [d.name for d in top if d not in split_dirs]
        if others:
            raise DataError(f"{root}: has split folders {[d.name for d in split_dirs]} and other folders "
                            f"{others}; put every class folder inside a split folder")
        by_split: dict[str, Path] = {}
        for folder in split_dirs:
            split = SPLIT_ALIASES[folder.name.lower()]
            if split in by_split:
                raise DataError(f"{root}: both {by_split[split].name!r} and {folder.name!r} are {split!r} folders")
            by_split[split] = folder
        layout = [(split, class_dir) for split, folder in by_split.items() for class_dir in _subfolders(folder)]
        for folder in by_split.values():
            for loose in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
                excluded.append({"source": loose.relative_to(root).as_posix(),
                                 "reason": "file outside a class folder; ignored"})
    else:
        layout = [(None, class_dir) for class_dir in top]
    for loose in sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")):
        excluded.append({"source": loose.name, "reason": "file outside a class folder; ignored"})
    if not layout:
        raise DataError(f"{root}: no class folders found (expected {root}/<class>/<image files>)")

    folder_classes = sorted({class_dir.name for _, class_dir in layout})
    if split_dirs:
        in_train = {class_dir.name for split, class_dir in layout if split == "train"}
        untrained = {class_dir.relative_to(root).as_posix() for split, class_dir in layout
                     if split != "train" and class_dir.name not in in_train}
        if untrained:
            raise DataError(f"{root}: class folder(s) {sorted(untrained)} have no counterpart under the train "
                            "folder; a probe cannot learn a class it never sees in training (check the "
                            "folder name's spelling, or add its training images)")
    if classes is None:
        names = folder_classes
    else:
        names = [str(c) for c in classes]
        unknown = sorted(set(folder_classes) - set(names))
        absent = [c for c in names if c not in folder_classes]
        if unknown or absent:
            raise DataError(f"{root}: class folders {folder_classes} do not match classes={names}"
                            + (f"; unexpected folders {unknown}" if unknown else "")
                            + (f"; no folder for {absent}" if absent else ""))
    rows = []
    for split, class_dir in layout:
        images = _scan_images(class_dir, root, excluded)
        if not images:
            raise DataError(f"class folder {class_dir} contains no image files "
                            f"(recognised: by suffix, or DICOM without one)")
        label = names.index(class_dir.name)
        for path in images:
            relative = path.relative_to(root).as_posix()
            rows.append({"sample_id": relative, "split": split, "label": label, "group": None,
                         "source": relative})
    table = pd.DataFrame(rows, columns=["sample_id", "split", "label", "group", "source"])
    description = f"image folder {root}"
    validation_option = ""
    if not split_dirs:
        validation_option = CARVED_SPLITS_OPTION
        table["split"] = assign_splits(table["label"].to_numpy(), None, fractions, seed)
        description += f"; splits carved {tuple(fractions)} (stratified, seed {seed})"
    return Dataset(
        name=name or root.name,
        samples=table,
        classes=names,
        task_type=task_type_for(len(names), False, str(root)),
        read_image=FileImageReader(root.resolve(), max_size),
        root=root,
        description=description,
        excluded=excluded,
        preprocessing=preprocessing_fingerprint(max_size),
        validation_option=validation_option,
    )


__all__ = [
    "ArrayImageReader",
    "DATA_DIR_ENV",
    "DEFAULT_DATA_DIR",
    "DEFAULT_TRAIN_VAL_TEST",
    "FileImageReader",
    "MEDMNIST",
    "MEDMNIST_URL",
    "MISSING_LABEL_TEXTS",
    "MedMNISTInfo",
    "SPLIT_ALIASES",
    "assign_splits",
    "load_image_folder",
    "load_manifest",
    "load_medmnist",
    "resolve_data_root",
]
