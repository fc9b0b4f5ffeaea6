"""CLI: `lpa experiment SPEC.yaml` and `lpa demo`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from lpa.cli.common import DataDirOption, SetOption

if TYPE_CHECKING:
    from rich.console import Console

    from lpa.experiments.grid import ExperimentResult
    from lpa.experiments.spec import ExperimentSpec


def register(app: typer.Typer) -> None:
    app.command("experiment")(experiment)
    app.command("demo")(demo)


def experiment(
    spec: Path = typer.Argument(..., help="Experiment spec (YAML): models x methods x seeds x eval suite."),
    overrides: list[str] | None = SetOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the spec (training configs, eval files) and list the cells "
                                 "without running; every run does the same checks first."),
    report_only: bool = typer.Option(False, "--report-only", help="Only aggregate the cells already finished."),
    only: list[str] | None = typer.Option(None, "--only", metavar="KEY=V1,V2",
                                          help="Compute only matching cells (KEY: model, method, seed; repeatable); "
                                          "the report still covers every finished cell."),
) -> None:
    """Run every cell of an experiment (skipping finished ones) and write report.md, results.csv, plots."""
    from rich.console import Console

    from lpa.cli.common import existing_file
    from lpa.experiments import load_spec, run_experiment
    from lpa.experiments.grid import cells, parse_only, select_cells

    console = Console()
    config = load_spec(existing_file(spec, "spec file"), overrides)
    filters = parse_only(only)
    todo = select_cells(cells(config), filters)
    console.print(f"[bold]{config.name}[/]: {len(todo)} cells -> {config.out_dir}")
    if dry_run:
        from lpa.experiments.grid import check_experiment

        check_experiment(config)  # what every run checks first: training configs, suites, benchmark files
        for cell in todo:
            console.print(f"  {cell.model} · {cell.entry.name} · seed {'all' if cell.seed is None else cell.seed}")
        return
    result = run_experiment(config, console=console, report_only=report_only, only=filters)
    _print_summary(console, config, result)


def demo(
    model: str = typer.Option("qwen2.5-coder-0.5b", "--model", "-m", help="Model spec (default: the embedded model that refuses)."),
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Output folder (a rerun resumes)."),
    data_dir: str | None = DataDirOption,
    steps: int | None = typer.Option(None, help="LPA training steps (default 6)."),
    n: int = typer.Option(40, help="Harmful and XSTest-safe prompts evaluated per model."),
    max_new_tokens: int = typer.Option(48, help="Tokens generated per evaluation prompt."),
    mmlu: int = typer.Option(30, help="MMLU questions for the utility check (0 = skip)."),
) -> None:
    """Train faithful LPA on the embedded Qwen model, evaluate base vs LPA, print the headline, write the report."""
    import time

    from rich.console import Console

    from lpa.experiments import run_experiment
    from lpa.experiments.demo import demo_spec

    console = Console(width=100)
    start = time.perf_counter()
    config = demo_spec(out, model=model, data_dir=data_dir, steps=steps, max_new_tokens=max_new_tokens, mmlu=mmlu, n=n)
    benches = [b if isinstance(b, str) else b["name"] for b in config.eval.benchmarks]
    console.print(f"[bold]lpa demo[/]: train LPA (faithful) on {model}, then evaluate base vs LPA on {', '.join(benches)}")
    result = run_experiment(config, console=console)
    _print_headline(console, config, result)
    console.print(f"wall time {time.perf_counter() - start:.0f} s")


def _print_headline(console: Console, config: ExperimentSpec, result: ExperimentResult) -> None:
    from rich.table import Table

    from lpa.experiments.demo import headline

    judge = str(config.eval.judges[0] if isinstance(config.eval.judges[0], str) else config.eval.judges[0]["name"])
    from lpa.eval.judges.validate import kappa_note
    from lpa.experiments.aggregate import judge_versions

    note = kappa_note(judge, judge_versions(result.records, judge))
    title = f"{config.models[0]} · judge: {judge} ({note} on labelled answers) · 95% bootstrap CI"
    table = Table("", "base", "lpa", title=title, width=100)
    for row in headline(result.summary, judge):
        table.add_row(*row)
    console.print(table)
    from lpa.experiments.demo import detectable_line

    console.print(detectable_line(config), highlight=False)
    console.print(f"everything else: {result.report}")


def _print_summary(console: Console, config: ExperimentSpec, result: ExperimentResult) -> None:
    """The headline table: ASR / over-refusal / misclassification / utility / collapse, by method."""
    from rich.table import Table

    from lpa.experiments.aggregate import format_cell

    methods = [m.name for m in config.methods]
    index = {(r["method"], r["benchmark"], r["attack"], r["judge"], r["metric"]): r
             for r in result.summary}
    # Headline only: direct and worst-case ("any") attacks; report.md has every attack.
    keys = sorted({(r["benchmark"], r["attack"], r["judge"], r["metric"]) for r in result.summary
                   if r["metric"] in ("asr", "refusal_rate", "misclassification", "accuracy", "template_leak_rate")
                   and (r["attack"] in ("direct", "any", "-") or r["benchmark"] == "all")},
                  key=lambda k: (k[3], k[0], k[1], k[2]))
    table = Table("metric", "benchmark", "attack", "judge", *methods,
                  title="mean ± sd over seeds (single runs: bootstrap 95% CI)")
    for bench, attack, judge, metric in keys:
        table.add_row(metric, bench, attack, judge,
                      *(format_cell(index.get((method, bench, attack, judge, metric))) for method in methods))
    console.print(table)
    console.print(f"report: {result.report}")
