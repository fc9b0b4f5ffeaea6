"""vLLM in this process (``pip install 'lpa[vllm]'``, a CUDA GPU): one engine, LoRA per request.

Prompts are formatted with the model's chat template here, exactly as for the other backends;
the adapter is passed as a ``LoRARequest`` with every call, so base and adapter share one
engine.  Untested in CI (no GPU there); the ``openai`` backend against ``vllm serve`` is the
tested path with the same behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lpa.errors import LpaError
from lpa.eval.backends import BACKENDS, BackendConfig, OnBatch, default_lora_name
from lpa.generation import (
    Completion,
    Conversation,
    GenerationSettings,
    format_chats,
    length_sorted_batches,
    uses_chat_template,
)


class VLLMBackend:
    name = "vllm"
    engine = "vllm"

    @classmethod
    def create(cls, config: BackendConfig, *, model: Any, tokenizer: Any, model_name: str,
               adapter: str | None) -> VLLMBackend:
        return cls(config, tokenizer, model_name, adapter)
    _engines: dict[tuple[str, int], Any] = {}

    def __init__(self, config: BackendConfig, tokenizer: Any, model_name: str, adapter: str | None) -> None:
        try:
            from vllm import LLM
        except ImportError:
            raise LpaError("The vllm backend needs vLLM: pip install 'lpa[vllm]' (CUDA GPU required).") from None
        from lpa.models.loader import _checkpoint_for

        self.config, self.tokenizer, self.adapter = config, tokenizer, adapter
        key = (model_name, config.tensor_parallel_size)
        if key not in self._engines:  # one engine per process: base and adapters share it
            self._engines[key] = LLM(
                model=_checkpoint_for(model_name), enable_lora=True, max_lora_rank=config.max_lora_rank,
                tensor_parallel_size=config.tensor_parallel_size,
                gpu_memory_utilization=config.gpu_memory_utilization,
            )
        self.llm = self._engines[key]
        self.lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest(config.lora_name or default_lora_name(adapter), abs(hash(adapter)) % 2**31, adapter)

    def generate(self, conversations: Sequence[Conversation], settings: GenerationSettings, *,
                 system: str | None = None, prefills: Sequence[str | None] | None = None,
                 progress: bool | str = False, on_batch: OnBatch | None = None) -> list[Completion]:
        from vllm import SamplingParams

        from lpa.progress import progress_bar

        texts = format_chats(self.tokenizer, conversations, system, prefills)
        params = SamplingParams(
            max_tokens=settings.max_new_tokens,
            temperature=settings.temperature if settings.do_sample else 0.0,
            top_p=settings.top_p if settings.do_sample else 1.0,
            seed=settings.seed,
        )
        results: list[Completion | None] = [None] * len(texts)
        # vLLM schedules continuously; chunks only bound what a crash can lose.
        chunks = length_sorted_batches(self.tokenizer, texts, max(settings.batch_size, 256))
        with progress_bar("generating (vllm)", len(texts), enabled=None if progress else False) as bar:
            for group in chunks:
                special = not uses_chat_template(self.tokenizer)  # templates carry their own BOS
                ids = self.tokenizer([texts[i] for i in group], add_special_tokens=special)["input_ids"]
                outputs = self.llm.generate([{"prompt_token_ids": x} for x in ids], params,
                                               lora_request=self.lora, use_tqdm=False)
                completions = [
                    Completion(text=o.outputs[0].text, prompt_tokens=len(o.prompt_token_ids),
                               completion_tokens=len(o.outputs[0].token_ids),
                               finish_reason="length" if o.outputs[0].finish_reason == "length" else "eos")
                    for o in outputs
                ]
                for index, completion in zip(group, completions, strict=True):
                    results[index] = completion
                if on_batch is not None:
                    on_batch(group, completions)
                bar.advance(len(group))
        return [r for r in results if r is not None]


BACKENDS.register("vllm", VLLMBackend)
