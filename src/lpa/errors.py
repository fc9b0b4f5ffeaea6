"""One exception type for user mistakes, so the CLI can print it without a traceback."""

from __future__ import annotations

from collections.abc import Iterable


class LpaError(Exception):
    """A problem the user can fix (bad path, unknown name, malformed file, layer out of range...).

    The CLI prints the message and exits with code 2; programming errors propagate as usual.
    """


class FolderBusy(LpaError):
    """Another lpa process holds the lock on a run folder or file this one was about to write.

    An error of its own so that a scheduler of many runs (``lpa experiment``) can leave that run to
    its owner and go on with the next one.
    """


def unknown_choice(kind: str, name: str, choices: Iterable[str]) -> LpaError:
    """Build the standard 'unknown X' error that lists the valid choices."""
    valid = ", ".join(sorted(choices)) or "(none registered)"
    return LpaError(f"Unknown {kind} {name!r}. Valid choices: {valid}.")
