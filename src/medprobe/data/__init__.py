"""Data layer: the :class:`Dataset` sample table, image reading/preprocessing, and adapters.

Paper-specific adapters live in :mod:`medprobe.data.paper`; run files name adapters through
:mod:`medprobe.data.loaders`.
"""

from medprobe.data.adapters import (
    assign_splits,
    load_image_folder,
    load_manifest,
    load_medmnist,
    resolve_data_root,
)
from medprobe.data.dataset import Dataset
from medprobe.data.images import (
    PREPROCESSING_VERSION,
    preprocess,
    preprocessing_fingerprint,
    read_image,
)

__all__ = [
    "Dataset",
    "PREPROCESSING_VERSION",
    "assign_splits",
    "load_image_folder",
    "load_manifest",
    "load_medmnist",
    "preprocess",
    "preprocessing_fingerprint",
    "read_image",
    "resolve_data_root",
]
