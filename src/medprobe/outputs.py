"""A run folder's report, built where the run folder's staging (:mod:`medprobe.staging`) puts it.

The staging mechanism itself lives in :mod:`medprobe.staging` (below every package, so MCQ runs use
it too); its names are importable from here as before. What is here needs the report package:
building a report inside a staging folder that is about to become the run folder, and rebuilding a
finished run's report as a whole (``medprobe report``), so that a rebuild killed half-way never
leaves new figures next to an old report.
"""

from __future__ import annotations

from pathlib import Path

from medprobe.errors import ConfigError
from medprobe.io import atomic_write_bytes
from medprobe.staging import INCOMPLETE_MARKER, PREVIOUS_TAG, STAGING_TAG, recover, resolve_target, staged_run_folder

#: what a report rebuild replaces in a run folder; every other entry is carried over untouched
REPORT_OWNED = ("report.html", "figures")


def build_report_as(staging: Path, final: Path) -> Path:
    """Build the figures and report.html inside ``staging`` while naming ``final`` as the run
    folder (the report states where its files are; the staging folder is about to be renamed)."""
    from medprobe.report.load import load_run

    data = load_run(staging)
    _ = data.predictions  # read now, from the staging folder, before the run folder is renamed
    data.run_dir = Path(final)
    return _render(data, staging)


def _render(data, folder: Path) -> Path:
    from medprobe.report.figures import FIGURE_DIR, render_figures
    from medprobe.report.html import REPORT_NAME, render_page

    figures = render_figures(data, folder / FIGURE_DIR)
    target = folder / REPORT_NAME
    atomic_write_bytes(target, render_page(data, figures).encode("utf-8"))
    return target


def rebuild_report(run_dir: str | Path) -> Path:
    """Rebuild a finished run's figures and report.html from its saved outputs, all at once: they
    are written into a staging folder that then replaces the run folder, carrying every other entry
    (results, predictions, your files) over, as a run does. Returns the report's path."""
    from medprobe.report.load import load_run

    final = resolve_target(run_dir)
    if not final.is_dir():
        raise ConfigError(f"{final} is not a run folder (no such folder)")
    for _ in recover(final, REPORT_OWNED):
        pass  # a rebuild killed earlier: finished or undone now, before reading the folder
    data = load_run(final)
    _ = data.predictions  # read before the swap moves the files
    with staged_run_folder(final, REPORT_OWNED) as staging:
        _render(data, staging)
    return final / "report.html"


__all__ = ["build_report_as", "rebuild_report", "REPORT_OWNED", "staged_run_folder", "recover", "resolve_target",
           "STAGING_TAG", "PREVIOUS_TAG", "INCOMPLETE_MARKER"]
