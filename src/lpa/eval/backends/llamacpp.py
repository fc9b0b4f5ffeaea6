"""llama.cpp in this process on a GGUF model as shipped (``pip install 'lpa[llamacpp]'``).

Why: on a CPU, llama.cpp runs the quantised GGUF weights several times faster than torch runs
their de-quantised fp32 copy (3.1x at batch 16 on qwen2.5-coder-0.5b, 4.5x on -1.5b, idle 2 cores;
2.75x beside a second CPU-bound process, where both engines lose about two thirds of their speed).

How (llama.cpp's low-level batch API, one ``llama_batch`` per step):

* prompts are formatted and tokenised here with the model's own chat template and tokenizer, as
  for the torch engine, so both engines see the same token ids;
* the token prefix every prompt shares (chat template, system prompt) is decoded once into
  sequence 0 and copied into each row's sequence with ``llama_memory_seq_cp`` (a unified KV cache
  makes the copy a bookkeeping step, not a copy of tensors);
* up to ``batch_size`` rows decode together; a row that finishes leaves at once and the next
  prompt joins in the same step (its own prompt tokens ride along in the batch), so the batch stays
  full;
* greedy decoding takes the arg-max of llama.cpp's logits; sampling applies the same temperature /
  top-p rule as the torch engine, with one generator per prompt (seeded by ``seed`` and the
  prompt's position), so answers do not depend on which prompts shared a batch;
* a PEFT adapter is converted once to a GGUF LoRA file (:mod:`lpa.models.gguf_lora`) and applied
  on top of the base weights, never merged into a copy.

Answers differ slightly from the torch engine's (llama.cpp quantises activations to 8 bits for its
quantised matmuls), so cache keys name the engine.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lpa.errors import LpaError
from lpa.eval.backends import BACKENDS, BackendConfig, OnBatch, gguf_source
from lpa.generation import (
    Completion,
    Conversation,
    GenerationSettings,
    format_chats,
    prompt_budget,
    prompt_ids,
    stop_token_ids,
    warn_truncated,
)

log = logging.getLogger(__name__)
MAX_SEQUENCES = 255  # llama.cpp's LLAMA_MAX_SEQ is 256; sequence 0 holds the shared prefix
MIN_SHARED = 8  # shorter common prefixes are not worth a separate decode
# One KV buffer shared by all sequences: the prefix copy is free, but every token's attention spans all
# live cells, so batch 64 gains little over 16.  Per-sequence streams (False) measured slower still: 134 s
# vs 75 s for 64 prompts x 32 tokens on qwen2.5-coder-0.5b (shared 2-core machine), and answers shift.
KV_UNIFIED = True
# ... which is why rows join the batch only while the live rows' cells (prompt tail + new tokens each) stay within a
# budget: 40 in-the-wild prompts (13.6k prompt tokens, 48 new each) took 94 s at batch 16 and 77 s at 4, while 120
# short ones (5.2k tokens) took 45 s at 16 and 68 s at 4 (qwen2.5-coder-0.5b, 2 idle cores).  Long rows join first,
# few at a time; short ones then fill the batch.
KV_CELL_BUDGET = 2560
SCORE_SLOTS = 8  # prompts per llama_decode when only next-token log-probs are wanted


def _llama() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise LpaError("The llama.cpp engine needs llama-cpp-python: pip install 'lpa[llamacpp]' (compiles "
                       "llama.cpp, ~8 min once), or pass --engine hf.") from None
    return llama_cpp


class _Model:
    """One loaded GGUF model per process (base and adapters share it), freed at exit."""

    _loaded: dict[str, _Model] = {}

    def __init__(self, path: Path) -> None:
        lib = _llama()
        if not _Model._loaded:
            lib.llama_backend_init()
            _quiet(lib)
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        self.lib, self.path = lib, path
        self.ptr = lib.llama_model_load_from_file(str(path).encode(), params)
        if not self.ptr:
            raise LpaError(f"llama.cpp cannot load {path} (not a GGUF model it supports); pass --engine hf.")
        self.vocab = lib.llama_model_get_vocab(self.ptr)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = int(lib.llama_model_n_ctx_train(self.ptr))
        self.adapters: dict[str, Any] = {}

    @classmethod
    def get(cls, path: Path) -> _Model:
        key = str(path.resolve())
        if key not in cls._loaded:
            cls._loaded[key] = cls(path)
        return cls._loaded[key]

    def adapter(self, path: Path) -> Any:
        key = str(path.resolve())
        if key not in self.adapters:
            ptr = self.lib.llama_adapter_lora_init(self.ptr, key.encode())
            if not ptr:
                raise LpaError(f"llama.cpp rejected the LoRA adapter {path} for {self.path.name}.")
            self.adapters[key] = ptr
        return self.adapters[key]


# llama.cpp warnings that say nothing a user can act on, logged at DEBUG: one line per LoRA tensor when the
# CPU backend's repacked (quantised) buffer type cannot hold an f32 LoRA matrix (it falls back to plain CPU
# memory, as intended), and a note on the Qwen GGUF's vocabulary that llama.cpp fixes itself on load.
# "possible training context overflow": with one KV buffer shared by every sequence (KV_UNIFIED), llama.cpp
# compares the whole buffer with the model's trained context; each sequence's own tokens are capped by
# prompt_budget(n_ctx_train, ...) below, so no sequence can overflow it.
NOISE = ("cannot use buft", "control-looking token", "possible training context overflow")


def _quiet(lib: Any) -> None:
    """llama.cpp logs every tensor it loads to stderr; keep warnings and errors only, minus known noise."""
    levels = {3: logging.WARNING, 4: logging.ERROR}  # GGML_LOG_LEVEL_INFO=2, WARN=3, ERROR=4

    @lib.llama_log_callback
    def callback(level: int, text: bytes, user_data: Any) -> None:
        if level in levels:
            message = text.decode(errors="replace").rstrip()
            log.log(log_level(levels[level], message), "llama.cpp: %s", message)

    _quiet.callback = callback  # type: ignore[attr-defined]  # keep a reference: C holds the pointer
    lib.llama_log_set(callback, ctypes.c_void_p(0))


def log_level(level: int, message: str) -> int:
    """``level``, or DEBUG for a known noise line (:data:`NOISE`)."""
    return logging.DEBUG if level == logging.WARNING and any(n in message for n in NOISE) else level


@dataclass
class _Row:
    index: int
    seq: int
    pos: int  # position of the next token to feed
    last: int = -1  # the token to feed next step
    out: list[int] = field(default_factory=list)
    rng: Any = None
    prompt_tokens: int = 0


class LlamaCppBackend:
    name = "llama.cpp"
    engine = "llama.cpp"
    scores_next_token = True  # next_token_logprobs: log-likelihood MMLU runs here, not on torch

    def __init__(self, config: BackendConfig, tokenizer: Any, model_name: str, adapter: str | None) -> None:
        _llama()
        source = gguf_source(model_name)
        if source is None:
            raise LpaError(f"The llama.cpp engine runs GGUF models (an embedded alias or a .gguf file); "
                           f"{model_name!r} is not one. Pass --engine hf for it.")
        self.config, self.tokenizer, self.adapter = config, tokenizer, adapter
        self.model = _Model.get(source)
        self.lora: Path | None = None
        if adapter:
            from lpa.models.gguf_lora import gguf_lora

            self.lora = gguf_lora(adapter, source)
        self.threads = config.threads or max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                             else (os.cpu_count() or 1))
        self.truncated = 0  # prompts cut to the context by the last call

    @classmethod
    def create(cls, config: BackendConfig, *, model: Any, tokenizer: Any, model_name: str,
               adapter: str | None) -> LlamaCppBackend:
        return cls(config, tokenizer, model_name, adapter)

    # -- public -----------------------------------------------------------------------------
    def generate(self, conversations: Sequence[Conversation], settings: GenerationSettings, *,
                 system: str | None = None, prefills: Sequence[str | None] | None = None,
                 progress: bool | str = False, on_batch: OnBatch | None = None) -> list[Completion]:
        texts = format_chats(self.tokenizer, conversations, system, prefills)
        return self.generate_texts(texts, settings, progress=progress, on_batch=on_batch)

    def generate_texts(self, texts: Sequence[str], settings: GenerationSettings, *, progress: bool | str = False,
                       on_batch: OnBatch | None = None) -> list[Completion]:
        """Continue already formatted prompts (see :func:`lpa.generation.format_chat`), in input order."""
        from lpa.progress import progress_bar

        if not texts:
            return []
        ids = self._prompt_rows(texts, settings.max_new_tokens)
        results: list[Completion | None] = [None] * len(texts)
        label = progress if isinstance(progress, str) else "generating"
        with progress_bar(f"{label} (llama.cpp)", len(texts), enabled=None if progress else False) as bar:
            def done(indices: list[int], completions: list[Completion]) -> None:
                for index, completion in zip(indices, completions, strict=True):
                    results[index] = completion
                if on_batch is not None:
                    on_batch(indices, completions)
                bar.advance(len(indices))

            self._decode(ids, settings, done)
        return [r for r in results if r is not None]

    def _prompt_rows(self, texts: Sequence[str], new_tokens: int) -> list[list[int]]:
        """Token ids of formatted prompts, each cut to its last tokens where it would overflow the context."""
        budget = prompt_budget(self.model.n_ctx_train, new_tokens)
        ids = [list(r) for r in prompt_ids(self.tokenizer, texts)]
        self.truncated = warn_truncated([len(r) for r in ids], budget, "llama.cpp engine")
        return [r[-budget:] for r in ids] if budget is not None else ids

    # -- the decoding loop ------------------------------------------------------------------
    def _decode(self, ids: list[list[int]], settings: GenerationSettings, done: OnBatch) -> None:
        import numpy as np

        lib, model = self.model.lib, self.model
        shared = _worth_sharing(ids)
        longest_tail = max(len(r) - shared for r in ids)
        slots = max(1, min(settings.batch_size, MAX_SEQUENCES, len(ids)))
        if KV_UNIFIED:
            cells = shared + slots * (longest_tail + settings.max_new_tokens) + slots
        else:  # one stream per sequence, each holding a whole row (prefix copied in)
            cells = (slots + 1) * (shared + longest_tail + settings.max_new_tokens + 1)
        n_ctx = -(-cells // 256) * 256
        ctx = self._context(n_ctx, slots + 1)
        batch = lib.llama_batch_init(n_ctx, 0, 1)
        memory = lib.llama_get_memory(ctx)
        stops = set(stop_token_ids(None, self.tokenizer))
        for special in (lib.llama_vocab_eos(model.vocab), lib.llama_vocab_eot(model.vocab)):
            if special >= 0:
                stops.add(int(special))
        try:
            if shared:
                self._feed(ctx, batch, [(t, p, 0, False) for p, t in enumerate(ids[0][:shared])])
            waiting = deque(sorted(range(len(ids)), key=lambda i: -len(ids[i])))  # long prompts first: fewer stragglers
            free = list(range(slots, 0, -1))
            active: list[_Row] = []
            while waiting or active:
                tokens: list[tuple[int, int, int, bool]] = [(r.last, r.pos, r.seq, True) for r in active]
                outputs = list(active)
                live = sum(len(ids[r.index]) - shared + settings.max_new_tokens for r in outputs)
                while waiting and free and fits(live, len(ids[waiting[0]]) - shared + settings.max_new_tokens):
                    index = waiting.popleft()
                    live += len(ids[index]) - shared + settings.max_new_tokens
                    row = _Row(index=index, seq=free.pop(), pos=len(ids[index]), prompt_tokens=len(ids[index]))
                    if settings.do_sample:
                        row.rng = np.random.default_rng([settings.seed, index])
                    if shared:
                        lib.llama_memory_seq_cp(memory, 0, row.seq, -1, -1)
                    tail = ids[index][shared:]  # never empty: the shared prefix stops short of every prompt
                    tokens += [(t, shared + k, row.seq, k == len(tail) - 1) for k, t in enumerate(tail)]
                    outputs.append(row)
                self._feed(ctx, batch, tokens)
                finished: list[_Row] = []
                for out_index, row in zip(_output_positions(tokens), outputs, strict=True):
                    logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, out_index), shape=(model.n_vocab,))
                    token = _pick(logits, settings, row.rng)
                    row.out.append(token)
                    if token in stops or len(row.out) >= settings.max_new_tokens:
                        finished.append(row)
                    else:
                        row.last = token
                        if len(row.out) > 1:  # the first new token is fed at the prompt's length
                            row.pos += 1
                if finished:
                    for row in finished:
                        lib.llama_memory_seq_rm(memory, row.seq, -1, -1)
                        free.append(row.seq)
                    gone = {id(r) for r in finished}
                    active = [r for r in outputs if id(r) not in gone]
                    done([r.index for r in finished], [self._completion(r, stops) for r in finished])
                else:
                    active = outputs
        finally:
            lib.llama_batch_free(batch)
            lib.llama_free(ctx)

    def next_token_logprobs(self, texts: Sequence[str], token_ids: Sequence[int]) -> list[list[float]]:
        """log p(token | prompt) of each of ``token_ids`` right after each formatted prompt, in input order.

        What log-likelihood multiple choice needs (:func:`lpa.eval.utility.mmlu_loglik`): one decode per
        prompt with logits at its last token only, adapter applied, nothing sampled.
        """
        import numpy as np

        if not texts:
            return []
        lib = self.model.lib
        ids = self._prompt_rows(texts, 1)
        shared = _worth_sharing(ids)
        slots = max(1, min(SCORE_SLOTS, len(ids)))
        longest_tail = max(len(r) - shared for r in ids)
        n_ctx = -(-(shared + slots * longest_tail + slots) // 256) * 256
        ctx = self._context(n_ctx, slots + 1)
        batch = lib.llama_batch_init(n_ctx, 0, 1)
        memory = lib.llama_get_memory(ctx)
        wanted = np.asarray(list(token_ids), dtype=np.int64)
        scores: list[list[float]] = []
        try:
            if shared:
                self._feed(ctx, batch, [(t, p, 0, False) for p, t in enumerate(ids[0][:shared])])
            for start in range(0, len(ids), slots):
                rows = ids[start : start + slots]
                tokens: list[tuple[int, int, int, bool]] = []
                for seq, row in enumerate(rows, start=1):
                    if shared:
                        lib.llama_memory_seq_cp(memory, 0, seq, -1, -1)
                    tail = row[shared:]
                    tokens += [(t, shared + k, seq, k == len(tail) - 1) for k, t in enumerate(tail)]
                self._feed(ctx, batch, tokens)
                for out_index in _output_positions(tokens):
                    logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, out_index),
                                                   shape=(self.model.n_vocab,)).astype(np.float64)
                    top = logits.max()
                    log_norm = top + np.log(np.exp(logits - top).sum())
                    scores.append([float(v) for v in logits[wanted] - log_norm])
                for seq in range(1, len(rows) + 1):
                    lib.llama_memory_seq_rm(memory, seq, -1, -1)
        finally:
            lib.llama_batch_free(batch)
            lib.llama_free(ctx)
        return scores

    def _completion(self, row: _Row, stops: set[int]) -> Completion:
        stopped = row.out[-1] in stops
        kept = row.out[:-1] if stopped else row.out
        return Completion(text=self.tokenizer.decode(kept, skip_special_tokens=True), prompt_tokens=row.prompt_tokens,
                          completion_tokens=len(kept), finish_reason="eos" if stopped else "length", token_ids=kept)

    def _context(self, n_ctx: int, n_seq: int) -> Any:
        lib = self.model.lib
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_ctx  # one llama_decode may carry every joining prompt; llama.cpp splits it in ubatches
        params.n_ubatch = min(512, n_ctx)
        params.n_seq_max = n_seq
        params.n_outputs_max = n_seq  # one logits row per live sequence per step, not per batch token
        params.n_threads = params.n_threads_batch = self.threads
        params.kv_unified = KV_UNIFIED
        params.no_perf = True
        ctx = lib.llama_init_from_model(self.model.ptr, params)
        if not ctx:
            raise LpaError(f"llama.cpp could not create a {n_ctx}-token context for {n_seq - 1} sequences; "
                           "lower generation.batch_size or max_new_tokens.")
        if self.lora is not None:
            adapter = self.model.adapter(self.lora)
            arr = (lib.llama_adapter_lora_p_ctypes * 1)(adapter)
            scales = (ctypes.c_float * 1)(1.0)
            if lib.llama_set_adapters_lora(ctx, arr, 1, scales) != 0:
                lib.llama_free(ctx)
                raise LpaError(f"llama.cpp could not apply the adapter {self.lora}.")
        return ctx

    def _feed(self, ctx: Any, batch: Any, tokens: list[tuple[int, int, int, bool]]) -> None:
        """Decode (token, position, sequence, wants_logits) rows as one llama_batch."""
        lib = self.model.lib
        for k, (token, pos, seq, logits) in enumerate(tokens):
            batch.token[k] = token
            batch.pos[k] = pos
            batch.n_seq_id[k] = 1
            batch.seq_id[k][0] = seq
            batch.logits[k] = logits
        batch.n_tokens = len(tokens)
        code = lib.llama_decode(ctx, batch)
        if code != 0:
            raise RuntimeError(f"llama_decode failed with code {code} ({len(tokens)} tokens)")


def fits(live_cells: int, row_cells: int, budget: int = KV_CELL_BUDGET) -> bool:
    """Whether a waiting row may join: always into an empty batch, else while the live rows' cells stay in budget."""
    return live_cells == 0 or live_cells + row_cells <= budget


def _output_positions(tokens: list[tuple[int, int, int, bool]]) -> list[int]:
    return [k for k, (_, _, _, logits) in enumerate(tokens) if logits]


def _shared_prefix(rows: list[list[int]]) -> int:
    """Tokens every prompt starts with, kept at least one short of the shortest prompt (it needs its own logits)."""
    if len(rows) < 2:
        return 0
    first, n = rows[0], min(len(r) for r in rows) - 1
    k = 0
    while k < n and all(r[k] == first[k] for r in rows):
        k += 1
    return k


def _worth_sharing(rows: list[list[int]]) -> int:
    """The shared prefix decoded once into sequence 0, or 0 when shorter than :data:`MIN_SHARED`."""
    shared = _shared_prefix(rows)
    return shared if shared >= MIN_SHARED else 0


def _pick(logits: Any, settings: GenerationSettings, rng: Any) -> int:
    """Greedy arg-max, or the torch engine's rule: softmax(logits / T), top-p keeping the first token."""
    import numpy as np

    if not settings.do_sample:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / settings.temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if settings.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        sorted_probs = probs[order]
        outside = np.cumsum(sorted_probs) - sorted_probs > settings.top_p
        sorted_probs[outside] = 0.0
        probs = np.zeros_like(probs)
        probs[order] = sorted_probs
        probs /= probs.sum()
    return int(rng.choice(len(probs), p=probs))


BACKENDS.register("llama.cpp", LlamaCppBackend)
