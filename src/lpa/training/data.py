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

from pydantic import BaseModel, ConfigDict

from lpa.errors import LpaError
from lpa.io import read_table
from lpa.records import Message, PairExample

if TYPE_CHECKING:
    import torch


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


def _pack(tokenizer: Any, prompts: list[list[int]], completions: list[list[int]]) -> dict[str, Any]:
    """Left-pad prompts to P columns, right-pad completions to C columns; row r uses prompt r % len(prompts)."""
    import torch

    from lpa.models.tokens import pad_token_id

    pad = pad_token_id(tokenizer)
    p_len = max(len(p) for p in prompts)
    c_len = max(len(c) for c in completions)
    rows, b = len(completions), len(prompts)
    ids = torch.full((rows, p_len + c_len), pad, dtype=torch.long)
    attn = torch.zeros_like(ids)
    prompt_mask = torch.zeros((rows, p_len + c_len), dtype=torch.long)
    comp_ids = torch.full((rows, c_len), pad, dtype=torch.long)
    comp_mask = torch.zeros((rows, c_len), dtype=torch.long)
    for row in range(rows):
        prompt, comp = prompts[row % b], completions[row]
        ids[row, p_len - len(prompt) : p_len] = torch.tensor(prompt)
        ids[row, p_len : p_len + len(comp)] = torch.tensor(comp)
        attn[row, p_len - len(prompt) : p_len + len(comp)] = 1
        comp_ids[row, : len(comp)] = torch.tensor(comp)
        comp_mask[row, : len(comp)] = 1
        prompt_mask[row, p_len - len(prompt) : p_len] = 1
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": attn, "position_ids": position_ids, "prompt_mask": prompt_mask,
            "completion_mask": comp_mask, "completion_ids": comp_ids, "prompt_len": p_len}


def collate_pairs(tokenizer: Any, examples: list[PairExample], max_prompt_tokens: int = 256) -> PairBatch:
    prompts = [_prompt_ids(tokenizer, e.messages)[-max_prompt_tokens:] for e in examples]
    completions = [_completion_ids(tokenizer, e.chosen) for e in examples] + [
        _completion_ids(tokenizer, e.rejected) for e in examples
    ]
    packed = _pack(tokenizer, prompts, completions)
    packed["prompt_mask"] = packed["prompt_mask"][: len(examples)]
    return PairBatch(**packed)


class ChatExample(BaseModel):
    """A benign conversation and its reference answer (the defender's KL anchor / SFT data)."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message]
    response: str


@dataclass
class ResponseBatch:
    """Benign prompt + response rows in the :class:`PairBatch` column layout (one row per example)."""

    input_ids: torch.Tensor  # [B, P + C]
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    completion_ids: torch.Tensor  # [B, C]
    completion_mask: torch.Tensor  # [B, C] 1 on real response tokens: the KL / SFT positions
    prompt_len: int

    @property
    def n_completion(self) -> int:
        return self.completion_ids.shape[1]

    def to(self, device: Any) -> ResponseBatch:
        import torch

        return ResponseBatch(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in vars(self).items()})


def collate_responses(tokenizer: Any, examples: list[ChatExample], max_prompt_tokens: int = 256,
                      max_response_tokens: int = 64) -> ResponseBatch:
    prompts = [_prompt_ids(tokenizer, e.messages)[-max_prompt_tokens:] for e in examples]
    completions = [_completion_ids(tokenizer, e.response)[:max_response_tokens] for e in examples]
    packed = _pack(tokenizer, prompts, completions)
    packed.pop("prompt_mask")
    return ResponseBatch(**packed)


@dataclass
class Collator:
    """The one collator of every method: a list of :class:`PairExample` becomes a :class:`PairBatch`,
    a list of :class:`ChatExample` a :class:`ResponseBatch` (same column layout, one row each).

    The trainer's data loader, the benign KL/SFT batches, persona fine-tuning and its held-out NLL
    all batch through it, so padding, truncation and the end-of-turn token are decided once.
    """

    tokenizer: Any
    max_prompt_tokens: int = 256
    max_response_tokens: int | None = None

    def __call__(self, examples: list[PairExample] | list[ChatExample]) -> dict[str, Any]:
        """``{"batch": ..., "input_ids": ...}``: a mapping, as ``transformers.Trainer`` expects."""
        batch = self.batch(examples)
        return {"batch": batch, "input_ids": batch.input_ids}

    def batch(self, examples: list[PairExample] | list[ChatExample]) -> PairBatch | ResponseBatch:
        if examples and all(isinstance(e, ChatExample) for e in examples):
            # all() above does not narrow the list's type for mypy: these are ChatExamples
            return collate_responses(self.tokenizer, examples, self.max_prompt_tokens,  # type: ignore[arg-type]
                                     self.max_response_tokens or 10**9)
        # the rest are pairs (a mix fails in collate_pairs, loudly)
        return collate_pairs(self.tokenizer, examples, self.max_prompt_tokens)  # type: ignore[arg-type]


def _builtin_yaml(name: str) -> Any:
    from importlib import resources

    import yaml

    return yaml.safe_load((resources.files("lpa") / "data" / name).read_text(encoding="utf-8"))


def builtin_benign_prompts() -> list[str]:
    """Everyday instructions (the collapse guard's first group)."""
    return list(_builtin_yaml("benign_prompts.yaml")["prompts"])


GUARD_GROUPS = ("everyday", "borderline", "harmful")


def guard_prompts(groups: list[str], n: int) -> dict[str, list[str]]:
    """The first ``n`` built-in guard prompts of each group (everyday | borderline | harmful)."""
    data = _builtin_yaml("benign_prompts.yaml")
    key = {"everyday": "prompts", "borderline": "borderline", "harmful": "harmful"}
    return {g: list(data[key[g]])[:n] for g in groups}


def builtin_benign_chat() -> list[ChatExample]:
    items = _builtin_yaml("benign_chat.yaml")["items"]
    return [ChatExample(messages=[{"role": "user", "content": i["instruction"]}], response=i["response"]) for i in items]



def resolve_data_file(name: str, data_dir: str | None, what: str) -> Path:
    """A training data file: as given, else relative to ``data_dir`` (default ``$LPA_DATA_DIR``)."""
    import os

    candidate = Path(name).expanduser()
    if candidate.is_file():
        return candidate
    base = data_dir or os.environ.get("LPA_DATA_DIR")
    if base and (Path(base).expanduser() / name).is_file():
        return Path(base).expanduser() / name
    where = f"in {base}" if base else "(no data directory set: pass data_dir or set LPA_DATA_DIR)"
    raise LpaError(f"{what} {name!r} not found {where}.")


def load_benign_chat(source: str | None, data_dir: str | None = None) -> list[ChatExample]:
    """``None``/"builtin": the built-in pairs; else a JSON/JSONL file with ``instruction``/``prompt``
    and ``response``/``output`` fields (the KL is taken on the response tokens, so both are needed)."""

    if source in (None, "builtin"):
        return builtin_benign_chat()
    path = resolve_data_file(source, data_dir, "Benign instruction-response file (or 'builtin')")
    if path.suffix not in (".json", ".jsonl"):
        raise LpaError(f"{path}: benign data must be .json or .jsonl rows with instruction and response fields.")
    rows = read_table(path)
    out = []
    for number, row in enumerate(rows, start=1):
        prompt = (row.get("instruction") or row.get("prompt")) if isinstance(row, dict) else None
        response = (row.get("response") or row.get("output")) if isinstance(row, dict) else None
        if not isinstance(prompt, str) or not isinstance(response, str) or not prompt.strip() or not response.strip():
            raise LpaError(f"{path}: row {number} needs non-empty 'instruction' (or 'prompt') and 'response' (or 'output').")
        out.append(ChatExample(messages=[{"role": "user", "content": prompt.strip()}], response=response.strip()))
    if not out:
        raise LpaError(f"{path}: no rows found.")
    return out
