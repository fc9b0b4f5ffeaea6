"""Crash-safe file helpers: atomic writes and append-only JSONL that survives kill -9.

Every stage writes through these so that nothing already computed is lost on a crash and a
rerun can skip finished work.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from lpa.errors import FolderBusy, LpaError

log = logging.getLogger(__name__)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` so readers see either the old file or the complete new one."""
    with atomic_path(path) as tmp:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path, *, directory: bool = False) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write (a file, or a folder with ``directory``); published on success.

    The one write-temp-then-rename in lpa: readers see the old ``path`` or the complete new one,
    a crash leaves only a hidden temporary, and an error removes it.  Any library can write the
    temporary (``torch.save``, ``save_pretrained``, numpy, safetensors).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory:
            os.chmod(tmp, 0o777 & ~_umask())
            if path.is_dir():  # os.replace cannot replace a non-empty folder: move the old one aside first
                old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
                os.replace(path, old / path.name)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        else:
            publish(tmp, path)  # mkstemp makes 0600 files; results should be readable like any other file
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
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
    """Append rows as whole JSON lines, fsynced: the one appender of every JSONL file lpa writes.

    A partial last line (a crash or a full disk mid-append) is cut first and reported, so new rows
    never glue onto it; a failed write (disk full) is rolled back to the last whole line.
    """
    path = Path(path)
    data = "".join(json.dumps(_plain(row), sort_keys=True, default=str, ensure_ascii=False) + "\n" for row in rows)
    if not data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # unbuffered: a failed write can be undone exactly
    try:
        repair_jsonl(path, fd)
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data.encode("utf-8"))
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


def repair_jsonl(path: str | Path, fd: int | None = None) -> int:
    """Cut a partial last line left by a crash (a file not ending in a newline); return the bytes cut."""
    path = Path(path)
    if fd is None:
        if not path.is_file():
            return 0
        fd = os.open(path, os.O_RDWR)
        try:
            return repair_jsonl(path, fd)
        finally:
            os.close(fd)
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return 0
    keep, end = 0, size
    while end > 0:  # find the last newline, reading backwards in blocks
        start = max(0, end - (1 << 16))
        cut = os.pread(fd, end - start, start).rfind(b"\n")
        if cut >= 0:
            keep = start + cut + 1
            break
        end = start
    os.ftruncate(fd, keep)
    log.warning("%s: dropped a partial last line (%d bytes) left by an interrupted write", path, size - keep)
    return size - keep


def read_jsonl(path: str | Path, *, missing_ok: bool = True, strict: bool = False) -> list[dict[str, Any]]:
    """Read a JSONL file; see :func:`iter_jsonl`."""
    return list(iter_jsonl(path, missing_ok=missing_ok, strict=strict))


PACKED_SUFFIX = ".gz"


def packed_path(path: str | Path) -> Path:
    """Where ``X.jsonl`` lies once packed for archiving: ``X.jsonl.gz`` (see :mod:`lpa.report.archive`)."""
    path = Path(path)
    return path.with_name(path.name + PACKED_SUFFIX)


def existing_jsonl(path: str | Path) -> Path:
    """``path`` when it holds rows, else its packed ``path.gz`` if there is one, else ``path``.

    Live runs append to the plain file; an archived run folder holds only the ``.gz``.  Readers
    ask here (or go through :func:`iter_jsonl`, which does) so both read the same.
    """
    path = Path(path)
    if path.name.endswith(PACKED_SUFFIX) or (path.is_file() and path.stat().st_size > 0):
        return path
    packed = packed_path(path)
    return packed if packed.is_file() else path


def jsonl_exists(path: str | Path) -> bool:
    """Whether a JSONL file is there, plain or packed."""
    return existing_jsonl(path).is_file()


def iter_jsonl(path: str | Path, *, missing_ok: bool = True, strict: bool = False) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file (or of its packed ``.gz``); every line must be a JSON object, reported if not.

    A cache lpa appended to (``strict=False``) may end in a partial line from a crash: it is skipped
    (the next append cuts it).  An input file (``strict=True``) gets no such tolerance.
    """
    path = existing_jsonl(path)
    if not path.exists():
        if missing_ok:
            return
        raise LpaError(f"File not found: {path}")
    try:
        if path.name.endswith(PACKED_SUFFIX):
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                lines = handle.readlines()
        else:
            with path.open(encoding="utf-8") as handle:
                lines = handle.readlines()
    except UnicodeDecodeError as exc:
        raise LpaError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError; a truncated .gz raises EOFError
        raise LpaError(f"Cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            if not strict and number == len(lines) and not line.endswith("\n"):  # torn by an interrupted append
                return
            raise LpaError(f"{path}:{number}: not valid JSON ({exc.msg}).") from None
        if not isinstance(row, dict):
            raise LpaError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}.")
        yield row


def unpack_jsonl(path: str | Path) -> bool:
    """Restore a packed ``path.gz`` as the plain ``path`` a run appends to; True if it did.

    A resumed or extended run must append to the file holding every earlier row, not start a new
    one beside the archive (which would regenerate everything): the plain file is written
    atomically first, the ``.gz`` removed after.
    """
    path = Path(path)
    packed = existing_jsonl(path)
    if packed == path:
        return False
    try:
        data = gzip.decompress(packed.read_bytes())
    except (OSError, EOFError) as exc:
        raise LpaError(f"Cannot unpack {packed}: {exc}") from None
    atomic_write_bytes(path, data)
    packed.unlink(missing_ok=True)  # two processes unpacking at once write the same bytes; one lock wins later
    log.info("%s: unpacked from %s to append to it", path, packed.name)
    return True


def pack_jsonl(path: str | Path) -> Path:
    """Compress a finished JSONL file to ``path.gz`` and remove the plain file; returns the ``.gz``.

    Deterministic (no file name, time 0: ``gzip -n``), so packing the same rows twice gives the same
    bytes.  The ``.gz`` is written atomically and read back before the plain file is removed, so a
    crash leaves at least one complete copy; a file a run is appending to (locked) or one ending in
    a partial line (an interrupted run) is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise LpaError(f"File not found: {path}")
    packed = packed_path(path)
    with run_lock(path):
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            raise LpaError(f"{path} ends in a partial line (an interrupted run): resume the run before packing it.")
        atomic_write_bytes(packed, gzip.compress(data, compresslevel=9, mtime=0))
        if gzip.decompress(packed.read_bytes()) != data:
            packed.unlink(missing_ok=True)
            raise LpaError(f"{packed} did not read back as {path.name}; the plain file is kept.")
        path.unlink()
    return packed


# -- locks and keyed caches ------------------------------------------------------------------------

_HELD: dict[str, tuple[int, int]] = {}  # resolved path -> (fd, holders in this process)


@contextlib.contextmanager
def run_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock (``flock``) on a file a run appends to, or on a run folder.

    A second process writing the same place gets an :class:`LpaError` at once instead of writing
    every row twice.  Re-entrant within one process (the eval runner locks its folder and files).
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    name = str(path.resolve())
    if name in _HELD:
        fd, count = _HELD[name]
        _HELD[name] = (fd, count + 1)
    else:  # a folder is locked itself (no lock file to leave behind); a file is created if missing
        fd = os.open(path, os.O_RDONLY) if path.is_dir() else os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderBusy(f"{path} is being written by another lpa process; wait for it to finish "
                             "or write to another --out.") from None
        _HELD[name] = (fd, 1)
    try:
        yield
    finally:
        fd, count = _HELD[name]
        if count > 1:
            _HELD[name] = (fd, count - 1)
        else:
            del _HELD[name]
            os.close(fd)  # closing releases the flock


def held_elsewhere(path: str | Path) -> bool:
    """Whether another process holds :func:`run_lock` on ``path`` now (a run in progress there)."""
    import fcntl

    path = Path(path)
    if not path.exists() or str(path.resolve()) in _HELD:
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class JsonlCache:
    """A keyed, append-only JSONL cache of one kind of row: the one cache every stage writes through.

    Rows carry ``cache`` (the kind) and, when given, ``run_key`` (what produced them: model,
    settings...).  Opening locks the file (:func:`run_lock`), cuts a partial last line and refuses
    a file holding rows of another kind or run (a prompts file given as ``--out``, another model's
    answers) with an error naming it.  A packed file (``X.jsonl.gz``, an archived run) is unpacked
    first, so a resumed run appends to every earlier row.

    ``untagged``: whether rows without a ``cache`` tag count (default yes).  The eval caches need it:
    the committed ``results/`` were written before rows were tagged (every ``generations``,
    ``judgements`` and ``utility`` file under ``results/scale*/``), and a cell rerun to add an attack,
    as ``results/README.md`` describes, resumes from them.  ``lpa generate`` passes False.
    """

    def __init__(self, path: str | Path, kind: str, *, key: str | Callable[[dict[str, Any]], str] = "key",
                 run_key: str | None = None, untagged: bool = True, lock: bool = True) -> None:
        self.path, self.kind, self.run_key, self.untagged = Path(path), kind, run_key, untagged
        self.key_of: Callable[[dict[str, Any]], str] = (lambda row: str(row[key])) if isinstance(key, str) else key
        if not self.path.is_dir():
            unpack_jsonl(self.path)  # before the lock, which creates the plain file
        self._lock: contextlib.AbstractContextManager[None] | None = (
            run_lock(self.path) if lock else contextlib.nullcontext())
        self._lock.__enter__()
        try:
            if not self.path.is_dir():
                repair_jsonl(self.path)
            self.rows: dict[str, dict[str, Any]] = {}
            for number, row in enumerate(iter_jsonl(self.path), start=1):
                self.rows[self._check(row, number)] = row
        except BaseException:
            self.close()
            raise

    def _check(self, row: dict[str, Any], number: int) -> str:
        """The row's key; an error naming the file if the row is not one of this cache's."""
        tagged = "cache" in row
        try:
            key = self.key_of(row)
        except (KeyError, TypeError):
            key = None
        if key is None or (tagged and row["cache"] != self.kind) or (not tagged and not self.untagged):
            what = f"{row['cache']!r} rows" if tagged else "rows lpa did not write"
            raise LpaError(f"{self.path}:{number} holds {what}, not a {self.kind!r} cache; write to a new file.")
        if self.run_key is not None and tagged and row.get("run_key") != self.run_key:
            who = f" (line {number}: model {row['model']}, adapter {row.get('adapter')})" if "model" in row else ""
            raise LpaError(f"{self.path} holds {self.kind} rows of another run: another model, adapter, system "
                           f"prompt or settings{who}; write to a new file.")
        return key

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def get(self, key: str) -> dict[str, Any] | None:
        return self.rows.get(key)

    def add(self, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append rows (tagged with the kind and run key) in one fsynced batch; returns them as stored."""
        tag = {"cache": self.kind} | ({"run_key": self.run_key} if self.run_key is not None else {})
        stored = [{**_plain(row), **tag} for row in rows]
        append_jsonl(self.path, stored)
        self.rows.update({self.key_of(r): r for r in stored})
        return stored

    def close(self) -> None:
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.__exit__(None, None, None)

    def __enter__(self) -> JsonlCache:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@contextlib.contextmanager
def open_cache(path: str | Path | None, kind: str, **kwargs: Any) -> Iterator[JsonlCache | None]:
    """A :class:`JsonlCache` on ``path``, closed on exit; None when there is no path (caching off)."""
    if not path:
        yield None
        return
    with JsonlCache(path, kind, **kwargs) as cache:
        yield cache


def read_text(path: str | Path) -> str:
    """A user's text file as UTF-8, or one :class:`LpaError` naming it (missing, unreadable, not UTF-8)."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LpaError(f"File not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise LpaError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8.") from None
    except OSError as exc:
        raise LpaError(f"Cannot read {path}: {exc.strerror or exc}") from None


def read_csv(path: str | Path) -> tuple[list[str], list[dict[str, Any]]]:
    """Header and rows of a CSV file (fields of any length); malformed files raise one :class:`LpaError`."""
    path = Path(path)
    csv.field_size_limit(_CSV_FIELD_LIMIT)  # the default 131,072 characters rejects long conversations
    try:
        reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
        rows = [dict(row) for row in reader]
    except csv.Error as exc:
        raise LpaError(f"{path}:{reader.line_num}: not valid CSV ({exc}).") from None
    for number, row in enumerate(rows, start=2):
        if None in row:
            raise LpaError(f"{path}:{number}: more fields than the header has columns.")
    return list(reader.fieldnames or []), rows


_CSV_FIELD_LIMIT = 1 << 30


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
    if suffix == ".csv":
        return read_csv(path)[1]
    if suffix == ".jsonl":
        data: Any = read_jsonl(path, missing_ok=False, strict=True)
    elif suffix == ".txt":
        lines = read_text(path).splitlines()
        return [{"prompt": text.strip(), "line": n} for n, text in enumerate(lines, start=1) if text.strip()]
    else:
        text = read_text(path)
        try:
            data = json.loads(text) if suffix == ".json" else (yaml.safe_load(text) or [])
        except (ValueError, yaml.YAMLError) as exc:
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


def writable_dir(path: str | Path, what: str = "--out") -> Path:
    """Create ``path`` as a folder lpa can write, or raise one clear error (a file there, read-only)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LpaError(f"{what} {path} is a file; give a folder.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LpaError(f"Cannot create {what} folder {path}: {exc.strerror or exc}.") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise LpaError(f"{what} folder {path} is not writable.")
    return path


def writable_file(path: str | Path, what: str = "--out") -> Path:
    """Check that ``path`` can be created or appended to (not a folder, parent writable), before any compute."""
    path = Path(path)
    if path.is_dir():
        raise LpaError(f"{what} {path} is a folder; give a file name.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LpaError(f"Cannot create the folder of {what} {path}: {exc.strerror or exc}.") from None
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        raise LpaError(f"{what} {path} is not writable.")
    return path
