"""PEFT LoRA adapter -> GGUF LoRA adapter, so llama.cpp serves it on the GGUF base without merging.

The file follows llama.cpp's adapter format (what its ``convert_lora_to_gguf.py`` writes; this is
our own code): ``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha``, and for
every adapted weight ``W`` of the base (GGUF name, e.g. ``blk.3.attn_q.weight``) two tensors
``W.lora_a`` (PEFT's A, rank x in) and ``W.lora_b`` (PEFT's B, out x rank).  llama.cpp scales the
product by ``alpha / rank``, as PEFT does.  Weights the GGUF converter permutes (q/k projections
of the llama architecture, for its rotary layout) get the same row permutation on ``B``.

The file is written beside the adapter as ``adapter.<sha16>.gguf``, keyed by the sha256 of the
adapter's weights and config and by the base's architecture, so a retrained adapter at the same
path never reuses a stale conversion.  Only safetensors adapters are read (nothing is unpickled).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from lpa.errors import LpaError

PERMUTED = {"llama": {"attn_q": "n_head", "attn_k": "n_head_kv"}}  # arch -> GGUF weight -> heads it is permuted by
FORMAT_VERSION = 1  # bump when the written file changes


def gguf_lora(adapter: str | Path, base_gguf: str | Path) -> Path:
    """The GGUF LoRA file for a PEFT ``adapter`` folder on ``base_gguf``, converting it on first use."""
    adapter, base_gguf = Path(adapter), Path(base_gguf)
    weights, config = _adapter_files(adapter)
    base = _base_info(base_gguf)
    digest = hashlib.sha256()
    for path in (weights, config):
        digest.update(path.read_bytes())
    digest.update(json.dumps({"arch": base["arch"], "format": FORMAT_VERSION}).encode())
    out = adapter / f"adapter.{digest.hexdigest()[:16]}.gguf"
    if not out.is_file():
        write_gguf_lora(adapter, base, out)
    return out


def _adapter_files(adapter: Path) -> tuple[Path, Path]:
    config = adapter / "adapter_config.json"
    weights = adapter / "adapter_model.safetensors"
    if not config.is_file():
        raise LpaError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json).")
    if not weights.is_file():
        found = "adapter_model.bin (a pickle, which lpa does not load)" if (adapter / "adapter_model.bin").is_file() \
            else "no adapter_model.safetensors"
        raise LpaError(f"{adapter}: the llama.cpp engine converts safetensors adapters only; found {found}. "
                       "Re-save it with save_pretrained(safe_serialization=True), or pass --engine hf.")
    return weights, config


def _base_info(base_gguf: Path) -> dict[str, Any]:
    """Architecture, block count, head counts and tensor names of a GGUF model (metadata only)."""
    fields, tensors = read_gguf_header(base_gguf, keep=lambda key: not key.startswith("tokenizer."))
    arch = fields.get("general.architecture")
    if not isinstance(arch, str):
        raise LpaError(f"{base_gguf} has no general.architecture; is it a GGUF model?")
    return {"arch": arch, "n_blocks": int(fields[f"{arch}.block_count"]),
            "n_head": fields.get(f"{arch}.attention.head_count"),
            "n_head_kv": fields.get(f"{arch}.attention.head_count_kv"), "tensors": set(tensors)}


# GGUF value types (gguf.GGUFValueType): fixed sizes in bytes and struct codes; 8 = string, 9 = array
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def read_gguf_header(path: Path, keep: Any = None) -> tuple[dict[str, Any], list[str]]:
    """The metadata fields and tensor names of a GGUF file, reading only its header.

    Why not ``gguf.GGUFReader``: it builds a numpy view per array element, and a Qwen vocabulary
    (151k tokens and 151k merges) took it 7-11 s; this walks the same layout (GGUF v2/v3,
    little-endian) in well under a second.  Array values are skipped unless ``keep(key)`` says so.
    """
    import mmap
    import struct

    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != b"GGUF":
            raise LpaError(f"{path} is not a GGUF file.")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
        if version < 2:
            raise LpaError(f"{path}: GGUF version {version} is too old (need 2 or later).")
        offset = 24

        def string(at: int) -> tuple[str, int]:
            (length,) = struct.unpack_from("<Q", data, at)
            return data[at + 8 : at + 8 + length].decode("utf-8", errors="replace"), at + 8 + length

        def value(kind: int, at: int, wanted: bool) -> tuple[Any, int]:
            if kind in _SCALARS:
                code = "<" + _SCALARS[kind]
                return struct.unpack_from(code, data, at)[0], at + struct.calcsize(code)
            if kind == 8:
                return string(at)
            if kind != 9:
                raise LpaError(f"{path}: unknown GGUF value type {kind}.")
            item, count = struct.unpack_from("<IQ", data, at)
            at += 12
            if item in _SCALARS and not wanted:
                return None, at + count * struct.calcsize("<" + _SCALARS[item])
            items = []
            for _ in range(count):
                element, at = value(item, at, wanted)
                items.append(element)
            return (items if wanted else None), at

        fields: dict[str, Any] = {}
        for _ in range(n_kv):
            key, offset = string(offset)
            (kind,) = struct.unpack_from("<I", data, offset)
            fields[key], offset = value(kind, offset + 4, keep is None or bool(keep(key)))
        names = []
        for _ in range(n_tensors):
            name, offset = string(offset)
            (n_dims,) = struct.unpack_from("<I", data, offset)
            offset += 4 + 8 * n_dims + 4 + 8  # dims, type, data offset
            names.append(name)
    return fields, names


def write_gguf_lora(adapter: Path, base: dict[str, Any], out: Path) -> None:
    """Convert and write atomically (a crash leaves no half-written file under the final name)."""
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    _check_supported(config, adapter)
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    if config.get("use_rslora"):
        alpha = alpha * rank**0.5  # PEFT scales by alpha/sqrt(r); llama.cpp by alpha/r
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    arch_enum = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}.get(base["arch"])
    if arch_enum is None:
        raise LpaError(f"The gguf package does not know architecture {base['arch']!r}; pass --engine hf.")
    names = gguf.get_tensor_name_map(arch_enum, base["n_blocks"])
    pairs: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        part = "A" if ".lora_A." in key else "B" if ".lora_B." in key else None
        if part is None:
            raise LpaError(f"{adapter}: tensor {key!r} is not a LoRA A/B matrix (trained embeddings or "
                           "modules_to_save cannot be served by llama.cpp); pass --engine hf.")
        module = key.split(f".lora_{part}.")[0].removeprefix("base_model.model.")
        target = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if target is None or target not in base["tensors"]:
            raise LpaError(f"{adapter}: no GGUF weight for {module!r} in the {base['arch']} base; pass --engine hf.")
        pairs.setdefault(target, {})[part] = value
    writer = gguf.GGUFWriter(str(out) + ".tmp", base["arch"])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for target, pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            raise LpaError(f"{adapter}: {target} has only lora_{''.join(pair)}.")
        lora_b = _permute_rows(pair["B"], target, base)
        writer.add_tensor(target + ".lora_a", pair["A"].astype("float32"))
        writer.add_tensor(target + ".lora_b", lora_b.astype("float32"))
    tmp = Path(str(out) + ".tmp")
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _check_supported(config: dict[str, Any], adapter: Path) -> None:
    problems = []
    if config.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type {config.get('peft_type')}")
    if config.get("use_dora"):
        problems.append("DoRA")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        problems.append("per-module rank/alpha patterns")
    if config.get("fan_in_fan_out"):
        problems.append("fan_in_fan_out")
    if problems:
        raise LpaError(f"{adapter}: llama.cpp cannot serve this adapter ({', '.join(problems)}); pass --engine hf.")


def _permute_rows(lora_b: Any, target: str, base: dict[str, Any]) -> Any:
    """Apply the GGUF converter's rotary row permutation of q/k weights to B's rows (B @ A then matches)."""
    kind = target.split(".")[-2]  # blk.N.attn_q.weight -> attn_q
    heads_field = PERMUTED.get(base["arch"], {}).get(kind)
    if heads_field is None:
        return lora_b
    heads = int(base[heads_field] if base[heads_field] is not None else base["n_head"])
    out, rank = lora_b.shape
    return lora_b.reshape(heads, 2, out // heads // 2, rank).swapaxes(1, 2).reshape(out, rank)
