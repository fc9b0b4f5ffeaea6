"""Chat formatting and batched generation (HF backend).

Prompts are formatted with the tokenizer's own chat template; templates without a system role
get the system prompt folded into the first user turn; tokenizers without any template get a
plain ``User:/Assistant:`` format.  Generation is batched with left padding and sorted by
length so padding is minimal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from lpa.models.tokens import pad_token_id, position_ids
from lpa.records import Message

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class GenerationSettings(BaseModel):
    """Decoding settings; recorded with every generation so cached results stay keyed by them."""

    max_new_tokens: int = Field(128, ge=1, description="Maximum tokens to generate per prompt.")
    do_sample: bool = Field(False, description="Sample instead of greedy decoding.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (only with do_sample).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass (only with do_sample).")
    seed: int = Field(0, description="Seed for sampling.")
    batch_size: int = Field(16, ge=1, description="Prompts per forward batch.")

    def key(self) -> dict[str, Any]:
        """The fields that change outputs (batch size does not, for greedy decoding)."""
        data = self.model_dump()
        data.pop("batch_size")
        if not self.do_sample:
            data.pop("temperature")
            data.pop("top_p")
            data.pop("seed")
        return data


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "eos" or "length"
    token_ids: list[int] | None = None  # the kept completion tokens, when the backend reports them


Conversation = Sequence[Message] | str


def to_messages(conversation: Conversation, system: str | None = None) -> list[Message]:
    messages = [{"role": "user", "content": conversation}] if isinstance(conversation, str) else list(conversation)
    if system is not None and not (messages and messages[0]["role"] == "system"):
        messages = [{"role": "system", "content": system}, *messages]
    return messages


def _fold_system(messages: list[Message]) -> list[Message]:
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], messages[1:]
    if rest and rest[0]["role"] == "user":
        return [{"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}, *rest[1:]]
    return [{"role": "user", "content": system}, *rest]


def _plain_format(messages: list[Message], add_generation_prompt: bool) -> str:
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    text = "".join(f"{names.get(m['role'], m['role'].title())}: {m['content']}\n" for m in messages)
    return text + ("Assistant:" if add_generation_prompt else "")


def format_chat(
    tokenizer: PreTrainedTokenizerBase,
    conversation: Conversation,
    *,
    system: str | None = None,
    prefill: str | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """Render a conversation as the model's prompt text.

    ``prefill`` starts the assistant turn (the model continues it), which is how prefill
    attacks and completion-scoring work.
    """
    messages = to_messages(conversation, system)
    if getattr(tokenizer, "chat_template", None):
        try:
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        except Exception as exc:  # jinja TemplateError: e.g. "System role not supported"
            if messages and messages[0]["role"] == "system" and "system" in str(exc).lower():
                text = tokenizer.apply_chat_template(
                    _fold_system(messages), tokenize=False, add_generation_prompt=add_generation_prompt
                )
            else:
                raise
    else:
        text = _plain_format(messages, add_generation_prompt)
    if prefill:
        text = text + prefill
    return text


def format_chats(tokenizer: PreTrainedTokenizerBase, conversations: Sequence[Conversation], system: str | None = None,
                 prefills: Sequence[str | None] | None = None) -> list[str]:
    """:func:`format_chat` for each conversation with its prefill (none when ``prefills`` is None): every engine's prompts."""
    prefills = list(prefills) if prefills is not None else [None] * len(conversations)
    return [format_chat(tokenizer, c, system=system, prefill=p) for c, p in zip(conversations, prefills, strict=True)]


def uses_chat_template(tokenizer: PreTrainedTokenizerBase) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def tokenize_prompts(tokenizer: PreTrainedTokenizerBase, texts: list[str], device: Any = None, *,
                     positions: bool = False, max_length: int | None = None) -> dict[str, torch.Tensor]:
    """Left-padded batch (:func:`lpa.models.tokens.left_pad`); chat templates already contain BOS,
    so no special tokens are added then.  ``positions`` adds ``position_ids`` that skip the padding;
    ``max_length`` applies :func:`fit_to_context`'s rule (keep each prompt's last tokens)."""
    from lpa.models.tokens import left_pad

    rows = prompt_ids(tokenizer, texts)
    if max_length is not None:
        rows = [row[-max_length:] for row in rows]
    return left_pad(rows, tokenizer, device, positions=positions)


def prompt_ids(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of formatted prompts, as every engine feeds them (no BOS added to a chat template's text)."""
    return list(tokenizer(list(texts), add_special_tokens=not uses_chat_template(tokenizer))["input_ids"])


def prompt_budget(context: int | None, max_new_tokens: int) -> int | None:
    """How many prompt tokens fit before ``max_new_tokens`` in a ``context``-token window (None: no limit).

    The rule both engines apply to a longer prompt: keep its *last* ``budget`` tokens (the request and
    the assistant turn's opening), drop the oldest, and say how many prompts were cut.  A budget
    below one token is a settings mistake, refused before any compute.
    """
    if not context:
        return None
    budget = int(context) - max_new_tokens
    if budget < 1:
        from lpa.errors import LpaError

        raise LpaError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's "
                       f"{context}-token context; use max_new_tokens < {context}.")
    return budget


def warn_truncated(lengths: Sequence[int], budget: int | None, engine: str) -> int:
    """Log (once per call) how many prompts exceed ``budget`` and are cut to their last tokens; returns the count."""
    if budget is None:
        return 0
    cut = sum(1 for n in lengths if n > budget)
    if cut:
        import logging

        logging.getLogger(__name__).warning(
            "%s: %d of %d prompts are longer than the context allows (%d prompt tokens before the new tokens); "
            "their oldest tokens were dropped", engine, cut, len(lengths), budget)
    return cut


def model_context(model: Any) -> int | None:
    """The context length a torch model was trained for (None when its config does not say)."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """EOS ids from the generation config and tokenizer, plus the chat template's end-of-turn token."""
    ids: set[int] = set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (config_eos, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>"):
        token_id = tokenizer.convert_tokens_to_ids(token) if token in tokenizer.get_vocab() else None
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id:
            ids.add(token_id)
    return sorted(ids)


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    settings: GenerationSettings | None = None,
    *,
    system: str | None = None,
    prefills: Sequence[str | None] | None = None,
    progress: bool | str = False,
    on_batch: Callable[[list[int], list[Completion]], None] | None = None,
) -> list[Completion]:
    """Generate one completion per conversation, batched; results come back in input order.

    ``on_batch(indices, completions)`` is called after each batch so callers can append results
    to disk as they arrive (resumable runs).
    """
    texts = format_chats(tokenizer, conversations, system, prefills)
    return generate_texts(model, tokenizer, texts, settings, progress=progress, on_batch=on_batch)


def length_sorted_batches(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], batch_size: int) -> list[list[int]]:
    """Indices in batches of similar length (longest first) so padding is minimal.

    Every backend batches this way, so the same prompts meet the same batch-mates.
    """
    lengths = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]] if texts else []
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    settings: GenerationSettings | None = None,
    *,
    progress: bool | str = False,
    on_batch: Callable[[list[int], list[Completion]], None] | None = None,
    engine: str = "lpa",
) -> list[Completion]:
    """Continue already formatted prompt texts (see :func:`format_chat`); batched, in input order.

    ``engine="lpa"`` (default) decodes with :func:`decode_batch`, which drops finished rows from
    the batch (short refusals stop costing compute); ``"hf"`` uses ``model.generate``.
    """
    import torch

    from lpa.progress import progress_bar

    if engine not in ("lpa", "hf"):
        from lpa.errors import unknown_choice

        raise unknown_choice("generation engine", engine, ["hf", "lpa"])
    settings = settings or GenerationSettings()
    results: list[Completion | None] = [None] * len(texts)
    device = next(model.parameters()).device
    stops = stop_token_ids(model, tokenizer)
    pad_id = pad_token_id(tokenizer)
    batches = length_sorted_batches(tokenizer, texts, settings.batch_size)
    budget = prompt_budget(model_context(model), settings.max_new_tokens)
    if budget is not None and texts:
        warn_truncated([len(r) for r in prompt_ids(tokenizer, texts)], budget, "torch engine")
    label = progress if isinstance(progress, str) else "generating"
    with progress_bar(label, len(texts), enabled=None if progress else False) as bar:
        for batch_index, indices in enumerate(batches):
            batch = tokenize_prompts(tokenizer, [texts[i] for i in indices], device, max_length=budget)
            kwargs: dict[str, Any] = dict(
                max_new_tokens=settings.max_new_tokens,
                do_sample=settings.do_sample,
                pad_token_id=pad_id,
                eos_token_id=stops or None,
            )
            if settings.do_sample:
                torch.manual_seed(settings.seed + batch_index)
                kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            if engine == "lpa":
                generator = None
                if settings.do_sample:
                    generator = torch.Generator(device=device).manual_seed(settings.seed + batch_index)
                new_tokens = decode_batch(model, batch, settings, stops, generator)
            else:
                with torch.inference_mode():
                    output = model.generate(**batch, **kwargs)
                new_tokens = output[:, batch["input_ids"].shape[1] :].tolist()
            completions = []
            for row, index in enumerate(indices):
                tokens = new_tokens[row]
                end = next((k for k, t in enumerate(tokens) if t in stops), None)
                kept = tokens if end is None else tokens[:end]
                completion = Completion(
                    text=tokenizer.decode(kept, skip_special_tokens=True),
                    prompt_tokens=int(batch["attention_mask"][row].sum()),
                    completion_tokens=len(kept),
                    finish_reason="length" if end is None else "eos",
                    token_ids=kept,
                )
                results[index] = completion
                completions.append(completion)
            if on_batch is not None:
                on_batch(indices, completions)
            bar.advance(len(indices))
    return [r for r in results if r is not None]


def decode_batch(model: PreTrainedModel, batch: dict[str, torch.Tensor], settings: GenerationSettings,
                 stops: Sequence[int], generator: torch.Generator | None = None) -> list[list[int]]:
    """Greedy or sampled decoding of a left-padded batch with a KV cache, dropping finished rows.

    Same tokens as ``model.generate`` for greedy decoding (up to float noise); each row's list ends
    with its stop token when it stopped.  The prompt prefix every row shares (chat template,
    system prompt) is run once, and rows that finished leave the batch (their cache rows are cut),
    so a batch of short refusals and long answers costs what the long answers cost alone.
    """
    import torch

    stop = torch.tensor(sorted(set(stops)) or [-1], device=batch["input_ids"].device)
    mask = batch["attention_mask"]
    rows = torch.arange(mask.shape[0], device=mask.device)
    out: list[list[int]] = [[] for _ in range(mask.shape[0])]
    with torch.inference_mode():
        cache, logits, mask, positions = _prefill(model, batch["input_ids"], mask)
        position = positions[:, -1:]
        for step in range(settings.max_new_tokens):
            tokens = _pick(logits, settings, generator)
            for row, token in zip(rows.tolist(), tokens.tolist(), strict=True):
                out[row].append(token)
            alive = ~torch.isin(tokens, stop)
            if step == settings.max_new_tokens - 1 or not bool(alive.any()):
                break
            if not bool(alive.all()):
                keep = alive.nonzero().squeeze(1)
                _select_rows(cache, keep)
                rows, tokens, mask, position = rows[keep], tokens[keep], mask[keep], position[keep]
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            position = position + 1
            result = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=position,
                           past_key_values=cache, use_cache=True)
            cache, logits = result.past_key_values, result.logits[:, -1, :]
    return out


def _prefill(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor,
             min_shared: int = 8) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
    """First forward pass; the token prefix all prompts share (chat template, system prompt) runs once.

    Returns (cache, last logits, attention mask, position ids).  The shared prefix's keys/values are
    computed for one row and expanded; each prompt's own tokens follow, left-padded after it (pads
    are masked), so positions and attention are those of the plain batch.
    """
    import torch

    real = [row[m.bool()] for row, m in zip(ids, mask, strict=True)]
    shared = _shared_prefix(real) if len(real) > 1 else 0
    shared = min(shared, min(len(r) for r in real) - 1)
    if shared >= min_shared:
        first = model(input_ids=real[0][None, :shared], use_cache=True)
        cache = _expand_cache(first.past_key_values, len(real), model.config)
        if cache is not None:
            width = max(len(r) - shared for r in real)
            pad = ids.new_full((len(real), width), int(ids[0, 0]))
            own = mask.new_zeros((len(real), width))
            for i, r in enumerate(real):
                tail = r[shared:]
                pad[i, width - len(tail):] = tail
                own[i, width - len(tail):] = 1
            full = torch.cat([mask.new_ones((len(real), shared)), own], dim=1)
            positions = position_ids(full)
            result = model(input_ids=pad, attention_mask=full, position_ids=positions[:, shared:],
                           past_key_values=cache, use_cache=True, logits_to_keep=1)
            return result.past_key_values, result.logits[:, -1, :], full, positions[:, -1:]
    positions = position_ids(mask)
    result = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    return result.past_key_values, result.logits[:, -1, :], mask, positions[:, -1:]


def _shared_prefix(rows: list[torch.Tensor]) -> int:
    n = min(len(r) for r in rows)
    first = rows[0][:n]
    same = [(r[:n] == first) for r in rows[1:]]
    agree = same[0]
    for s in same[1:]:
        agree = agree & s
    mismatch = (~agree).nonzero()
    return int(mismatch[0, 0]) if len(mismatch) else n


def _expand_cache(cache: Any, batch: int, config: Any) -> Any:
    """A batch-``batch`` cache holding one row's keys/values (None for caches other than plain per-layer K/V)."""
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer).__name__ != "DynamicLayer" for layer in layers):
        return None
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=[(layer.keys.expand(batch, -1, -1, -1), layer.values.expand(batch, -1, -1, -1))
                                        for layer in layers], config=config)


def _pick(logits: torch.Tensor, settings: GenerationSettings, generator: torch.Generator | None) -> torch.Tensor:
    import torch

    if not settings.do_sample:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / settings.temperature, dim=-1)
    if settings.top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > settings.top_p  # keep the first token always
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def _select_rows(cache: Any, keep: torch.Tensor) -> None:
    layers = getattr(cache, "layers", None)
    if layers is None:
        cache.batch_select_indices(keep)
        return
    for layer in layers:
        layer.batch_select_indices(keep)


def read_prompts(path: str | Any) -> list[dict[str, Any]]:
    """Prompts from JSONL/CSV/JSON/YAML (``prompt`` text or ``messages``, optional ``id``, ``system``) or .txt.

    An input file is read strictly: a line that does not parse, a prompt that is not text, a
    ``messages`` that is not a list of role/content turns or a repeated id is an error naming the
    row, never a silently dropped or merged prompt.
    """
    from pathlib import Path

    from lpa.errors import LpaError
    from lpa.io import read_table

    path = Path(path)
    if not path.is_file():
        raise LpaError(f"Prompts file not found: {path}")
    rows: list[dict[str, Any]] = []
    for number, row in enumerate(read_table(path), start=1):
        where = f"{path}: row {row.get('line', number)}"
        _check_prompt_row(row, where)
        default = row.pop("line") - 1 if path.suffix == ".txt" else number - 1
        row["id"] = str(row.get("id", default))
        rows.append(row)
    if not rows:
        raise LpaError(f"{path}: no prompts found.")
    from collections import Counter

    repeated = sorted(i for i, n in Counter(r["id"] for r in rows).items() if n > 1)
    if repeated:
        raise LpaError(f"{path}: duplicate ids {', '.join(repeated[:10])}{' ...' if len(repeated) > 10 else ''} "
                       "(each prompt needs its own id).")
    return rows


def _check_prompt_row(row: dict[str, Any], where: str) -> None:
    from lpa.errors import LpaError

    if row.get("messages") is not None:
        turns = row["messages"]
        if not isinstance(turns, list) or not turns or not all(
                isinstance(t, dict) and isinstance(t.get("role"), str) and isinstance(t.get("content"), str)
                for t in turns):
            raise LpaError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects with text.")
    elif "prompt" in row:
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise LpaError(f"{where}: 'prompt' must be non-empty text, got {row['prompt']!r}.")
    else:
        raise LpaError(f"{where} needs a 'prompt' or 'messages' field.")
    if row.get("system") is not None and not isinstance(row["system"], str):
        raise LpaError(f"{where}: 'system' must be text.")
    if "id" in row and (row["id"] is None or isinstance(row["id"], (dict, list))):
        raise LpaError(f"{where}: 'id' must be text or a number, got {row['id']!r}.")


def check_generate_paths(prompts_path: Any, out_path: Any) -> None:
    """``--out`` must be a writable file other than the prompts file (checked before any model loads)."""
    from pathlib import Path

    from lpa.errors import LpaError
    from lpa.io import writable_file

    prompts, out = Path(prompts_path), Path(out_path)
    writable_file(out)
    if out.exists() and prompts.exists() and out.resolve() == prompts.resolve():
        raise LpaError(f"--out {out} is the prompts file; write the generations to a new file.")


def generate_jsonl(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts_path: Any,
    out_path: Any,
    settings: GenerationSettings | None = None,
    *,
    system: str | None = None,
    progress: bool = True,
    identity: Any = None,
) -> int:
    """Generate for every prompt in a file, appending to ``out_path``; prompts already there are skipped.

    ``out_path`` is a :class:`lpa.io.JsonlCache` locked for the run: a second writer is refused, and
    a file of another run (model identity with adapter hash, system prompt, settings), of prompts
    or of anything else is refused with an error naming it, so switching ``--adapter`` never reuses
    another model's answers.  Returns the number of new generations.  Interrupting loses at most
    the batch in flight.
    """
    from lpa.io import JsonlCache, digest
    from lpa.models.identity import identity_of

    settings = settings or GenerationSettings()
    identity = identity or identity_of(model)
    run_key = digest({**identity.key(), "settings": settings.key(), "system": system})
    check_generate_paths(prompts_path, out_path)
    rows = read_prompts(prompts_path)

    # untagged rows are refused: no committed result is an `lpa generate` file, so none predates the tags
    with JsonlCache(out_path, "generate", key="id", run_key=run_key, untagged=False) as cache:
        todo = [r for r in rows if r["id"] not in cache]
        if not todo:
            return 0
        conversations = [r.get("messages") or r["prompt"] for r in todo]

        def save(indices: list[int], completions: list[Completion]) -> None:
            cache.add(
                {
                    "id": todo[i]["id"],
                    "prompt": todo[i].get("prompt"),
                    "messages": todo[i].get("messages"),
                    "text": c.text,
                    "prompt_tokens": c.prompt_tokens,
                    "completion_tokens": c.completion_tokens,
                    "finish_reason": c.finish_reason,
                    "model": identity.model,
                    "adapter": identity.adapter,
                    "identity": identity.as_dict(),
                    "settings": settings.key(),
                }
                for i, c in zip(indices, completions, strict=True)
            )

        generate(model, tokenizer, conversations, settings, system=system, progress=progress, on_batch=save)
    return len(todo)
