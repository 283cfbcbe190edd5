"""Many runs, one answer: finished run folders side by side (``medprobe compare``).

:func:`compare_runs` checks each folder (:mod:`.runs`), groups runs into tasks and, within a task,
into runs that scored the same test samples (:mod:`.pairing`), builds the task x backbone table
(:mod:`.tables`), recomputes paired tests on shared bootstrap replicates, and writes
``comparison.json``, ``comparison.csv`` and a self-contained ``compare.html`` (:mod:`.figures`,
:mod:`.html`).
"""

from medprobe.compare.build import COMPARE_FILES, build_comparison, compare_runs
from medprobe.compare.runs import RunFolder, load_run, load_runs

__all__ = ["compare_runs", "build_comparison", "load_run", "load_runs", "RunFolder", "COMPARE_FILES"]
