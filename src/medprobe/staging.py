"""All-or-nothing output folders: a run's (or an MCQ run's, or a rebuilt report's) outputs appear
together, or not at all.

Why: ``results.json``, ``predictions.parquet``, ``run.json``, the figures and ``report.html``
describe one run. Written one by one into the output folder, a run killed while overwriting an
older one leaves the new numbers next to the old report: a complete-looking folder that disagrees
with itself.

How (:func:`staged_run_folder`):

1. The run writes everything into a staging folder beside the target,
   ``<name>.medprobe-incomplete-<random>/``, whose ``INCOMPLETE.txt`` says what it is. The writer
   holds an flock on that folder for the whole run, so a second run for the same target is refused.
2. When every output is written, the marker is removed, the old target (if any) is renamed to
   ``<name>.medprobe-previous-<random>``, the staging folder is renamed to the target, and the
   parent folder is fsynced after each rename (POSIX only persists renames that way).
3. Entries of the old folder that the new run did not write and medprobe does not own (your notes,
   an MCQ result you put there, ``.git``, ...) are *moved* into the new folder; only medprobe's own
   old outputs are deleted. Nothing of yours is deleted, silently or otherwise.

It lives at the level of :mod:`medprobe.io` (it needs nothing above it) so that every writer of an
output folder -- :mod:`medprobe.experiment`, :mod:`medprobe.mcq.run`,
:func:`medprobe.outputs.rebuild_report` -- uses the same mechanism. A run that fails with an error
removes its staging folder and leaves the old outputs untouched; a killed run leaves the staging
folder (with its marker) next to the old complete outputs, or, if it was killed between the two
renames of step 2 (microseconds), no target but both complete folders.
:func:`recover`, called before the next run for the same target, finishes or undoes such a swap:
a staging folder without its marker is a finished run and is moved into place when there is no
target, otherwise (or with its marker) it is deleted; a ``previous`` folder is put back when there
is no target, otherwise your files in it are moved into the target and the rest is deleted.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from medprobe.errors import ConfigError
from medprobe.io import atomic_write_bytes, fsync_dir, make_dirs

STAGING_TAG = ".medprobe-incomplete-"
PREVIOUS_TAG = ".medprobe-previous-"
INCOMPLETE_MARKER = "INCOMPLETE.txt"


def _folder_mode() -> int:
    """What a new folder gets under the current umask (mkdtemp's would be private to its owner)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def resolve_target(path: str | Path) -> Path:
    """The real folder a run writes to: a symlinked output folder is staged beside its target, so
    the link keeps pointing at the results."""
    path = Path(os.path.abspath(Path(path).expanduser()))
    return path.resolve() if path.is_symlink() else path


def _siblings(target: Path, tag: str) -> list[Path]:
    if not target.parent.is_dir():
        return []
    prefix = target.name + tag
    return sorted(p for p in target.parent.iterdir() if p.name.startswith(prefix) and p.is_dir())


def _try_lock(folder: Path) -> int | None:
    """An fd holding the folder's flock, or None when a live run holds it."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _carry_over(old: Path, new: Path, owned: Iterable[str]) -> list[str]:
    """Move the entries of ``old`` that are neither medprobe's (``owned``) nor rewritten in ``new``."""
    owned = set(owned) | {INCOMPLETE_MARKER}
    moved = []
    for entry in sorted(old.iterdir()):
        if entry.name in owned or (new / entry.name).exists() or (new / entry.name).is_symlink():
            continue
        os.rename(entry, new / entry.name)
        moved.append(entry.name)
    if moved:
        fsync_dir(new)
    return moved


def recover(target: str | Path, owned: Iterable[str]) -> list[str]:
    """Clean up after runs for ``target`` that were killed; returns what was done, for people.

    Raises :class:`ConfigError` when another run is writing ``target`` right now.
    """
    target = resolve_target(target)
    owned = list(owned)
    notes = []
    for staging in _siblings(target, STAGING_TAG):
        fd = _try_lock(staging)
        if fd is None:
            raise ConfigError(f"another medprobe run is writing {target} (its staging folder is {staging}); "
                              "wait for it to finish or choose another --out")
        try:
            finished = not (staging / INCOMPLETE_MARKER).exists()
            if finished and not target.exists():
                os.rename(staging, target)
                fsync_dir(target.parent)
                notes.append(f"{target}: completed the swap-in of a finished run that was killed while swapping")
            else:
                shutil.rmtree(staging)
                notes.append(f"removed {staging.name}, the partial outputs of a run that was killed")
        finally:
            os.close(fd)
    for previous in _siblings(target, PREVIOUS_TAG):
        if not target.exists():
            os.rename(previous, target)
            fsync_dir(target.parent)
            notes.append(f"{target}: restored the previous outputs (a run was killed while replacing them)")
        else:
            moved = _carry_over(previous, target, owned)
            shutil.rmtree(previous)
            notes.append(f"{target}: removed the outputs a finished run replaced"
                         + (f"; moved your files {moved} into it" if moved else ""))
    return notes


def _why_unwritable(target: Path, error: OSError) -> str:
    """The reason in words: the part of the path that is a file, or the system's reason."""
    for folder in reversed(target.parents):
        if folder.exists() and not folder.is_dir():
            return f"{folder} is a file, not a folder"
    return error.strerror or str(error)


def _marker_text(target: Path) -> str:
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return (f"This folder holds the partial outputs of a medprobe run that has not finished (or was killed).\n"
            f"It is NOT a result. Target: {target}\nStarted: {started} UTC, process {os.getpid()} on "
            f"{socket.gethostname()}.\nThe run moves it to the target when every output is written; the next "
            "medprobe run for the same target removes it if it was killed. You may delete it.\n")


def _swap_in(staging: Path, target: Path, owned: Iterable[str]) -> list[str]:
    """Step 2 and 3 of the module docstring; returns the names of your files moved over."""
    (staging / INCOMPLETE_MARKER).unlink()
    fsync_dir(staging)
    previous = None
    if target.exists():
        previous = target.with_name(f"{target.name}{PREVIOUS_TAG}{staging.name.rsplit(STAGING_TAG, 1)[1]}")
        os.rename(target, previous)  # a fresh name: mkdtemp made the staging suffix unique
        fsync_dir(target.parent)
    os.rename(staging, target)
    fsync_dir(target.parent)
    if previous is None:
        return []
    moved = _carry_over(previous, target, owned)
    shutil.rmtree(previous)
    return moved


@contextmanager
def staged_run_folder(target: str | Path, owned: Iterable[str]) -> Iterator[Path]:
    """Yield a staging folder to write a run's outputs into; on a normal exit it replaces
    ``target`` as a whole (see the module docstring), on an error it is removed.

    ``owned`` names the entries of an existing ``target`` that are medprobe outputs (deleted when
    replaced); every other entry is moved into the new folder.
    """
    target = resolve_target(target)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"output folder {target} is a file; choose another --out")
    try:
        make_dirs(target.parent)
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}{STAGING_TAG}", dir=target.parent))
    except OSError as error:
        raise ConfigError(f"cannot create the output folder {target}: {_why_unwritable(target, error)}; "
                          "choose another --out") from error
    fd = os.open(staging, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.chmod(staging, target.stat().st_mode & 0o7777 if target.is_dir() else _folder_mode())
        atomic_write_bytes(staging / INCOMPLETE_MARKER, _marker_text(target).encode())
        fsync_dir(target.parent)
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        cwd = os.getcwd()
        moved = _swap_in(staging, target, owned)
        if Path(cwd) == target or target in Path(cwd).parents:
            os.chdir(cwd)  # the process sat in the old folder, now deleted: follow the path to the new one
        if moved:
            from medprobe.progress import console

            console.print(f"kept {len(moved)} file(s) medprobe did not write in {target}: {', '.join(moved)}",
                          highlight=False)
    finally:
        os.close(fd)


__all__ = ["staged_run_folder", "recover", "resolve_target", "STAGING_TAG", "PREVIOUS_TAG", "INCOMPLETE_MARKER"]
