"""Options shared by CLI commands, so each is described once."""

from __future__ import annotations

from pathlib import Path

import typer

from lpa.errors import LpaError

ModelOption = typer.Option(
    "smollm2-135m", "--model", "-m", help="HF model id, local checkpoint dir, .gguf file, or alias (see `lpa models`)."
)
AdapterOption = typer.Option(None, "--adapter", "-a", help="PEFT adapter directory to apply (e.g. RUN/adapter).")
DeviceOption = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N | mps.")
DtypeOption = typer.Option("auto", "--dtype", help="auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16.")
ConfigOption = typer.Option(None, "--config", "-c", help="YAML config file; CLI options and --set override it.")
SetOption = typer.Option(None, "--set", "-s", help="Override a config field: key.sub=value (repeatable).")
DataDirOption = typer.Option(
    None, "--data-dir", help="Folder with local benchmark files (upstream file names); default $LPA_DATA_DIR."
)


ReportToOption = typer.Option(None, "--report-to", help="Comma list of experiment trackers, as transformers' "
                              "report_to: tensorboard (in RUN/runs/), wandb, trackio, mlflow, ... or none.")


def parse_trackers(value: str | None) -> list[str] | None:
    """'tensorboard,wandb' -> ['tensorboard', 'wandb']; 'none' -> []; None (not given) -> None."""
    if value is None:
        return None
    return [t.strip() for t in value.split(",") if t.strip() not in ("", "none")]


def existing_file(path: Path, what: str = "file") -> Path:

    if not path.is_file():
        raise LpaError(f"{what.capitalize()} not found: {path}")
    return path
