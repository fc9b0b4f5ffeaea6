"""CLI commands: ``lpa results pack FOLDER... | plots FOLDER...`` (archive finished result folders)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    results_app = typer.Typer(help="Archive finished result folders: pack the answers, redraw the plots.",
                              no_args_is_help=True)
    results_app.command("pack")(pack)
    results_app.command("plots")(plots)
    app.add_typer(results_app, name="results")


def pack(folders: list[Path] = typer.Argument(..., help="Finished result folders (eval runs, experiment cells).")) -> None:
    """Gzip every answer file (generations, judgements, outcomes, utility .jsonl) for archiving; readers read the .gz.

    Each .gz is deterministic (gzip -n), written atomically and read back before the plain file is removed; a rerun
    of a packed run unpacks before it appends.
    """
    from lpa.report.archive import pack as pack_folder

    for folder in folders:
        done = pack_folder(folder)
        before, after = sum(f.plain_bytes for f in done), sum(f.packed_bytes for f in done)
        typer.echo(f"{folder}: packed {len(done)} file(s), {before:,} -> {after:,} bytes")


def plots(folders: list[Path] = typer.Argument(..., help="Folders holding evaluation runs (results.json).")) -> None:
    """Redraw plots/ of every evaluation run under each folder from its results.json (no model needed)."""
    from lpa.report.archive import redraw_plots

    for folder in folders:
        typer.echo(f"{folder}: drew {len(redraw_plots(folder))} plot(s)")
