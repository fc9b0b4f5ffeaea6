"""CLI commands: ``lpa results pack | plots | table FOLDER...`` (archive, redraw and tabulate finished results)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    results_app = typer.Typer(help="Finished result folders: pack the answers, redraw the plots, tabulate studies "
                              "side by side.", no_args_is_help=True)
    results_app.command("pack")(pack)
    results_app.command("plots")(plots)
    results_app.command("table")(table)
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


def table(
    folders: list[Path] = typer.Argument(..., help="Study folders (a spec's `out`), e.g. one per scale; on a tie "
                                         "for a model and attack the first listed supplies the cells."),
    methods: str = typer.Option("", "--methods", "-m",
                                help="Comma-separated methods, in row order (cell folders' method names); default "
                                     "base,lpa,sft,lat-harmful,lat-harmful-4,refusal-sft, those the studies hold."),
    reference: str | None = typer.Option(None, "--reference", "-r",
                                         help="Second comparison: each method against this one; default sft when the "
                                              "studies hold it, '' for none; 'lpa' pairs against LPA's seeds' mean "
                                              "outcome per behaviour."),
    judge: str = typer.Option("cascade", "--judge", "-j", help="Judge whose verdicts fill the table."),
    benchmark: str = typer.Option("harmbench", "--benchmark", "-b", help="Harmful benchmark of the ASR columns."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also write the markdown to this file."),
) -> None:
    """One markdown table across finished studies: ASR per attack, XSTest-safe refusal, MMLU, template answers and
    the kept step per model and method, each paired against the same study's base (sign-flip p, seeds pooled) and
    against a reference method; MDE and the study and seeds behind every cell in footnotes. No model is loaded."""
    from lpa.experiments.cross_study import AUTO_REFERENCE, cross_study_table
    from lpa.io import atomic_write_text

    names = [m.strip() for m in methods.split(",") if m.strip()] or None
    chosen = AUTO_REFERENCE if reference is None else (reference.strip() or None)
    text = cross_study_table(folders, judge=judge, benchmark=benchmark, methods=names, reference=chosen)
    if out is not None:
        atomic_write_text(out, text + "\n")
    typer.echo(text)
