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


def list_attacks(
    as_json: bool = typer.Option(False, "--json", help="One JSON object per attack (name, needs_model, "
                                 "description, args with default and description)."),
) -> None:
    """Every registered attack, one block each: name, white-box or not, description, every argument.

    Plain wrapped text (nothing cut at the terminal's width); ``--json`` for scripts.
    """
    import json
    import shutil
    import textwrap

    from lpa.eval.attacks import ATTACKS

    width = max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))
    entries = [_entry(name, cls) for name, cls in ATTACKS.items()]
    if as_json:
        typer.echo(json.dumps(entries, indent=2, default=str))
        return
    blocks = []
    for entry in entries:
        kind = "white-box / adaptive: needs the model" if entry["needs_model"] else "prompt transform"
        lines = [f"{entry['name']}  ({kind})"]
        lines += textwrap.wrap(entry["description"], width, initial_indent="  ", subsequent_indent="  ")
        for arg, info in entry["args"].items():
            default = info["default"] if arg not in _LONG else "(long text; see `lpa attacks show`)"
            lines += textwrap.wrap(f"{arg} = {default}" + (f": {info['description']}" if info["description"] else ""),
                                   width, initial_indent="    ", subsequent_indent="      ")
        blocks.append("\n".join(lines))
    typer.echo("\n\n".join(blocks))
    typer.echo("\nUse as: lpa eval --attacks 'NAME:key=value,key=value' (details: lpa attacks show NAME)")


def _entry(name: str, cls) -> dict:  # noqa: ANN001
    return {"name": name, "needs_model": bool(cls.needs_model), "description": cls.description,
            "args": {k: {"default": _default(f), "value": _value(f), "required": f.is_required(),
                         "description": f.description or ""} for k, f in cls.Args.model_fields.items()}}


def _value(field):  # noqa: ANN001, ANN202
    """The default as data (for --json); None when required."""
    if field.default_factory is not None:
        return field.default_factory()
    return None if field.is_required() else field.default


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
