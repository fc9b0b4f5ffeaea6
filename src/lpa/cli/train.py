"""CLI command: ``lpa train`` (thin wrapper over :func:`lpa.training.train`)."""

from __future__ import annotations

from pathlib import Path

import typer

from lpa.cli.common import (
    ConfigOption,
    ReportToOption,
    SetOption,
    data_dir_option,
    device_option,
    model_option,
    parse_trackers,
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    app.command("train")(train_cmd)


def train_cmd(
    method: str = typer.Option(None, "--method", help="Training method: lpa | sft | ... (see lpa.training.METHODS)."),
    model: str = model_option(None, help="Model spec: alias, HF id, local dir or .gguf."),
    traits: str = typer.Option(None, "--traits", "-t", help="Built-in trait set name or a .yaml/.csv file."),
    layout: str = typer.Option(None, "--layout", help="Trait data layout: faithful (default; only 'disagree' "
                               "statements under attack, 'agree' ones as the KL anchor) | mixed (ablation)."),
    preset: str = typer.Option(None, "--preset", "-p", help="Settings preset: paper | embedded."),
    out: Path = typer.Option(None, "--out", "-o", help="Run directory (rerun the same command to resume)."),
    steps: int = typer.Option(None, "--steps", help="Training steps."),
    seed: int = typer.Option(None, "--seed", help="Random seed."),
    batch_size: int = typer.Option(None, "--batch-size", help="Pair examples per step."),
    device: str = device_option(None, help="auto | cpu | cuda | cuda:N."),
    data_dir: str = data_dir_option(help="Folder for relative data paths (default $LPA_DATA_DIR)."),
    select: bool = typer.Option(False, "--select", help="Checkpoint selection: evaluate every selection.every "
                                "steps on a selection split (held-in attacks, borderline-safe prompts, MMLU by "
                                "generation, template answers) and keep the step chosen by selection.rule."),
    report_to: str = ReportToOption,
    config: Path = ConfigOption,
    overrides: list[str] = SetOption,
) -> None:
    """Train a LoRA adapter with latent adversarial training on trait statements (or a baseline).

    Runs on transformers.Trainer; rerunning the same command with the same --out resumes from the
    newest checkpoint in it (or prints the finished result).
    """
    from lpa.api import train

    result = train(method=method, model=model, traits=traits, layout=layout, preset=preset, out=out, steps=steps,
                   seed=seed, batch_size=batch_size, device=device, data_dir=data_dir,
                   report_to=parse_trackers(report_to), config=config, overrides=overrides,
                   select=select)
    s = result.summary
    typer.echo(f"{result.run_dir}: {s['steps_done']} steps in {s['wall_time_s']:.1f}s "
               f"({s['fwd_bwd_passes']} fwd+bwd passes, {s['n_train_examples']} examples)")
    if result.stopped:
        typer.echo(f"Stopped early: {result.stopped} (kept the last good adapter).")
    if s.get("selection"):
        sel = s["selection"]
        typer.echo(f"Selection: kept step {sel['step']} ({sel['reason']}); chose on {', '.join(sel['chose_on'])}; "
                   f"curve: {result.run_dir / sel['curve']}")
    typer.echo(f"Adapter: {result.adapter}")
