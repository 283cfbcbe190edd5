"""CSV/TSV/Parquet manifests: one row per image, with its label, split and patient."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from medprobe.data.dataset import Dataset, task_type_for
from medprobe.data.images import preprocessing_fingerprint
from medprobe.data.readers import FileImageReader
from medprobe.data.splits import CARVED_SPLITS_OPTION, DEFAULT_TRAIN_VAL_TEST, SPLIT_ALIASES, assign_splits
from medprobe.errors import DataError


#: Label cells that mean "no label given", the same in CSV and Parquet: a Parquet null, an empty
#: CSV cell, and these texts (any case), which R, pandas and spreadsheets write for missing values.
MISSING_LABEL_TEXTS = frozenset({"", "na", "n/a", "nan", "none", "null"})


def is_missing(value: Any) -> bool:
    """A missing cell: None, NaN or NaT (pandas' own test, never raising on lists or objects)."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _cell_text(value: Any) -> str:
    """A manifest cell as text: '' for missing, integral floats without '.0' (Parquet NaN columns)."""
    if is_missing(value):
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
    fractions: Sequence[float] = DEFAULT_TRAIN_VAL_TEST,
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
    path_name = path_column or next((c for c in ("path", "image") if c in table.columns), None)
    if path_name is None:
        raise DataError(f"manifest {manifest}: no image path column ('path' or 'image'); "
                        f"it has columns {list(table.columns)}; name one with path_column=")
    base = Path(root).expanduser() if root is not None else manifest.parent
    base = base.resolve()
    sources = _manifest_sources(_column(table, manifest, path_name, "image path"), base, where, allow_outside_root)
    table, sources, where, excluded = _kept_rows(
        table, manifest, base, sources, where, check_files=check_files,
        unlabelled_column=label_column if drop_unlabelled and label_columns is None else None)
    names, labels, is_multilabel = _labels(table, manifest, where, label_column=label_column,
                                           label_columns=label_columns, classes=classes, multilabel=multilabel,
                                           label_separator=label_separator)
    splits = _file_splits(table, split_column, where)
    # with label_columns the classes are the named columns, so no value can turn into a new class
    if splits is not None and classes is None and label_columns is None:
        _check_labels_seen_in_train(names, labels, splits, is_multilabel, where, manifest)

    group_name = group_column or next((c for c in ("patient_id", "group") if c in table.columns), None)
    groups = ([(_cell_text(v) or None) for v in _column(table, manifest, group_name, "group")] if group_name
              else [None] * len(table))
    sample_ids = _sample_ids(table, sample_id_column, sources, where)

    description = f"manifest {manifest} (images under {base})"
    validation_option = ""
    if splits is None:
        validation_option = CARVED_SPLITS_OPTION
        splits = _carve_splits(names, labels, is_multilabel, groups, fractions, seed)
        description += f"; splits carved {tuple(fractions)} by {group_name or 'sample'} (seed {seed})"
    samples = pd.DataFrame({"sample_id": sample_ids, "split": splits, "label": labels,
                            "group": groups, "source": sources})
    for extra in extra_columns:
        if extra in samples.columns:
            raise DataError(f"manifest {manifest}: extra column {extra!r} clashes with a built-in column")
        samples[extra] = _column(table, manifest, extra, "extra")
    return Dataset(name=name or manifest.stem, samples=samples, classes=names,
                   task_type=task_type_for(len(names), is_multilabel, str(manifest)),
                   read_image=FileImageReader(base, max_size), root=base, description=description,
                   excluded=excluded, preprocessing=preprocessing_fingerprint(max_size),
                   validation_option=validation_option)


def _carve_splits(names: list[str], labels: list[Any], is_multilabel: bool, groups: list[str | None],
                  fractions: Sequence[float], seed: int) -> list[str]:
    """Splits for a manifest without its own, stratified by class (per label for multi-label rows)."""
    stratify = (np.array([[int(k in lab) for k in range(len(names))] for lab in labels])
                if is_multilabel else np.asarray(labels))
    return list(assign_splits(stratify, groups, fractions, seed))


def _column(table: pd.DataFrame, manifest: Path, name: str, role: str) -> list[Any]:
    """The values of column ``name``; a missing column is an error naming its ``role`` and the columns there are."""
    if name not in table.columns:
        raise DataError(f"manifest {manifest}: no {role} column {name!r}; it has columns {list(table.columns)}")
    return table[name].tolist()


def _kept_rows(
    table: pd.DataFrame,
    manifest: Path,
    base: Path,
    sources: list[str],
    where: Callable[[int], str],
    *,
    check_files: bool,
    unlabelled_column: str | None,
) -> tuple[pd.DataFrame, list[str], Callable[[int], str], list[dict]]:
    """Leave out rows whose image file is missing (``check_files``) and rows without a label in
    ``unlabelled_column`` (``drop_unlabelled``), each listed as excluded; returns the kept table,
    its sources, a ``where`` that still names rows as they stand in the file, and the exclusions."""
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
    if unlabelled_column is not None:
        unlabelled = np.array([_cell_text(v).lower() in MISSING_LABEL_TEXTS
                               for v in _column(table, manifest, unlabelled_column, "label")])
        for i in np.flatnonzero(unlabelled & keep):
            excluded.append({"sample_id": sources[i], "source": sources[i], "reason": "no label (drop_unlabelled)",
                             "where": where(i)})
        keep &= ~unlabelled
    if keep.all():
        return table, sources, where, excluded
    if not keep.any():
        raise DataError(f"manifest {manifest}: no row left after leaving out {len(excluded)} rows "
                        f"({sorted({e['reason'] for e in excluded})})")
    rows = np.flatnonzero(keep)

    def where_in_file(i: int) -> str:  # errors keep naming the row as it stands in the file
        return where(int(rows[i]))

    return table.iloc[rows].reset_index(drop=True), [sources[i] for i in rows], where_in_file, excluded


def _labels(
    table: pd.DataFrame,
    manifest: Path,
    where: Callable[[int], str],
    *,
    label_column: str,
    label_columns: Sequence[str] | None,
    classes: Sequence[str] | None,
    multilabel: bool,
    label_separator: str,
) -> tuple[list[str], list[Any], bool]:
    """``(class names, label per row, multi-label?)`` from one 0/1 column per class
    (``label_columns``) or from class names in ``label_column``."""
    if label_columns is not None:
        names = [str(c) for c in (classes if classes is not None else label_columns)]
        if len(names) != len(label_columns):
            raise DataError(f"manifest {manifest}: {len(label_columns)} label_columns but {len(names)} classes")
        return names, _indicator_labels(table, list(label_columns), where, manifest), True
    texts = [_cell_text(v) for v in _column(table, manifest, label_column, "label")]
    texts = ["" if text.lower() in MISSING_LABEL_TEXTS else text for text in texts]
    names, labels = _named_labels(texts, classes, multilabel, label_separator, where)
    return names, labels, multilabel


def _file_splits(table: pd.DataFrame, split_column: str, where: Callable[[int], str]) -> list[str] | None:
    """The split of each row from the file's own split column (any spelling in
    :data:`SPLIT_ALIASES`), or ``None`` when the file has no such column."""
    if split_column not in table.columns:
        return None
    splits = []
    for i, value in enumerate(table[split_column].tolist()):
        text = _cell_text(value).lower()
        if text not in SPLIT_ALIASES:
            raise DataError(f"{where(i)}: split {_cell_text(value)!r} is not train, val or test")
        splits.append(SPLIT_ALIASES[text])
    return splits


def _sample_ids(table: pd.DataFrame, sample_id_column: str, sources: list[str],
                where: Callable[[int], str]) -> list[str]:
    """Sample ids from ``sample_id_column`` (none may be empty), else the image paths."""
    if sample_id_column not in table.columns:
        return list(sources)
    sample_ids = [_cell_text(v) for v in table[sample_id_column]]
    empty = [i for i, s in enumerate(sample_ids) if not s]
    if empty:
        raise DataError(f"{where(empty[0])}: empty {sample_id_column!r}")
    return sample_ids


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
