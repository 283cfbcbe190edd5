"""The command line: a thin layer over run files and the library.

Every command turns medprobe's own errors (bad input, bad config, missing model, ...) into one
clear red message and exit code 2, never a bare traceback. Run files are validated (keys, and the
options of the adapter and of every backbone) before the heavy libraries are imported, so a typo
is reported in well under a second.

Commands map to the stages of :mod:`medprobe.stages`: ``run`` / ``demo`` run all of them
(:func:`medprobe.experiment.run_experiment`), ``probe`` all but extraction (features from the
cache), ``extract`` the data and extract stages; ``bench`` reads its benchmarks from
:data:`medprobe.bench.BENCHMARKS`.
"""


from medprobe.cli import experiment_commands, inspection_commands, results_commands  # noqa: F401  (register)
from medprobe.cli.app import _load, app, friendly_errors

__all__ = ["app", "main", "friendly_errors", "_load"]


def main() -> None:
    """The ``medprobe`` console script."""
    app()
