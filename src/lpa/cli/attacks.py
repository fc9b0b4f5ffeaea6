"""CLI: `lpa attacks list` and `lpa attacks show NAME` (what each attack does and its settings)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="List the attack families and their settings.", no_args_is_help=True)
    group.command("list")(list_attacks)
    group.command("show")(show_attack)
    app.add_typer(group, name="attacks")


def _default(field) -> str:  # noqa: ANN001
    if field.default_factory is not None:
        return repr(field.default_factory())
    return "required" if field.is_required() else repr(field.default)


def list_attacks() -> None:
    """Every registered attack: name, white-box or not, description, arguments with defaults."""
    from rich.console import Console
    from rich.table import Table

    from lpa.eval.attacks import ATTACKS

    table = Table("name", "needs model", "description", "arguments (defaults)")
    for name, cls in ATTACKS.items():
        args = ", ".join(f"{k}={_default(f)}" for k, f in cls.Args.model_fields.items() if k not in _LONG)
        table.add_row(name, "yes" if cls.needs_model else "no", cls.description, args or "-")
    Console().print(table)


_LONG = {"template", "instruction"}  # long text defaults, shown by `lpa attacks show`


def show_attack(name: str = typer.Argument(..., help="Attack name (see `lpa attacks list`).")) -> None:
    """One attack's description and every argument with its default and meaning."""
    from rich.console import Console
    from rich.table import Table

    from lpa.eval.attacks import ATTACKS

    cls = ATTACKS.get(name)
    console = Console()
    console.print(f"[bold]{name}[/] ({'white-box / adaptive' if cls.needs_model else 'prompt transform'})")
    console.print(cls.description, highlight=False)
    table = Table("argument", "default", "description")
    for key, field in cls.Args.model_fields.items():
        table.add_row(key, _default(field), field.description or "")
    console.print(table)
    console.print(f"Use as: lpa eval --attacks '{name}:key=value,key=value'", highlight=False)
