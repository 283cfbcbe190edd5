"""Generic data-set adapters: MedMNIST ``.npz`` files, class-per-folder trees, CSV/Parquet manifests.

Each adapter returns a :class:`~medprobe.data.dataset.Dataset` whose reader returns
``preprocess(read_image(...))`` and attaches the sample id to any :class:`ImageReadError`, so the
feature extractor can report (or skip) exactly the sample that failed. Images are only read when
features are extracted, never while the table is built.

:func:`assign_splits` carves splits when a source has none of its own: it takes train/val/test
fractions as a 3-tuple and delegates to :func:`medprobe.data.splits.group_stratified_split`, the
project's one split rule (groups stay whole, each split gets its fraction of every class).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from medprobe.data.dataset import SPLITS, Dataset, TaskType
from medprobe.data.images import looks_like_image, preprocess, preprocessing_fingerprint, read_image
from medprobe.data.splits import group_stratified_split
from medprobe.errors import ConfigError, DataError, ImageReadError

DATA_DIR_ENV = "MEDPROBE_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/medprobe/data")
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)

# Folder / manifest spellings of the three split names.
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "dev": "val", "test": "test", "testing": "test"}


def resolve_data_root(explicit: str | Path | None = None) -> Path:
    """The data root: ``explicit`` (the run file's ``data.root``), else ``$MEDPROBE_DATA_DIR``,
    else ``~/.cache/medprobe/data``. Not created: adapters say what is missing and where."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_DIR.expanduser()


# ----------------------------------------------------------------------------------- splits
def assign_splits(
    labels: Sequence[Any] | np.ndarray,
    groups: Sequence[Any] | np.ndarray | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> np.ndarray:
    """Split names (``"train"``/``"val"``/``"test"``) per sample: group-aware and stratified.

    ``labels``: ``(n,)`` class labels (any hashable values) or an ``(n, K)`` 0/1 multi-label
    matrix. ``groups``: ``(n,)`` patient ids, or ``None``; a missing id (None/NaN) makes that sample
    its own group. ``fractions``: train/val/test shares summing to 1 (a 0 share leaves that split
    empty).

    A thin adapter over :func:`medprobe.data.splits.group_stratified_split`, so data sets split
    here and splits carved anywhere else follow one rule. Only the non-zero shares are passed on,
    because that rule gives every split it is asked for at least one group; a 0 share thus leaves
    its split empty. A data set with fewer groups than splits still loads (some splits stay
    empty) so that tiny sets can be inspected; the stage that needs a missing split says so.
    Deterministic for a seed.
    """
    shares = np.asarray(fractions, dtype=np.float64)
    if shares.shape != (3,) or (shares < 0).any() or not np.isclose(shares.sum(), 1.0):
        raise ConfigError(f"split fractions must be three non-negative numbers (train, val, test) "
                          f"summing to 1, got {fractions!r}")
    if len(labels) == 0:
        raise DataError("cannot split an empty set of samples")
    wanted = {name: float(share) for name, share in zip(SPLITS, shares) if share > 0}
    return group_stratified_split(labels, groups, wanted, seed, allow_empty=True)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _stratified_subsample(labels: np.ndarray, n_keep: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n_keep`` samples with the class proportions of ``labels``.

    Quotas by largest remainder, at least one per class where possible; multi-label ``(n, K)``
    labels are subsampled uniformly (their label combinations are too many to stratify).
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    if n_keep >= n:
        return np.arange(n)
    if labels.ndim == 2:
        return np.sort(rng.choice(n, size=n_keep, replace=False))
    classes, codes = np.unique(labels, return_inverse=True)
    counts = np.bincount(codes)
    exact = n_keep * counts / n
    quotas = np.floor(exact).astype(np.int64)
    leftover = n_keep - quotas.sum()
    quotas[np.argsort(-(exact - quotas), kind="stable")[:leftover]] += 1
    for c in np.flatnonzero(quotas == 0):
        if n_keep >= len(classes):
            quotas[c] = 1
            quotas[np.argmax(quotas)] -= 1
    chosen = [rng.choice(np.flatnonzero(codes == c), size=q, replace=False) for c, q in enumerate(quotas)]
    return np.sort(np.concatenate(chosen))


def _task_type(n_classes: int, multilabel: bool, where: str) -> TaskType:
    if multilabel:
        return "multilabel"
    if n_classes < 2:
        raise DataError(f"{where}: found {n_classes} class(es); a classification task needs at least 2")
    return "binary" if n_classes == 2 else "multiclass"


# ---------------------------------------------------------------------------------- readers
@dataclass(frozen=True)
class FileImageReader:
    """Reads ``row['source']`` (relative to ``root`` unless absolute) and preprocesses it.

    A class rather than a closure so datasets stay picklable for multi-process extraction.
    """

    root: Path
    max_size: int

    def __call__(self, row: pd.Series) -> np.ndarray:
        source = Path(str(row["source"]))
        path = source if source.is_absolute() else self.root / source
        try:
            return preprocess(read_image(path), self.max_size)
        except ImageReadError as error:
            error.sample_id = str(row["sample_id"])
            raise


@dataclass(frozen=True, eq=False)
class ArrayImageReader:
    """Reads images held in memory: ``arrays[split][index]`` for the row's sample id."""

    arrays: dict[str, np.ndarray] = field(repr=False)
    positions: dict[str, tuple[str, int]] = field(repr=False)
    max_size: int

    def __call__(self, row: pd.Series) -> np.ndarray:
        sample_id = str(row["sample_id"])
        split, index = self.positions[sample_id]
        try:
            return preprocess(read_image(self.arrays[split][index]), self.max_size)
        except ImageReadError as error:
            error.sample_id = sample_id
            error.path = str(row["source"])
            raise


# --------------------------------------------------------------------------------- MedMNIST
@dataclass(frozen=True)
class MedMNISTInfo:
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
MEDMNIST_URL = "https://zenodo.org/records/10519652/files/{file}"


def _medmnist_candidates(path: str | Path | None, file_name: str) -> list[Path]:
    location = resolve_data_root(path)
    if location.suffix == ".npz":
        return [location]
    return [location / "medmnist" / file_name, location / file_name]


def _medmnist_missing(flag: str, size: int | None, candidates: list[Path]) -> DataError:
    folder = candidates[0].parent
    file_name = candidates[0].name
    info = MEDMNIST.get(flag)
    size_arg = f", size={size}" if size not in (None, 28) else ""
    fetch = (
        f"  pip install medmnist && python -c \"import medmnist; medmnist.{info.python_class}"
        f"(split='test', download=True, root='{folder}'{size_arg})\"\n  or download "
        if info else "  download "
    )
    looked = "\n".join(f"  {c}" for c in candidates)
    return DataError(
        f"MedMNIST file for {flag!r} not found. Looked for:\n{looked}\n"
        f"The data root is the run file's `data.root`, else ${DATA_DIR_ENV}, else {DEFAULT_DATA_DIR}.\n"
        f"To get it (needs internet):\n{fetch}{MEDMNIST_URL.format(file=file_name)} into {folder}/"
    )


def load_medmnist(
    path: str | Path | None = None,
    flag: str = "pneumoniamnist",
    *,
    size: int | None = None,
    classes: Sequence[str] | None = None,
    max_train: int | None = None,
    seed: int = 0,
    max_size: int = 1024,
) -> Dataset:
    """A MedMNIST (v2 / MedMNIST+) ``.npz`` file with its official train/val/test splits.

    ``path`` is the ``.npz`` file or a data root holding ``medmnist/<flag>.npz`` or
    ``<flag>.npz`` (``<flag>_<size>.npz`` for the 64/128/224-pixel versions); default
    :func:`resolve_data_root`. ``classes`` overrides the built-in names (unknown flags get
    ``"0"``, ``"1"``, ...). ``max_train`` keeps a stratified, seeded subsample of the train split
    (val and test stay whole). Arrays are loaded once and held in memory (``.npz`` members cannot
    be memory-mapped). Sample ids look like ``pneumoniamnist/test/00012``; there are no patient
    ids, so groups are empty.
    """
    flag = flag.lower()
    stem = flag if size in (None, 28) else f"{flag}_{size}"
    candidates = _medmnist_candidates(path, f"{stem}.npz")
    file = next((c for c in candidates if c.is_file()), None)
    if file is None:
        raise _medmnist_missing(flag, size, candidates)
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
            keep = _stratified_subsample(split_labels, max_train, seed)
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
        task_type=_task_type(len(names), multilabel, str(file)),
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
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
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
    if not split_dirs:
        table["split"] = assign_splits(table["label"].to_numpy(), None, fractions, seed)
        description += f"; splits carved {tuple(fractions)} (stratified, seed {seed})"
    return Dataset(
        name=name or root.name,
        samples=table,
        classes=names,
        task_type=_task_type(len(names), False, str(root)),
        read_image=FileImageReader(root.resolve(), max_size),
        root=root,
        description=description,
        excluded=excluded,
        preprocessing=preprocessing_fingerprint(max_size),
    )


# ---------------------------------------------------------------------------------- manifest
#: Label cells that mean "no label given", the same in CSV and Parquet: a Parquet null, an empty
#: CSV cell, and these texts (any case), which R, pandas and spreadsheets write for missing values.
MISSING_LABEL_TEXTS = frozenset({"", "na", "n/a", "nan", "none", "null"})


def _cell_text(value: Any) -> str:
    """A manifest cell as text: '' for missing, integral floats without '.0' (Parquet NaN columns)."""
    if _is_missing(value):
        return ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _read_table(path: Path) -> tuple[pd.DataFrame, Callable[[int], str]]:
    """The manifest and a function naming row ``i`` the way a person finds it in the file."""
    suffixes = "".join(path.suffixes[-2:]).lower()
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            table = pd.read_parquet(path)
            return table, lambda i: f"{path.name} row {i + 1}"
        if path.suffix.lower() in (".csv", ".tsv") or suffixes in (".csv.gz", ".tsv.gz"):
            separator = "\t" if ".tsv" in suffixes else ","
            table = pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False)
            return table, lambda i: f"{path.name} line {i + 2}"
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise DataError(f"manifest {path}: cannot be parsed ({error})") from error
    raise DataError(f"manifest {path}: unknown format; use .csv, .tsv (optionally .gz) or .parquet")


def load_manifest(
    path: str | Path,
    root: str | Path | None = None,
    *,
    path_column: str | None = None,
    label_column: str = "label",
    label_columns: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    multilabel: bool = False,
    label_separator: str = "|",
    split_column: str = "split",
    group_column: str | None = None,
    sample_id_column: str = "sample_id",
    extra_columns: Sequence[str] = (),
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    allow_outside_root: bool = False,
    drop_unlabelled: bool = False,
    check_files: bool = True,
    max_size: int = 1024,
    name: str | None = None,
) -> Dataset:
    """A CSV/TSV/Parquet table with one row per image.

    Columns: ``path`` (or ``image``, or ``path_column``); the label as a class name in
    ``label_column`` (``multilabel=True``: a ``label_separator``-separated list, empty = no
    finding) or one 0/1 column per class (``label_columns``, which are then the class names);
    optional ``split`` (train/val/test; also valid/validation/...), ``patient_id`` or ``group``
    (or ``group_column``), ``sample_id`` (default: the image path), and ``extra_columns`` carried
    into the table (e.g. ``organ`` for per-organ results).

    Image paths are relative to ``root`` (default: the manifest's folder) and must stay inside it
    after resolving ``..`` and symlinks, unless ``allow_outside_root``. Without a split column,
    splits are carved by patient with :func:`assign_splits`. Classes are sorted (numerically when
    all are integers) unless ``classes`` gives them.

    Missing labels mean the same in CSV and Parquet: a null, an empty cell, or the text ``NA``,
    ``N/A``, ``NaN``, ``None`` or ``null`` (any case) is "no label given". A single-label row
    without a label is an error naming the row; for multi-label rows it means "no finding"
    (negative for every class). ``drop_unlabelled=True`` instead leaves such rows out, each listed
    in ``Dataset.excluded``. Without ``classes``, a label seen in val/test but in no train row of
    the file's own split column is an error at load time (a probe cannot learn a class it never saw).

    ``check_files`` (default): rows whose image file does not exist are left out when the table is
    built and listed in ``Dataset.excluded`` ("image file not found"); ``False`` builds the table
    from the manifest alone (e.g. ``medprobe data`` before the images are copied).
    """
    manifest = Path(path).expanduser()
    table, where = _read_table(manifest)
    if table.empty:
        raise DataError(f"manifest {manifest} has no rows")
    columns = list(table.columns)

    def column(name: str, role: str) -> list[Any]:
        if name not in table.columns:
            raise DataError(f"manifest {manifest}: no {role} column {name!r}; it has columns {columns}")
        return table[name].tolist()

    path_name = path_column or next((c for c in ("path", "image") if c in table.columns), None)
    if path_name is None:
        raise DataError(f"manifest {manifest}: no image path column ('path' or 'image'); "
                        f"it has columns {columns}; name one with path_column=")
    base = Path(root).expanduser() if root is not None else manifest.parent
    base = base.resolve()
    sources = _manifest_sources(column(path_name, "image path"), base, where, allow_outside_root)
    excluded: list[dict] = []
    keep = np.ones(len(table), dtype=bool)
    if check_files:
        exists = np.array([(Path(s) if Path(s).is_absolute() else base / s).is_file() for s in sources])
        if not exists.any():
            raise DataError(f"manifest {manifest}: none of its {len(sources)} image files exist under {base} "
                            f"(first: {sources[0]!r}); check `root`, or set data.check_files: false to "
                            "summarise the manifest without images")
        for i in np.flatnonzero(~exists):
            excluded.append({"sample_id": sources[i], "source": sources[i], "reason": "image file not found",
                             "where": where(i)})
        keep &= exists
    if drop_unlabelled and label_columns is None:
        unlabelled = np.array([_cell_text(v).lower() in MISSING_LABEL_TEXTS for v in column(label_column, "label")])
        for i in np.flatnonzero(unlabelled & keep):
            excluded.append({"sample_id": sources[i], "source": sources[i], "reason": "no label (drop_unlabelled)",
                             "where": where(i)})
        keep &= ~unlabelled
    if not keep.all():
        if not keep.any():
            raise DataError(f"manifest {manifest}: no row left after leaving out {len(excluded)} rows "
                            f"({sorted({e['reason'] for e in excluded})})")
        rows = np.flatnonzero(keep)
        table = table.iloc[rows].reset_index(drop=True)
        sources = [sources[i] for i in rows]
        where_in_file = where

        def where(i: int) -> str:  # errors keep naming the row as it stands in the file
            return where_in_file(int(rows[i]))

    if label_columns is not None:
        names = [str(c) for c in (classes if classes is not None else label_columns)]
        if len(names) != len(label_columns):
            raise DataError(f"manifest {manifest}: {len(label_columns)} label_columns but {len(names)} classes")
        labels: list[Any] = _indicator_labels(table, list(label_columns), where, manifest)
        is_multilabel = True
    else:
        texts = [_cell_text(v) for v in column(label_column, "label")]
        texts = ["" if text.lower() in MISSING_LABEL_TEXTS else text for text in texts]
        names, labels = _named_labels(texts, classes, multilabel, label_separator, where)
        is_multilabel = multilabel

    if split_column in table.columns:
        splits = []
        for i, value in enumerate(table[split_column].tolist()):
            text = _cell_text(value).lower()
            if text not in SPLIT_ALIASES:
                raise DataError(f"{where(i)}: split {_cell_text(value)!r} is not train, val or test")
            splits.append(SPLIT_ALIASES[text])
    else:
        splits = None

    if splits is not None and classes is None:
        _check_labels_seen_in_train(names, labels, splits, is_multilabel, where, manifest)

    group_name = group_column or next((c for c in ("patient_id", "group") if c in table.columns), None)
    groups = [(_cell_text(v) or None) for v in column(group_name, "group")] if group_name else [None] * len(table)
    if sample_id_column in table.columns:
        sample_ids = [_cell_text(v) for v in table[sample_id_column]]
        empty = [i for i, s in enumerate(sample_ids) if not s]
        if empty:
            raise DataError(f"{where(empty[0])}: empty {sample_id_column!r}")
    else:
        sample_ids = list(sources)

    description = f"manifest {manifest} (images under {base})"
    if splits is None:
        stratify = (np.array([[int(k in lab) for k in range(len(names))] for lab in labels])
                    if is_multilabel else np.asarray(labels))
        splits = list(assign_splits(stratify, groups, fractions, seed))
        description += f"; splits carved {tuple(fractions)} by {group_name or 'sample'} (seed {seed})"
    samples = pd.DataFrame({"sample_id": sample_ids, "split": splits, "label": labels,
                            "group": groups, "source": sources})
    for extra in extra_columns:
        if extra in samples.columns:
            raise DataError(f"manifest {manifest}: extra column {extra!r} clashes with a built-in column")
        samples[extra] = column(extra, "extra")
    return Dataset(
        name=name or manifest.stem,
        samples=samples,
        classes=names,
        task_type=_task_type(len(names), is_multilabel, str(manifest)),
        read_image=FileImageReader(base, max_size),
        root=base,
        description=description,
        excluded=excluded,
        preprocessing=preprocessing_fingerprint(max_size),
    )


def _check_labels_seen_in_train(
    names: list[str], labels: list[Any], splits: list[str], multilabel: bool,
    where: Callable[[int], str], manifest: Path,
) -> None:
    """Without a ``classes`` list the classes come from the file, so a typo or a new class that
    only val/test carry would silently become a class no probe was trained on: say so now."""
    in_train = {k for lab, s in zip(labels, splits) if s == "train" for k in (lab if multilabel else (lab,))}
    for i, (lab, split) in enumerate(zip(labels, splits)):
        new = [names[k] for k in (lab if multilabel else (lab,)) if k not in in_train]
        if split != "train" and new:
            raise DataError(f"{where(i)}: a new label {new[0]!r} appeared in the {split} split that no train "
                            f"row of {manifest.name} has; fix the label, or pass classes= to allow it")


def _manifest_sources(
    values: list[Any], base: Path, where: Callable[[int], str], allow_outside_root: bool
) -> list[str]:
    """Image paths as stored in the table: relative to ``base`` inside it, absolute outside."""
    sources = []
    for i, value in enumerate(values):
        text = _cell_text(value)
        if not text:
            raise DataError(f"{where(i)}: empty image path")
        given = Path(text).expanduser()
        resolved = (given if given.is_absolute() else base / given).resolve()
        if resolved.is_relative_to(base):
            sources.append(resolved.relative_to(base).as_posix())
        elif allow_outside_root:
            sources.append(str(resolved))
        else:
            raise DataError(
                f"{where(i)}: image path {text!r} resolves to {resolved}, outside the image root "
                f"{base}; fix the path, set `root`, or pass allow_outside_root=True if intended"
            )
    return sources


def _named_labels(
    texts: list[str], classes: Sequence[str] | None, multilabel: bool, separator: str,
    where: Callable[[int], str],
) -> tuple[list[str], list[Any]]:
    """Class names and per-row labels (index, or tuple of indices) from label text."""
    per_row = [
        [part.strip() for part in text.split(separator) if part.strip()] if multilabel else [text]
        for text in texts
    ]
    if classes is not None:
        names = [str(c) for c in classes]
    else:
        # A separator in a single-label column is almost surely a multi-label row, not a class
        # named "a|b"; say so instead of inventing that class (pass classes= if it is one).
        for i, row in enumerate(per_row):
            if not multilabel and separator in row[0]:
                raise DataError(f"{where(i)}: label {row[0]!r} contains {separator!r}; pass "
                                f"multilabel=True for multi-label rows, or classes= if it is one class")
        found = {label for row in per_row for label in row if label}
        numeric = all(label.lstrip("-").isdigit() for label in found)
        names = sorted(found, key=int) if numeric else sorted(found)
    index = {label: k for k, label in enumerate(names)}
    labels: list[Any] = []
    for i, row in enumerate(per_row):
        if not multilabel and not row[0]:
            raise DataError(f"{where(i)}: no label (empty, NA or None); pass drop_unlabelled=True to leave "
                            "such rows out")
        unknown = [label for label in row if label not in index]
        if unknown:
            hint = (f"; for multi-label rows pass multilabel=True (separator {separator!r})"
                    if not multilabel and separator in unknown[0] else "")
            raise DataError(f"{where(i)}: unknown label {unknown[0]!r}; classes are {names}{hint}")
        labels.append(tuple(sorted(index[label] for label in row)) if multilabel else index[row[0]])
    return names, labels


_TRUE = {"1", "1.0", "true", "yes"}
_FALSE = {"0", "0.0", "false", "no"}


def _indicator_labels(
    table: pd.DataFrame, label_columns: list[str], where: Callable[[int], str], manifest: Path
) -> list[tuple[int, ...]]:
    """Multi-label tuples from one 0/1 column per class."""
    missing = [c for c in label_columns if c not in table.columns]
    if missing:
        raise DataError(f"manifest {manifest}: label columns {missing} missing; it has {list(table.columns)}")
    labels = []
    for i, values in enumerate(table[label_columns].itertuples(index=False)):
        positive = []
        for k, (name, value) in enumerate(zip(label_columns, values)):
            text = _cell_text(value).lower()
            if text in _TRUE:
                positive.append(k)
            elif text not in _FALSE:
                raise DataError(f"{where(i)}: column {name!r} has {_cell_text(value)!r}; use 0 or 1")
        labels.append(tuple(positive))
    return labels
