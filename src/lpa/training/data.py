"""Preference pairs and their tensor layout, shared by every method that trains on pairs.

Layout of a :class:`PairBatch` (why: one shared prompt perturbation for both answers, and logits
only where the loss needs them).  Each example gives two rows, chosen then rejected::

    [left pad][prompt tokens][completion tokens][right pad]
    |<------- P columns ---->|<------- C columns -------->|

Prompts are left-padded to P columns and completions right-padded to C columns, so the prompt
sits at the same columns in both rows and every completion starts at column P: the loss needs
only the last ``C + 1`` positions' logits (``logits_to_keep``), and a perturbation of shape
``[B, P + C, H]`` applies identically to an example's chosen and rejected rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from lpa.records import Message

if TYPE_CHECKING:
    import torch


class PairExample(BaseModel):
    """A conversation and two assistant answers: train toward ``chosen``, away from ``rejected``."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message]
    chosen: str
    rejected: str
    meta: dict[str, Any] = Field(default_factory=dict)


@dataclass
class PairBatch:
    input_ids: torch.Tensor  # [2B, P + C]: rows 0..B-1 chosen, B..2B-1 rejected
    attention_mask: torch.Tensor  # [2B, P + C]
    position_ids: torch.Tensor  # [2B, P + C]
    prompt_mask: torch.Tensor  # [B, P + C] 1 on real prompt tokens
    completion_mask: torch.Tensor  # [2B, C] 1 on real completion tokens
    completion_ids: torch.Tensor  # [2B, C]
    prompt_len: int  # P

    @property
    def n_examples(self) -> int:
        return self.prompt_mask.shape[0]

    @property
    def n_completion(self) -> int:
        return self.completion_ids.shape[1]

    def to(self, device: Any) -> PairBatch:
        import torch

        return PairBatch(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()})


def _prompt_ids(tokenizer: Any, messages: list[Message]) -> list[int]:
    from lpa.generation import format_chat, uses_chat_template

    text = format_chat(tokenizer, messages)
    return tokenizer(text, add_special_tokens=not uses_chat_template(tokenizer))["input_ids"]


def _completion_ids(tokenizer: Any, text: str) -> list[int]:
    """Completion tokens followed by the end-of-turn token, so the answer is also trained to stop."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return ids + ([eos] if isinstance(eos, int) else [])


def collate_pairs(tokenizer: Any, examples: list[PairExample], max_prompt_tokens: int = 256) -> PairBatch:
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prompts = [_prompt_ids(tokenizer, e.messages)[-max_prompt_tokens:] for e in examples]
    completions = [_completion_ids(tokenizer, e.chosen) for e in examples] + [
        _completion_ids(tokenizer, e.rejected) for e in examples
    ]
    p_len = max(len(p) for p in prompts)
    c_len = max(len(c) for c in completions)
    b = len(examples)
    ids = torch.full((2 * b, p_len + c_len), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    prompt_mask = torch.zeros((b, p_len + c_len), dtype=torch.long)
    comp_ids = torch.full((2 * b, c_len), pad, dtype=torch.long)
    comp_mask = torch.zeros((2 * b, c_len), dtype=torch.long)
    for row in range(2 * b):
        prompt = prompts[row % b]
        comp = completions[row]
        ids[row, p_len - len(prompt) : p_len] = torch.tensor(prompt)
        ids[row, p_len : p_len + len(comp)] = torch.tensor(comp)
        attn[row, p_len - len(prompt) : p_len + len(comp)] = 1
        comp_ids[row, : len(comp)] = torch.tensor(comp)
        comp_mask[row, : len(comp)] = 1
        if row < b:
            prompt_mask[row, p_len - len(prompt) : p_len] = 1
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    return PairBatch(ids, attn, position_ids, prompt_mask, comp_mask, comp_ids, p_len)


@dataclass
class PromptBatch:
    """Left-padded benign prompts (chat-formatted, generation prompt added) for the KL term."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor


def collate_prompts(tokenizer: Any, prompts: list[str], max_tokens: int = 128) -> PromptBatch:
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows = [_prompt_ids(tokenizer, [{"role": "user", "content": p}])[-max_tokens:] for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        attn[i, width - len(r) :] = 1
    return PromptBatch(ids, attn, (attn.cumsum(-1) - 1).clamp(min=0))


def builtin_benign_prompts() -> list[str]:
    from importlib import resources

    import yaml

    text = (resources.files("lpa") / "data" / "benign_prompts.yaml").read_text(encoding="utf-8")
    return list(yaml.safe_load(text)["prompts"])


def resolve_data_file(name: str, data_dir: str | None, what: str) -> Path:
    """A training data file: as given, else relative to ``data_dir`` (default ``$LPA_DATA_DIR``)."""
    import os

    from lpa.errors import LpaError

    candidate = Path(name).expanduser()
    if candidate.is_file():
        return candidate
    base = data_dir or os.environ.get("LPA_DATA_DIR")
    if base and (Path(base).expanduser() / name).is_file():
        return Path(base).expanduser() / name
    where = f"in {base}" if base else "(no data directory set: pass data_dir or set LPA_DATA_DIR)"
    raise LpaError(f"{what} {name!r} not found {where}.")


def load_benign_prompts(source: str | None, data_dir: str | None = None) -> list[str]:
    """``None``/"builtin": the built-in set; else a JSON/JSONL/TXT instruction file (``instruction``/``prompt``)."""
    import json

    from lpa.errors import LpaError
    from lpa.io import read_jsonl

    if source in (None, "builtin"):
        return builtin_benign_prompts()
    path = resolve_data_file(source, data_dir, "Benign prompt file (or 'builtin')")
    if path.suffix == ".txt":
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = read_jsonl(path) if path.suffix == ".jsonl" else json.loads(path.read_text(encoding="utf-8"))
    out = []
    for number, row in enumerate(rows, start=1):
        text = row if isinstance(row, str) else (row.get("instruction") or row.get("prompt")) if isinstance(row, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise LpaError(f"{path}: row {number} has no 'instruction' or 'prompt' text.")
        out.append(text.strip())
    if not out:
        raise LpaError(f"{path}: no prompts found.")
    return out
