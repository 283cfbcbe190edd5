"""The activation cache: ``extract_features`` fills it, ``load(cache_dir, layer)`` reads it."""

from medprobe.features.cache import FeatureCache, load
from medprobe.features.extract import extract_features

__all__ = ["FeatureCache", "extract_features", "load"]
