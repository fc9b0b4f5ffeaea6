"""CLI: `lpa models`, `lpa chat`, `lpa generate`."""

from __future__ import annotations

from pathlib import Path

import typer

from lpa.cli.common import AdapterOption, DeviceOption, DtypeOption, ModelOption


def register(app: typer.Typer) -> None:
    app.command("models")(list_models)
    app.command("chat")(chat)
    app.command("generate")(generate_cmd)


def list_models() -> None:
    """List built-in model aliases (any HF id or local checkpoint also works)."""
    from rich.console import Console
    from rich.table import Table

    from lpa.assets import find_asset
    from lpa.models import ALIASES

    table = Table("alias", "description", "source")
    for alias in ALIASES.values():
        local = find_asset(alias.asset) if alias.asset else None
        if local is not None:
            source = str(local)
        elif alias.asset:
            source = f"offline asset {alias.asset!r} (fetched on first use; or {alias.hub_id})"
        else:
            source = alias.hub_id or ""
        table.add_row(alias.name, alias.description, source)
    Console().print(table)


def chat(
    model: str = ModelOption,
    adapter: Path | None = AdapterOption,
    system: str | None = typer.Option(None, help="System prompt."),
    max_new_tokens: int = typer.Option(256, help="Maximum tokens per answer."),
    device: str = DeviceOption,
    dtype: str = DtypeOption,
) -> None:
    """Chat interactively with a model (and optional adapter). Empty line or Ctrl-D quits."""
    from rich.console import Console

    from lpa.generation import GenerationSettings, generate
    from lpa.models import load_model

    console = Console()
    with console.status(f"loading {model}..."):
        lm, tokenizer = load_model(model, adapter=adapter, device=device, dtype=dtype)
    history: list[dict[str, str]] = []
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    console.print("[dim]Type a message; an empty line quits.[/]")
    while True:
        try:
            user = console.input("[bold green]you>[/] ")
        except EOFError:
            break
        if not user.strip():
            break
        history.append({"role": "user", "content": user})
        answer = generate(lm, tokenizer, [history], settings, system=system)[0].text
        history.append({"role": "assistant", "content": answer})
        console.print(f"[bold cyan]model>[/] {answer}", highlight=False)


def generate_cmd(
    prompts: Path = typer.Option(..., "--prompts", "-p", help="JSONL with 'prompt' or 'messages' (+ optional 'id'), or .txt."),
    out: Path = typer.Option(..., "--out", "-o", help="Output JSONL; a rerun skips prompts already in it."),
    model: str = ModelOption,
    adapter: Path | None = AdapterOption,
    system: str | None = typer.Option(None, help="System prompt for every prompt."),
    max_new_tokens: int = typer.Option(128, help="Maximum new tokens per prompt."),
    batch_size: int = typer.Option(16, help="Prompts per batch."),
    do_sample: bool = typer.Option(False, "--sample/--greedy", help="Sample or decode greedily."),
    temperature: float = typer.Option(1.0, help="Sampling temperature."),
    seed: int = typer.Option(0, help="Sampling seed."),
    device: str = DeviceOption,
    dtype: str = DtypeOption,
) -> None:
    """Batched generation from a prompts file into a JSONL file (resumable)."""
    from rich.console import Console

    from lpa.config import validate_config
    from lpa.generation import GenerationSettings, check_generate_paths, generate_jsonl, read_prompts
    from lpa.models import load_model

    # every user mistake fails here, before the model loads
    settings = validate_config(GenerationSettings, dict(
        max_new_tokens=max_new_tokens, batch_size=batch_size, do_sample=do_sample, temperature=temperature, seed=seed
    ), source="generation options")
    read_prompts(prompts)
    check_generate_paths(prompts, out)
    lm, tokenizer = load_model(model, adapter=adapter, device=device, dtype=dtype)
    count = generate_jsonl(lm, tokenizer, prompts, out, settings, system=system)
    Console().print(f"{count} new generations written to {out}")
