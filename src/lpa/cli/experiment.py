"""CLI: `lpa experiment SPEC.yaml` and `lpa demo`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from lpa.cli.common import DataDirOption, SetOption, model_option

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
    plan: bool = typer.Option(False, "--plan", help="Print the cost estimate (unit times measured from finished "
                              "cells or given in the spec's plan block) and the smallest detectable ASR difference, "
                              "then stop."),
    report_only: bool = typer.Option(False, "--report-only", help="Only aggregate the cells already finished."),
    only: list[str] | None = typer.Option(None, "--only", metavar="KEY=V1,V2",
                                          help="Compute only matching cells (KEY: model, method, seed; repeatable); "
                                          "the report still covers every finished cell."),
    launcher: str | None = typer.Option(None, "--launcher", help="Submit every unfinished cell as a job instead of "
                                        "running here: slurm (a job array) or local (subprocesses, for testing). "
                                        "Collect with --report-only."),
    partition: str | None = typer.Option(None, "--partition", help="SLURM partition for the cell jobs."),
    gpus_per_cell: int = typer.Option(0, "--gpus-per-cell", help="GPUs per cell job."),
    cpus_per_cell: int = typer.Option(4, "--cpus-per-cell", help="CPU cores per cell job."),
    mem_gb: int = typer.Option(32, "--mem-gb", help="Memory per cell job (GiB)."),
    time_min: int = typer.Option(1440, "--time-min", help="Wall-time limit per cell job (minutes)."),
    wait: bool = typer.Option(False, "--wait", help="With --launcher: block until the jobs end, then report."),
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
    if plan:
        from lpa.experiments.plan import format_plan
        from lpa.experiments.plan import plan as make_plan

        work, notes = make_plan(config)
        typer.echo(format_plan(config, _selected(work, todo), notes))
        return
    if dry_run:
        from lpa.experiments.grid import check_experiment

        check_experiment(config)  # what every run checks first: training configs, suites, benchmark files
        for cell in todo:
            console.print(f"  {cell.model} · {cell.entry.name} · seed {'all' if cell.seed is None else cell.seed}")
        return
    if launcher is not None and not report_only:
        if not _launch(console, config, filters, launcher, partition, gpus_per_cell, cpus_per_cell, mem_gb, time_min,
                       wait):
            return
        report_only = True
    result = run_experiment(config, console=console, report_only=report_only, only=filters)
    _print_summary(console, config, result)


def _launch(console: Console, config: ExperimentSpec, filters: dict[str, list[str]], launcher: str,
            partition: str | None, gpus: int, cpus: int, mem_gb: int, time_min: int, wait: bool) -> bool:
    """Submit the unfinished cells; True when the caller should go on and report (after --wait)."""
    import gc

    from lpa.config import validate_config
    from lpa.experiments.launch import LaunchSettings, launch
    from lpa.experiments.launch import wait as wait_for

    settings = validate_config(LaunchSettings, dict(launcher=launcher, partition=partition, gpus_per_cell=gpus,
                                                     cpus_per_cell=cpus, mem_gb=mem_gb, time_min=time_min),
                               source="launcher options")
    submitted = launch(config, settings, filters)
    if not submitted:
        console.print("Every selected cell is finished; nothing submitted.")
        return True
    for job in submitted:
        console.print(f"  job {job.job_id}: {job.cell}")
    console.print(f"{len(submitted)} job(s) submitted ({launcher}); logs in {config.out_dir}/_jobs. "
                  "Collect finished cells with --report-only.")
    if wait:
        states = wait_for(submitted)
        console.print("job states: " + ", ".join(f"{k}={v}" for k, v in states.items()))
    submitted.clear()
    gc.collect()  # submitit's job objects, released while the interpreter is still whole
    return wait


def _selected(work: list, todo: list) -> list:
    """The plan rows of the cells ``--only`` kept."""
    keep = {(c.model, c.entry.name, "all" if c.seed is None else str(c.seed)) for c in todo}
    return [w for w in work if (w.model, w.method, w.seed) in keep]


def demo(
    model: str = model_option("qwen2.5-coder-0.5b", help="Model spec (default: the embedded model that refuses)."),
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Output folder (a rerun resumes)."),
    data_dir: str | None = DataDirOption,
    steps: int | None = typer.Option(None, help="LPA training steps (default 4)."),
    n: int = typer.Option(40, help="Harmful and XSTest-safe prompts evaluated per model."),
    max_new_tokens: int = typer.Option(48, help="Tokens generated per evaluation prompt."),
    mmlu: int = typer.Option(30, help="MMLU questions for the utility check (0 = skip)."),
) -> None:
    """Train faithful LPA on the embedded Qwen model, evaluate base vs LPA, print the headline, write the report."""
    import time

    from rich.console import Console

    from lpa.experiments import run_experiment
    from lpa.experiments.demo import demo_spec
    from lpa.plugins import spec_name

    console = Console(width=100)
    start = time.perf_counter()
    config = demo_spec(out, model=model, data_dir=data_dir, steps=steps, max_new_tokens=max_new_tokens, mmlu=mmlu, n=n)
    benches = [spec_name(b) for b in config.eval.benchmarks]
    console.print(f"[bold]lpa demo[/]: train LPA (faithful) on {model}, then evaluate base vs LPA on {', '.join(benches)}")
    result = run_experiment(config, console=console)
    _print_headline(console, config, result)
    from lpa.experiments.demo import cost_line

    console.print(cost_line(result.records), highlight=False)
    console.print(f"wall time {time.perf_counter() - start:.0f} s")


def _print_headline(console: Console, config: ExperimentSpec, result: ExperimentResult) -> None:
    from rich.table import Table

    from lpa.experiments.demo import headline
    from lpa.plugins import spec_name

    judge = spec_name(config.eval.judges[0])
    from lpa.experiments.aggregate import judge_versions
    from lpa.experiments.demo import attack_kappas
    from lpa.report.judges import kappa_note

    versions = judge_versions(result.records, judge)
    note = kappa_note(judge, versions)
    title = f"{config.models[0]} · judge: {judge} ({note} on labelled answers; κ per attack beside it) · 95% CI"
    table = Table("", "base", "lpa", title=title, width=100)
    for row in headline(result.summary, judge, kappas=attack_kappas(judge, versions)):
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
