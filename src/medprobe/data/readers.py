"""Image readers a :class:`~medprobe.data.dataset.Dataset` calls per sample row.

They return ``preprocess(read_image(...))`` and attach the sample id to any
:class:`ImageReadError`, so the feature extractor can report (or skip) exactly the sample that
failed. Classes rather than closures so datasets stay picklable for multi-process extraction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medprobe.data.images import preprocess, read_image
from medprobe.errors import ImageReadError


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


__all__ = ["ArrayImageReader", "FileImageReader"]
