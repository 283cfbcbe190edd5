"""MedMNIST (v2 / MedMNIST+) ``.npz`` files with their official train/val/test splits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from medprobe.data.dataset import SPLITS, Dataset, task_type_for
from medprobe.data.download import download_file
from medprobe.data.images import preprocessing_fingerprint
from medprobe.data.medmnist_files import MEDMNIST_MD5, MEDMNIST_SIZES, medmnist_file
from medprobe.data.readers import ArrayImageReader
from medprobe.data.root import DATA_DIR_ENV, DEFAULT_DATA_DIR, resolve_data_root
from medprobe.data.splits import stratified_subsample
from medprobe.errors import ConfigError, DataError


@dataclass(frozen=True)
class MedMNISTInfo:
    """What medprobe needs of one MedMNIST subset: its class name in the ``medmnist`` package and label names."""

    python_class: str
    classes: tuple[str, ...]


_ORGAN_CLASSES = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right",
                  "liver", "lung-left", "lung-right", "pancreas", "spleen")

#: Class names as in MedMNIST v2's ``INFO`` table (label index -> name).
MEDMNIST: dict[str, MedMNISTInfo] = {
    "pathmnist": MedMNISTInfo("PathMNIST", (
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
        "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium")),
    "chestmnist": MedMNISTInfo("ChestMNIST", (
        "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
        "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia")),
    "dermamnist": MedMNISTInfo("DermaMNIST", (
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
        "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
        "vascular lesions")),
    "octmnist": MedMNISTInfo("OCTMNIST", (
        "choroidal neovascularization", "diabetic macular edema", "drusen", "normal")),
    "pneumoniamnist": MedMNISTInfo("PneumoniaMNIST", ("normal", "pneumonia")),
    "retinamnist": MedMNISTInfo("RetinaMNIST", ("0", "1", "2", "3", "4")),
    "breastmnist": MedMNISTInfo("BreastMNIST", ("malignant", "normal, benign")),
    "bloodmnist": MedMNISTInfo("BloodMNIST", (
        "basophil", "eosinophil", "erythroblast",
        "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte",
        "monocyte", "neutrophil", "platelet")),
    "tissuemnist": MedMNISTInfo("TissueMNIST", (
        "Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule",
        "Glomerular endothelial cells", "Interstitial endothelial cells", "Leukocytes", "Podocytes",
        "Proximal Tubule Segments", "Thick Ascending Limb")),
    "organamnist": MedMNISTInfo("OrganAMNIST", _ORGAN_CLASSES),
    "organcmnist": MedMNISTInfo("OrganCMNIST", _ORGAN_CLASSES),
    "organsmnist": MedMNISTInfo("OrganSMNIST", _ORGAN_CLASSES),
}


def _medmnist_candidates(path: str | Path | None, file_name: str) -> list[Path]:
    location = resolve_data_root(path)
    if location.suffix == ".npz":
        return [location]
    return [location / "medmnist" / file_name, location / file_name]


def _medmnist_missing(flag: str, size: int | None, candidates: list[Path]) -> DataError:
    folder = candidates[0].parent
    name, url, md5 = medmnist_file(flag, size)
    looked = "\n".join(f"  {c}" for c in candidates)
    if md5 is not None:
        fetch = (f"Set `download: true` in the run file's data.options to fetch it (MD5 checked; "
                 f"`medprobe demo` does), or download\n  {url}\ninto {folder}/")
    else:
        fetch = (f"No published file is known for flag {flag!r} at size {size or 28} (flags: "
                 f"{', '.join(MEDMNIST_MD5)}; sizes {', '.join(map(str, MEDMNIST_SIZES))}); put {name} into {folder}/")
    return DataError(
        f"MedMNIST file for {flag!r} not found. Looked for:\n{looked}\n"
        f"The data root is the run file's `data.root`, else ${DATA_DIR_ENV}, else {DEFAULT_DATA_DIR}.\n{fetch}"
    )


def _fetch_medmnist(flag: str, size: int | None, candidates: list[Path]) -> Path:
    """Download the official file for ``flag`` / ``size`` to ``candidates[0]`` (the data root's
    ``medmnist/`` folder), checksum verified; an unpublished flag or size is the usual error."""
    _, url, md5 = medmnist_file(flag, size)
    if md5 is None:
        raise _medmnist_missing(flag, size, candidates)
    return download_file(url, candidates[0], md5)


def load_medmnist(
    path: str | Path | None = None,
    flag: str = "pneumoniamnist",
    *,
    size: int | None = None,
    classes: Sequence[str] | None = None,
    max_train: int | None = None,
    seed: int = 0,
    max_size: int = 1024,
    download: bool = False,
) -> Dataset:
    """A MedMNIST (v2 / MedMNIST+) ``.npz`` file with its official train/val/test splits.

    ``path`` is the ``.npz`` file or a data root holding ``medmnist/<flag>.npz`` or
    ``<flag>.npz`` (``<flag>_<size>.npz`` for the 64/128/224-pixel versions); default
    :func:`resolve_data_root`. ``classes`` overrides the built-in names (unknown flags get
    ``"0"``, ``"1"``, ...). ``max_train`` keeps a stratified, seeded subsample of the train split
    (val and test stay whole). Arrays are loaded once and held in memory (``.npz`` members cannot
    be memory-mapped). Sample ids look like ``pneumoniamnist/test/00012``; there are no patient
    ids, so groups are empty.

    ``download``: when the file is missing, fetch the official one (URL and MD5 as the ``medmnist``
    package publishes them, :mod:`medprobe.data.medmnist_files`) into ``<data root>/medmnist/``,
    checksum verified, with a progress bar; never with ``$MEDPROBE_OFFLINE`` set. An existing file
    is used as it is (a copy of your own need not match the published checksum).
    """
    flag = flag.lower()
    stem = flag if size in (None, 28) else f"{flag}_{size}"
    candidates = _medmnist_candidates(path, f"{stem}.npz")
    file = next((c for c in candidates if c.is_file()), None)
    if file is None:
        if not download:
            raise _medmnist_missing(flag, size, candidates)
        file = _fetch_medmnist(flag, size, candidates)
    arrays, labels = _read_medmnist_npz(file)

    multilabel = labels["test"].shape[1] > 1
    n_classes = labels["test"].shape[1] if multilabel else int(max(lab.max(initial=0) for lab in labels.values())) + 1
    if classes is not None:
        names = [str(c) for c in classes]
    elif flag in MEDMNIST:
        names = list(MEDMNIST[flag].classes)
    else:
        names = [str(i) for i in range(n_classes)]
    if (multilabel and len(names) != n_classes) or n_classes > len(names):
        raise DataError(f"{file}: labels need {n_classes} classes but {len(names)} names were given: {names}")

    width = max(5, len(str(max(len(a) for a in arrays.values()) - 1)))
    rows: list[dict[str, Any]] = []
    positions: dict[str, tuple[str, int]] = {}
    notes = []
    for split in SPLITS:
        split_labels = labels[split][:, 0] if not multilabel else labels[split]
        keep = np.arange(len(split_labels))
        if split == "train" and max_train is not None:
            if max_train < 1:
                raise ConfigError(f"max_train must be a positive number of images, got {max_train}")
            keep = stratified_subsample(split_labels, max_train, seed)
            if len(keep) < len(split_labels):
                notes.append(f"train subsampled to {len(keep)} of {len(split_labels)} images "
                             f"(stratified, seed {seed})")
        for i in keep:
            sample_id = f"{stem}/{split}/{i:0{width}d}"
            label = tuple(int(k) for k in np.flatnonzero(split_labels[i])) if multilabel else int(split_labels[i])
            rows.append({"sample_id": sample_id, "split": split, "label": label, "group": None,
                         "source": f"{file.name}:{split}_images[{i}]"})
            positions[sample_id] = (split, int(i))
    description = f"MedMNIST {stem} ({file}), official train/val/test splits"
    return Dataset(
        name=stem,
        samples=pd.DataFrame(rows, columns=["sample_id", "split", "label", "group", "source"]),
        classes=names,
        task_type=task_type_for(len(names), multilabel, str(file)),
        read_image=ArrayImageReader(arrays, positions, max_size),
        root=file.parent,
        description="; ".join([description, *notes]),
        preprocessing=preprocessing_fingerprint(max_size),
    )


def _read_medmnist_npz(file: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Images and ``(n, K)`` integer labels per split, checked for consistency."""
    try:
        with np.load(file, allow_pickle=False) as archive:
            missing = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")
                       if f"{s}_{kind}" not in archive.files]
            if missing:
                raise DataError(f"{file}: not a MedMNIST file; arrays {missing} missing "
                                f"(it has {sorted(archive.files)})")
            arrays = {s: archive[f"{s}_images"] for s in SPLITS}
            labels = {s: archive[f"{s}_labels"] for s in SPLITS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{file}: cannot read the .npz archive ({error}); re-download it") from error
    for split in SPLITS:
        images, split_labels = arrays[split], labels[split]
        if split_labels.ndim == 1:
            split_labels = split_labels[:, None]
        if images.ndim not in (3, 4) or len(images) != len(split_labels):
            raise DataError(f"{file}: {split}_images has shape {images.shape} but {split}_labels has "
                            f"shape {labels[split].shape}; expected (n, H, W[, 3]) and (n, K)")
        if not np.issubdtype(split_labels.dtype, np.integer) or split_labels.min(initial=0) < 0:
            raise DataError(f"{file}: {split}_labels must be non-negative integers")
        labels[split] = split_labels.astype(np.int64)
    widths = {split_labels.shape[1] for split_labels in labels.values()}
    if len(widths) != 1:
        raise DataError(f"{file}: label arrays differ in width between splits: {sorted(widths)}")
    return arrays, labels
