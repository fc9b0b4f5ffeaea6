"""One progress bar for every long loop: count, rate and ETA, as a bar on a terminal and as lines in a log.

On an interactive terminal it is a rich bar.  Elsewhere (a SLURM job's log, ``nohup``, a pipe) a loop that
runs longer than ``LPA_PROGRESS_EVERY`` seconds (default 60) prints one timestamped line to stderr every
that many seconds and one when it ends, so a long job's log says how far it got; shorter loops print
nothing, so CI and piped output stay clean.  ``LPA_PROGRESS=0`` silences both, ``LPA_PROGRESS=1`` forces
the bar.

    for row in progress(rows, "judging", total=len(rows)):
        ...

    with progress_bar("generating", total=n) as bar:   # when work arrives in chunks
        bar.advance(len(batch))
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator, Sized
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["Bar", "line_interval", "progress", "progress_bar", "progress_enabled"]

T = TypeVar("T")


def _env_switch() -> bool | None:
    """``LPA_PROGRESS`` as on / off, None when unset."""
    env = os.environ.get("LPA_PROGRESS", "").strip().lower()
    if env in {"0", "false", "no", "off"}:
        return False
    if env in {"1", "true", "yes", "on"}:
        return True
    return None


def progress_enabled(enabled: bool | None = None) -> bool:
    """Whether progress is reported at all: explicit ``enabled`` wins; else ``LPA_PROGRESS``; else yes."""
    if enabled is not None:
        return enabled
    return _env_switch() is not False


def line_interval() -> float:
    """Seconds between progress lines when stderr is not a terminal (``LPA_PROGRESS_EVERY``, default 60)."""
    raw = os.environ.get("LPA_PROGRESS_EVERY", "").strip()
    try:
        seconds = float(raw) if raw else 60.0
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        from lpa.errors import LpaError

        raise LpaError(f"LPA_PROGRESS_EVERY={raw!r} is not a number of seconds >= 0 (the default is 60).")
    return seconds


class _Lines:
    """Timestamped progress lines for a log: one every ``every`` seconds, and a last one at the end when any was
    printed and the count moved since."""

    def __init__(self, description: str, total: int | None, completed: int, every: float) -> None:
        self.description, self.total, self.every = description, total, every
        self.start = self.last = time.monotonic()
        self.start_count = completed
        self.printed: int | None = None  # the count last printed (None: nothing yet)

    def update(self, completed: int, *, final: bool = False) -> None:
        now = time.monotonic()
        due = self.printed is not None and completed != self.printed if final else now - self.last >= self.every
        if due:
            self.last, self.printed = now, completed
            print(self._line(completed, now), file=sys.stderr, flush=True)

    def _line(self, completed: int, now: float) -> str:
        elapsed, done = now - self.start, completed - self.start_count
        count = f"{completed}/{self.total}" if self.total else str(completed)
        if self.total:
            count += f" ({100 * completed / self.total:.0f}%)"
        parts = [f"{time.strftime('%H:%M:%S')} {self.description}: {count}", f"elapsed {_clock(elapsed)}"]
        if done > 0:
            per = elapsed / done
            parts.append(f"{per:.1f} s/it" if per >= 1 else f"{1 / per:.1f} it/s")
            if self.total and completed < self.total:
                parts.append(f"eta {_clock(per * (self.total - completed))}")
        return " · ".join(parts)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Bar:
    """A started bar (or a no-op stand-in when disabled) with ``advance`` and ``describe``."""

    def __init__(
        self, description: str, total: int | None, enabled: bool, completed: int = 0, console: Any = None
    ) -> None:
        self.completed = completed
        self._progress: Any = None
        self._lines: _Lines | None = None
        if not enabled:
            return
        if console is None and not sys.stderr.isatty() and _env_switch() is not True:
            self._lines = _Lines(description, total, completed, line_interval())
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task(description, total=total, completed=completed, rate="")
        self._progress.start()

    def advance(self, n: int = 1) -> None:
        self.completed += n
        if self._lines is not None:
            self._lines.update(self.completed)
        if self._progress is None:
            return
        self._progress.update(self._task, advance=n)
        task = self._progress.tasks[0]
        speed = task.speed
        if speed:
            rate = f"{speed:.2f}/s" if speed >= 1 else f"{1 / speed:.1f}s/it"
            self._progress.update(self._task, rate=rate)

    def describe(self, description: str) -> None:
        if self._lines is not None:
            self._lines.description = description
        if self._progress is not None:
            self._progress.update(self._task, description=description)

    def close(self) -> None:
        if self._lines is not None:
            self._lines.update(self.completed, final=True)
            self._lines = None
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


@contextmanager
def progress_bar(
    description: str, total: int | None = None, *, enabled: bool | None = None, completed: int = 0
) -> Iterator[Bar]:
    """A bar for work that advances in chunks; always closed, even on error."""
    bar = Bar(description, total, progress_enabled(enabled), completed)
    try:
        yield bar
    finally:
        bar.close()


def progress(
    items: Iterable[T], description: str = "working", *, total: int | None = None, enabled: bool | None = None
) -> Iterator[T]:
    """Iterate ``items`` behind a bar; ``total`` defaults to ``len(items)`` when it has one."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    with progress_bar(description, total, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.advance()
