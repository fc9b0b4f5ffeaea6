"""Benchmark plugin base: ``Benchmark(**args).load() -> list[Sample]``.

Each benchmark loads from its canonical public source (cached locally) or, when a data
directory is given (``--data-dir`` / ``$LPA_DATA_DIR``) holding the upstream file name, from
there.  Offline without a local copy, it raises an :class:`LpaError` naming the file it needs.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field

from lpa.plugins import Plugin, PluginArgs
from lpa.records import Sample
from lpa.registry import Registry

# Modules that register benchmarks; add one line per new module.
BENCHMARKS: Registry[type[Benchmark]] = Registry("benchmark", modules=[])


def register_benchmark(cls: type[Benchmark]) -> type[Benchmark]:
    BENCHMARKS.register(cls.name, cls)
    return cls


def data_dir_from_env(explicit: str | Path | None = None) -> Path | None:
    value = explicit or os.environ.get("LPA_DATA_DIR")
    return Path(value).expanduser() if value else None


class BenchmarkArgs(PluginArgs):
    data_dir: str | None = Field(None, description="Folder with the upstream files (default $LPA_DATA_DIR).")
    limit: int | None = Field(None, ge=1, description="Keep only the first N samples.")


class Benchmark(Plugin):
    kind = "benchmark"
    Args = BenchmarkArgs
    description: str = ""

    def load(self) -> list[Sample]:
        raise NotImplementedError
