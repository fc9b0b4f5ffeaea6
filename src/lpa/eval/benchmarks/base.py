"""Benchmark plugin base: ``Benchmark(**args).load() -> list[Sample]``.

Each benchmark loads from its canonical public source (cached locally) or, when a data
directory is given (``--data-dir`` / ``$LPA_DATA_DIR``) holding the upstream file name, from
there.  Offline without a local copy, it raises an :class:`LpaError` naming the file it needs.

Lookup order for a file: the data directory, then the download cache
(``lpa.models.cache_root()/datasets``), then a download from the canonical URL (skipped when
``$LPA_OFFLINE`` or ``$HF_HUB_OFFLINE`` is set).  Hub files go through ``huggingface_hub`` at the
revision named in their URL.

Every file a benchmark reads is recorded with its sha256 and source (:attr:`Benchmark.data_files`);
files whose content lpa was tested with carry that hash (:data:`PINNED_SHA256`) and a different
content is reported, so a run never silently mixes two versions of a benchmark.
"""

from __future__ import annotations

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
        "lpa.eval.benchmarks.heldout",
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


# sha256 of the upstream files lpa's numbers were produced with (byte-for-byte upstream copies).
PINNED_SHA256: dict[str, str] = {
    "harmbench_behaviors_text_val.csv": "7bfaaa5e2b9b95002c89e2d33c019f58e9e8496e2fc65d368f1eeb8179e69534",
    "advbench_behaviors.csv": "0e635254df9065ae6f8d074534b660fa7a361d1ad269e2c8e1b7377961802a86",
    "adv_training_behaviors.csv": "73b38848f6a38e1ad3b67747fc9412c8bac114a12cedc2c26579a31387329f7a",
    "adv_training_behaviors_safe_responses.csv": "0a8b547ae00f99396d09f07bda9cb0413b302d60b43df902caa77b66bfd6c5d8",
    "xstest_prompts.csv": "11783fb294ed017473ee53c207d71f2161c7672c8d0b037501e78387f801cb5a",
    "harmful_train.json": "8f5c0eac0efd2a7f99084bbe8d0de2c465e31b1997184783c917969d9de9ece1",
    "harmful_val.json": "305f1d1e6dfa6c50a32d24a18ef815f42b5441eb83e6d7767d242107162fd9f4",
    "harmless_train.json": "86623b1f8a25aa35df153fc97a556dbcebb6a7c881538ae43ee479ca17f2e002",
    "harmless_val.json": "772010758e7d771ef4c7e5e4acdfd7598dcece1a6f383f20d382f640913a2a4d",
}


def sha256_file(path: str | Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_record(path: Path, source: Source, benchmark: str, origin: str) -> dict[str, Any]:
    """What a results file records about one benchmark file (content hash, where it came from)."""
    digest = sha256_file(path)
    pinned = source.sha256 or PINNED_SHA256.get(path.name)
    record = {"benchmark": benchmark, "file": path.name, "sha256": digest, "origin": origin, "path": str(path),
              "url": source.url, "pinned_sha256": pinned, "matches_pin": None if pinned is None else digest == pinned}
    if pinned is not None and digest != pinned:
        import logging

        logging.getLogger(__name__).warning(
            "%s: sha256 %s differs from the content lpa was tested with (%s); results may not be comparable.",
            path, digest[:12], pinned[:12])
    return record


def hub_file(url: str) -> tuple[str, str, str] | None:
    """(repo_id, revision, path) of a ``huggingface.co/datasets/<repo>/resolve/<revision>/<path>`` URL."""
    prefix = "https://huggingface.co/datasets/"
    if not url.startswith(prefix) or "/resolve/" not in url:
        return None
    repo, _, rest = url[len(prefix):].partition("/resolve/")
    revision, _, path = rest.partition("/")
    return repo, revision, path


@dataclass(frozen=True)
class Source:
    """Where a benchmark file lives: its upstream name(s) and canonical URL (raw file or HF ``resolve`` URL)."""

    filename: str
    url: str
    aliases: tuple[str, ...] = ()  # other accepted local names (e.g. another upstream's copy)
    gated: bool = False
    sha256: str | None = None  # expected content (default: PINNED_SHA256 by file name)


def fetch(source: Source, data_dir: str | Path | None, benchmark: str, timeout: float = 30.0) -> Path:
    """Path of a local copy of ``source``; downloads into the cache when online."""
    return fetch_recorded(source, data_dir, benchmark, timeout)[0]


def fetch_recorded(source: Source, data_dir: str | Path | None, benchmark: str,
                   timeout: float = 30.0) -> tuple[Path, dict[str, Any]]:
    """:func:`fetch` plus the file's record (sha256, origin) for the results."""
    names = (source.filename, *source.aliases)
    folder = data_dir_from_env(data_dir)
    if folder is not None:
        for name in names:
            if (folder / name).is_file():
                return folder / name, file_record(folder / name, source, benchmark, "data_dir")
    cache = download_cache()
    for name in names:
        if (cache / name).is_file():
            return cache / name, file_record(cache / name, source, benchmark, "cache")
    where = f"{folder}" if folder is not None else "a folder given by --data-dir or $LPA_DATA_DIR"
    hint = f"Benchmark {benchmark!r} needs the file {source.filename!r} (from {source.url}); put it in {where}"
    if offline():
        raise LpaError(f"{hint} (offline mode is set).")
    target = cache / source.filename
    try:
        hub = hub_file(source.url)
        if hub is not None:
            _hub_download(*hub, target)
        else:
            _download(source.url, target, timeout)
    except Exception as exc:  # no network, 404, gated dataset...
        extra = " The dataset is gated: accept its terms on the hub and download it by hand." if source.gated else ""
        raise LpaError(f"{hint}. Download failed: {exc}.{extra}") from None
    return target, file_record(target, source, benchmark, "download")


def _hub_download(repo_id: str, revision: str, path: str, target: Path) -> None:
    """Through huggingface_hub (auth, mirrors, its own cache) at the given revision."""
    import shutil
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, hf_hub_download

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    socket.getaddrinfo(host, 443)  # fail at once when offline (the hub client retries for ~30 s)

    local = hf_hub_download(repo_id, path, repo_type="dataset", revision=revision,
                            cache_dir=str(download_cache() / "hub"))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(local, tmp)
    tmp.replace(target)


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
        path, record = fetch_recorded(source, self.args.data_dir, self.name)  # type: ignore[attr-defined]
        self.data_files.append(record)
        return path

    @property
    def data_files(self) -> list[dict[str, Any]]:
        """Records of every file this benchmark read (sha256, origin, URL), for the results."""
        if "_data_files" not in self.__dict__:
            self.__dict__["_data_files"] = []
        return self.__dict__["_data_files"]
