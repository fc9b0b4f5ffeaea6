"""Options shared by CLI commands, so each is described once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lpa.errors import LpaError

MODEL_HELP = "HF model id, local checkpoint dir, .gguf file, or alias (see `lpa models`)."
ADAPTER_HELP = "PEFT adapter directory to apply (e.g. RUN/adapter)."
DEVICE_HELP = "auto | cpu | cuda | cuda:N | mps."
DATA_DIR_HELP = "Folder with local benchmark files (upstream file names); default $LPA_DATA_DIR."


# Factories for the few commands whose default or wording must differ (a YAML config supplies the value,
# a required adapter); the flags themselves are declared only here.
def model_option(default: Any = "smollm2-135m", help: str = MODEL_HELP) -> Any:
    """``--model/-m``."""
    return typer.Option(default, "--model", "-m", help=help)


def adapter_option(default: Any = None, help: str = ADAPTER_HELP) -> Any:
    """``--adapter/-a``."""
    return typer.Option(default, "--adapter", "-a", help=help)


def device_option(default: Any = "auto", help: str = DEVICE_HELP) -> Any:
    """``--device``."""
    return typer.Option(default, "--device", help=help)


def data_dir_option(help: str = DATA_DIR_HELP) -> Any:
    """``--data-dir`` (default None: $LPA_DATA_DIR)."""
    return typer.Option(None, "--data-dir", help=help)


ModelOption = model_option()
AdapterOption = adapter_option()
DeviceOption = device_option()
DtypeOption = typer.Option("auto", "--dtype", help="auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16.")
ConfigOption = typer.Option(None, "--config", "-c", help="YAML config file; CLI options and --set override it.")
SetOption = typer.Option(None, "--set", "-s", help="Override a config field: key.sub=value (repeatable).")
DataDirOption = data_dir_option()


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
