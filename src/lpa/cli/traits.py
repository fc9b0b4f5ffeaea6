"""CLI commands: ``lpa traits list | show NAME | validate FILE``."""

from __future__ import annotations

from pathlib import Path

import typer

from lpa.errors import LpaError


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    traits_app = typer.Typer(help="Trait statement sets (built-in and your own YAML/CSV files).", no_args_is_help=True)
    traits_app.command("list")(list_sets)
    traits_app.command("show")(show)
    traits_app.command("validate")(validate)
    app.add_typer(traits_app, name="traits")


def list_sets() -> None:
    """List the built-in trait sets."""
    from rich.console import Console
    from rich.table import Table

    from lpa.traits import builtin_names, load_traits

    table = Table("name", "items", "agree", "disagree", "description")
    for name in builtin_names():
        traits = load_traits(name)
        targets = traits.summary()["target"]
        table.add_row(name, str(len(traits.items)), str(targets.get("agree", 0)), str(targets.get("disagree", 0)),
                      traits.description)
    Console().print(table)


def show(
    name: str = typer.Argument(..., help="Built-in set name or a .yaml/.csv file."),
    seed: int = typer.Option(0, "--seed", help="Seed for the shuffled ablation."),
) -> None:
    """Print every statement of a trait set with its target, family and polarity."""
    from rich.console import Console
    from rich.table import Table

    from lpa.traits import load_traits

    traits = load_traits(name, seed=seed)
    table = Table("#", "statement", "target", "family", "polarity", "severity", title=f"{traits.name}: {traits.description}")
    for i, item in enumerate(traits.items, start=1):
        table.add_row(str(i), item.statement, item.target, item.family, item.polarity, str(item.severity or ""))
    Console().print(table)


def validate(path: Path = typer.Argument(..., help="Trait file (.yaml/.yml/.csv).")) -> None:
    """Check a trait file (schema, duplicates) and screen it for named harmful acts."""
    from lpa.traits import load_trait_file, screen_statements

    traits = load_trait_file(path)
    flagged = screen_statements(i.statement for i in traits.items)
    summary = traits.summary()
    typer.echo(f"{path}: {summary['n']} statements; targets {summary['target']}; polarity {summary['polarity']}")
    if flagged:
        lines = "; ".join(f"{s!r} ({', '.join(k)})" for s, k in flagged)
        raise LpaError(f"{path}: {len(flagged)} statement(s) name a concrete harmful act: {lines}")
    typer.echo("OK: valid, and no statement names a concrete harmful act.")
