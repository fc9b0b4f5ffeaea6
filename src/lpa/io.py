"""Crash-safe file helpers: atomic writes and append-only JSONL that survives kill -9.

Every stage writes through these so that nothing already computed is lost on a crash and a
rerun can skip finished work.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from lpa.errors import LpaError


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` so readers see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        publish(tmp, path)  # mkstemp makes 0600 files; results should be readable like any other file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish(tmp: str | Path, path: str | Path) -> Path:
    """Move a finished temporary file into place with the umask's permissions.

    For files written by other libraries (safetensors, numpy), some of which create them 0600.
    """
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
    return Path(path)


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask is process-wide)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_plain(obj), indent=2, sort_keys=True, default=str) + "\n")


def _plain(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    return obj


def append_jsonl(path: str | Path, rows: Iterable[Any]) -> None:
    """Append rows, one JSON object per line, flushed and fsynced (a crash loses at most a partial line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(_plain(row), sort_keys=True, default=str, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: str | Path, *, missing_ok: bool = True) -> list[dict[str, Any]]:
    """Read a JSONL file, skipping a truncated last line left by a crash."""
    return list(iter_jsonl(path, missing_ok=missing_ok))


def iter_jsonl(path: str | Path, *, missing_ok: bool = True) -> Iterator[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        if missing_ok:
            return
        raise LpaError(f"File not found: {path}")
    with path.open(encoding="utf-8") as handle:
        lines = handle.readlines()
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):  # a partial line from an interrupted append
                return
            raise LpaError(f"{path}:{number}: not valid JSON ({exc.msg}).") from None


TABLE_SUFFIXES = (".csv", ".jsonl", ".json", ".yaml", ".yml", ".txt")


def read_table(path: str | Path, *, list_key: str | None = None) -> list[dict[str, Any]]:
    """Rows of a data file: the one reader for benchmarks, prompts, templates, labels and questions.

    CSV (header row), JSONL (one object a line), JSON or YAML (a list of objects, or an object
    holding one: ``list_key`` if given, else its first list), TXT (one ``prompt`` a line, with
    its 1-based ``line`` number).  Any problem is one :class:`LpaError` naming the file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise LpaError(f"{path}: unsupported file type {suffix!r} (use {', '.join(TABLE_SUFFIXES)}).")
    if not path.is_file():
        raise LpaError(f"File not found: {path}")
    try:
        if suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as handle:
                return [dict(row) for row in csv.DictReader(handle)]
        if suffix == ".jsonl":
            data: Any = read_jsonl(path, missing_ok=False)
        elif suffix == ".txt":
            lines = path.read_text(encoding="utf-8").splitlines()
            return [{"prompt": text.strip(), "line": n} for n, text in enumerate(lines, start=1) if text.strip()]
        elif suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    except (OSError, ValueError, csv.Error, yaml.YAMLError) as exc:
        raise LpaError(f"Cannot read {path}: {exc}") from None
    if isinstance(data, dict):
        data = data.get(list_key) if list_key else next((v for v in data.values() if isinstance(v, list)), None)
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        where = f" under {list_key!r}" if list_key else ""
        raise LpaError(f"{path}: expected a list of objects{where}.")
    return [dict(row) for row in data]


def digest(obj: Any) -> str:
    """Short stable hash of JSON-able data: the cache key of generations, judgements and cells."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def atomic_write_csv(path: str | Path, rows: Sequence[dict[str, Any]], fields: Sequence[str] | None = None) -> None:
    """Write dict rows as CSV (columns: ``fields``, else every key in order of first appearance)."""
    if fields is None:
        seen: list[str] = []
        for row in rows:
            seen += [k for k in row if k not in seen]
        fields = seen
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in row.items()})
    atomic_write_text(path, buffer.getvalue())
