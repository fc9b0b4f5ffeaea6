"""One progress bar for every long loop: count, rate and ETA (rich), silent when nobody is watching.

Bars appear only on an interactive terminal, so logs, CI and piped output stay clean.  Set
``LPA_PROGRESS=0`` to silence them everywhere, or ``LPA_PROGRESS=1`` to force them on.

    for row in progress(rows, "judging", total=len(rows)):
        ...

    with progress_bar("generating", total=n) as bar:   # when work arrives in chunks
        bar.advance(len(batch))
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sized
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["Bar", "progress", "progress_bar", "progress_enabled"]

T = TypeVar("T")


def progress_enabled(enabled: bool | None = None) -> bool:
    """Explicit ``enabled`` wins; else ``LPA_PROGRESS``; else only when stderr is a terminal."""
    if enabled is not None:
        return enabled
    env = os.environ.get("LPA_PROGRESS", "").strip().lower()
    if env in {"0", "false", "no", "off"}:
        return False
    if env in {"1", "true", "yes", "on"}:
        return True
    return sys.stderr.isatty()


class Bar:
    """A started bar (or a no-op stand-in when disabled) with ``advance`` and ``describe``."""

    def __init__(
        self, description: str, total: int | None, enabled: bool, completed: int = 0, console: Any = None
    ) -> None:
        self.completed = completed
        self._progress: Any = None
        if not enabled:
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
        if self._progress is None:
            return
        self._progress.update(self._task, advance=n)
        task = self._progress.tasks[0]
        speed = task.speed
        if speed:
            rate = f"{speed:.2f}/s" if speed >= 1 else f"{1 / speed:.1f}s/it"
            self._progress.update(self._task, rate=rate)

    def describe(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=description)

    def close(self) -> None:
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
