"""Exceptions with messages meant for people: each says what went wrong and where."""


class MedprobeError(Exception):
    """Base class: the CLI prints these as one clear message instead of a traceback."""


class DataError(MedprobeError):
    """Bad or missing input data (unreadable image, unknown label, empty split, ...)."""


class ImageReadError(DataError):
    """One image could not be read; carries the sample id and path so it can be skipped or reported."""

    def __init__(self, message: str, sample_id: str | None = None, path: str | None = None):
        super().__init__(message)
        self.sample_id = sample_id
        self.path = path


class ConfigError(MedprobeError):
    """A run file or option is invalid."""


class ModelError(MedprobeError):
    """A backbone cannot be built (missing model file, unknown layer, ...)."""


class CacheError(MedprobeError):
    """The feature cache is incomplete, locked by another process, or does not match the request."""


class ConvergenceWarning(UserWarning):
    """A probe head that did not meet ``tol`` (medprobe's own class: the probes do not import
    scikit-learn; filter this one, not ``sklearn.exceptions.ConvergenceWarning``)."""
