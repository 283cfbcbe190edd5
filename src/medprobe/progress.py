"""Progress for long loops, on stderr: a rich bar on a terminal, plain periodic lines otherwise.

Why two forms: a bar redraws one line in place, which a log file (``medprobe run ... 2> log``,
``| tee``, CI) cannot show, so a piped run used to print nothing for minutes. Without a terminal,
:func:`progress_bar` writes a line every :data:`PLAIN_INTERVAL_S` seconds (done / total, rate,
ETA) and one when the loop ends. In both forms the first step is timed and turned into an estimate
of the whole loop ("the first 2 layers took 13 s: roughly 1 min for the rest"), so a long loop says
early how long it will take; feature extraction says it sooner, after its first batch of images
(:class:`medprobe.features.extract.FirstBatchEstimate`). Results go to stdout, never here.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

console = Console(stderr=True)
if not console.is_terminal:
    # Piped or redirected (a log file, `| tee`, CI): there is no screen width to fit, and rich's
    # 80-column default would wrap messages and clip table cells ("dinov2-s-on…").
    console = Console(stderr=True, width=100_000, soft_wrap=True)

#: seconds between two plain progress lines when stderr is not a terminal ($MEDPROBE_PROGRESS_INTERVAL)
PLAIN_INTERVAL_S = float(os.environ.get("MEDPROBE_PROGRESS_INTERVAL") or 10)
#: loops expected to take less than this after their first step get no estimate line
MIN_ESTIMATED_S = 10.0


def format_duration(seconds: float) -> str:
    """A duration for people: "< 1 s", "42 s", "7 min", "2.5 h" (never "0 s" for real work)."""
    if seconds < 1:
        return "< 1 s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _amount(n: float, unit: str) -> str:
    if unit == "bytes":
        return f"{n / 2**20:.1f} MiB"
    return f"{n:g}" + (f" {unit}" if unit else "")


class _Tracker:
    """Counts the steps of one loop; says the first-step estimate and, in plain form, the lines."""

    def __init__(self, description: str, total: int | None, unit: str, estimate: bool, plain: bool) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.estimate, self.plain = estimate, plain
        self.started = self.last_line = time.perf_counter()
        self.done = 0

    def step(self, n: int) -> None:
        first = self.done == 0
        self.done += n
        now = time.perf_counter()
        if first and self.estimate and self.total and self.done < self.total:
            elapsed = now - self.started
            rest = elapsed / self.done * (self.total - self.done)
            if rest >= MIN_ESTIMATED_S:
                console.print(f"{self.description}: the first {_amount(self.done, self.unit)} took "
                          f"{format_duration(elapsed)}: roughly {format_duration(rest)} for the remaining "
                              f"{_amount(self.total - self.done, self.unit)} at this rate", highlight=False)
        if self.plain and now - self.last_line >= PLAIN_INTERVAL_S:
            self.line(now)

    def line(self, now: float, final: bool = False) -> None:
        self.last_line = now
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        done = _amount(self.done, self.unit)
        if final:
            text = f"done: {done} in {format_duration(elapsed)}"
        elif self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            text = (f"{done} of {_amount(self.total, self.unit)} ({100 * self.done / self.total:.0f} %), "
                    f"{_amount(round(rate, 1), self.unit)}/s, ETA {format_duration(eta)}")
        else:
            text = f"{done}, {_amount(round(rate, 1), self.unit)}/s"
        console.print(f"{self.description}: {text}", highlight=False)


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool = True, *, unit: str = "",
                 estimate: bool = True) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)`` for a loop of ``total`` steps (``None``: unknown) counted in ``unit``
    ("images", "layers", ``"bytes"`` for a download). On a terminal: a bar with count, elapsed and
    remaining time; otherwise plain lines (module docstring). ``estimate``: after the first step,
    say how long the rest will take at that rate. Nothing at all when not ``enabled``."""
    if not enabled:
        yield lambda n=1: None
        return
    plain = not console.is_terminal
    tracker = _Tracker(description, total, unit, estimate and unit != "bytes", plain)
    if plain:
        yield tracker.step
        tracker.line(time.perf_counter(), final=True)
        return
    counts = (DownloadColumn(), TransferSpeedColumn()) if unit == "bytes" else (MofNCompleteColumn(),)
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), *counts, TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            progress.advance(task, n)
            tracker.step(n)

        yield advance
