"""Benchmark plugin base: ``Benchmark(**args).load() -> list[Sample]``.

Each benchmark loads from its canonical public source (cached locally) or, when a data
directory is given (``--data-dir`` / ``$LPA_DATA_DIR``) holding the upstream file name, from
there.  Offline without a local copy, it raises an :class:`LpaError` naming the file it needs.

Lookup order for a file: the data directory, then the download cache
(``lpa.models.cache_root()/datasets``), then a download from the canonical URL (skipped when
``$LPA_OFFLINE`` or ``$HF_HUB_OFFLINE`` is set).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from lpa.errors import LpaError
from lpa.plugins import Plugin, PluginArgs
from lpa.records import Sample
from lpa.registry import Registry

# Modules that register benchmarks; add one line per new module.
BENCHMARKS: Registry[type[Benchmark]] = Registry(
    "benchmark",
    modules=[
        "lpa.eval.benchmarks.smoke",
        "lpa.eval.benchmarks.harmbench",
        "lpa.eval.benchmarks.harmful_sets",
        "lpa.eval.benchmarks.overrefusal",
        "lpa.eval.benchmarks.custom",
    ],
)


def register_benchmark(cls: type[Benchmark]) -> type[Benchmark]:
    BENCHMARKS.register(cls.name, cls)
    return cls


def data_dir_from_env(explicit: str | Path | None = None) -> Path | None:
    value = explicit or os.environ.get("LPA_DATA_DIR")
    return Path(value).expanduser() if value else None


def download_cache() -> Path:
    from lpa.models import cache_root

    return cache_root() / "datasets"


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in {"1", "true", "yes"} for v in ("LPA_OFFLINE", "HF_HUB_OFFLINE"))


@dataclass(frozen=True)
class Source:
    """Where a benchmark file lives: its upstream name(s) and canonical URL (raw file or HF ``resolve`` URL)."""

    filename: str
    url: str
    aliases: tuple[str, ...] = ()  # other accepted local names (e.g. another upstream's copy)
    gated: bool = False


def fetch(source: Source, data_dir: str | Path | None, benchmark: str, timeout: float = 30.0) -> Path:
    """Path of a local copy of ``source``; downloads into the cache when online."""
    names = (source.filename, *source.aliases)
    folder = data_dir_from_env(data_dir)
    if folder is not None:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    cache = download_cache()
    for name in names:
        if (cache / name).is_file():
            return cache / name
    where = f"{folder}" if folder is not None else "a folder given by --data-dir or $LPA_DATA_DIR"
    hint = f"Benchmark {benchmark!r} needs the file {source.filename!r} (from {source.url}); put it in {where}"
    if offline():
        raise LpaError(f"{hint} (offline mode is set).")
    target = cache / source.filename
    try:
        _download(source.url, target, timeout)
    except Exception as exc:  # no network, 404, gated dataset...
        extra = " The dataset is gated: accept its terms on the hub and download it by hand." if source.gated else ""
        raise LpaError(f"{hint}. Download failed: {exc}.{extra}") from None
    return target


def _download(url: str, target: Path, timeout: float) -> None:
    import urllib.request

    from lpa.io import atomic_write_text

    headers = {"User-Agent": "lpa"}
    token = os.environ.get("HF_TOKEN")
    if token and "huggingface.co" in url:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (fixed https URLs)
        data = response.read()
    atomic_write_text(target, data.decode("utf-8"))


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV, JSONL, JSON (list of objects) or TXT (one ``prompt`` per line) file."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as handle:
                return [dict(row) for row in csv.DictReader(handle)]
        if suffix == ".jsonl":
            from lpa.io import read_jsonl

            return read_jsonl(path, missing_ok=False)
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):  # {"data": [...]} or similar
                data = next((v for v in data.values() if isinstance(v, list)), [])
            return [dict(row) for row in data]
        if suffix == ".txt":
            lines = path.read_text(encoding="utf-8").splitlines()
            return [{"prompt": line.strip()} for line in lines if line.strip()]
    except (OSError, ValueError, csv.Error) as exc:
        raise LpaError(f"Cannot read {path}: {exc}") from None
    raise LpaError(f"{path}: unsupported file type {suffix!r} (use .csv, .jsonl, .json or .txt).")


def column(row: dict[str, Any], names: Sequence[str], path: Any = "") -> Any:
    """The first of ``names`` present in ``row`` (upstream files differ in capitalisation)."""
    for name in names:
        if name in row and row[name] not in (None, ""):
            return row[name]
    raise LpaError(f"{path}: no column {' / '.join(names)} in a row with columns {sorted(row)}.")


class BenchmarkArgs(PluginArgs):
    data_dir: str | None = Field(None, description="Folder with the upstream files (default $LPA_DATA_DIR).")
    limit: int | None = Field(None, ge=1, description="Keep only the first N samples.")


class Benchmark(Plugin):
    """Subclasses implement :meth:`samples`; :meth:`load` applies ``limit``."""

    kind = "benchmark"
    Args = BenchmarkArgs
    description: ClassVar[str] = ""
    sources: ClassVar[tuple[Source, ...]] = ()

    def load(self) -> list[Sample]:
        samples = self.samples()
        if self.args.limit is not None:  # type: ignore[attr-defined]
            samples = samples[: self.args.limit]  # type: ignore[attr-defined]
        return samples

    def samples(self) -> list[Sample]:
        raise NotImplementedError

    def fetch(self, source: Source) -> Path:
        return fetch(source, self.args.data_dir, self.name)  # type: ignore[attr-defined]
