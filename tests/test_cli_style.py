"""One CLI style: every command is a module-level function of an lpa.cli module, and every --help works.

Fast: nothing here loads a model (heavy imports stay inside the command bodies).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

import pytest
import typer
from typer.testing import CliRunner

from lpa.cli.main import COMMAND_MODULES, app


def _commands(group: typer.Typer, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    """(path, callback) of every command, descending into sub-apps."""
    for info in group.registered_commands:
        yield (*path, info.name or ""), info.callback
    for sub in group.registered_groups:
        assert sub.typer_instance is not None
        yield from _commands(sub.typer_instance, (*path, sub.name or ""))


def _groups(group: typer.Typer, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for sub in group.registered_groups:
        assert sub.typer_instance is not None
        yield (*path, sub.name or "")
        yield from _groups(sub.typer_instance, (*path, sub.name or ""))


COMMANDS = sorted(_commands(app), key=lambda c: c[0])
GROUPS = sorted(_groups(app))


def test_the_walk_finds_the_known_commands_and_groups() -> None:
    paths = {p for p, _ in COMMANDS}
    assert {("train",), ("eval",), ("assets", "fetch"), ("persona", "extract"), ("persona", "traits", "list")} <= paths
    assert {("assets",), ("traits",), ("persona",), ("persona", "traits"), ("judges",)} <= set(GROUPS)
    assert all(name for path in paths for name in path), "every command is registered under an explicit name"


@pytest.mark.parametrize(("path", "callback"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_is_a_module_level_function_of_a_cli_module(path: tuple[str, ...], callback: object) -> None:
    assert callable(callback)
    module_name = callback.__module__
    assert module_name in COMMAND_MODULES, f"`lpa {' '.join(path)}` comes from {module_name}"
    assert "<locals>" not in callback.__qualname__, f"`lpa {' '.join(path)}` is a closure inside register()"
    module = importlib.import_module(module_name)
    assert getattr(module, callback.__name__, None) is callback


@pytest.mark.parametrize("path", [(), *GROUPS, *(p for p, _ in COMMANDS)], ids=lambda p: " ".join(p) or "lpa")
def test_help_of_every_command_and_group_works(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
