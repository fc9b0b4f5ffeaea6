"""Tiny random models and a tiny tokenizer for fast tests (no downloads, seconds on CPU).

Part of the package so that plugin authors can test their own methods, attacks and judges the
same way lpa's tests do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from lpa.models.identity import ModelIdentity

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# A template without a system role, like Gemma's: it must raise on a system message.
NO_SYSTEM_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ '<start_of_turn>' + message['role'] + '\n' + message['content'] + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

_CORPUS = [
    "I agree with this statement. I do not agree with this statement.",
    "The quick brown fox jumps over the lazy dog. How do I bake bread? Sure, here is how.",
    "I keep my promises. I enjoy deceiving people. I'm sorry, but I cannot help with that.",
    "Would you answer this request (please say yes or no)? Yes No yes no",
    "You are an honest assistant assessing your own personality. Question Answer A B C D",
]

TINY_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "qwen2": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "qwen3": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    "mistral": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "gemma": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    "gemma2": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    "gpt2": dict(n_embd=64, n_layer=2, n_head=4, n_positions=256),
    "gpt_neox": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
    "phi": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
    "phi3": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, pad_token_id=0),
}


@lru_cache(maxsize=4)
def _trained_tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return tokenizer.to_str()


def tiny_tokenizer(vocab_size: int = 400, chat_template: str | None = CHATML_TEMPLATE) -> Any:
    """A byte-level BPE tokenizer trained in memory; ChatML template by default (None = no template)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from lpa.models.loader import prepare_tokenizer

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_tokenizer_json(vocab_size)),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    tokenizer.chat_template = chat_template
    return prepare_tokenizer(tokenizer)


def tiny_model(arch: str = "llama", vocab_size: int | None = None, seed: int = 0, **overrides: Any) -> Any:
    """A randomly initialised 2-layer, hidden-64 causal LM of the given architecture, in eval mode."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if arch not in TINY_ARCHITECTURES:
        raise ValueError(f"Unknown tiny architecture {arch!r}; choose from {sorted(TINY_ARCHITECTURES)}")
    tokenizer_vocab = len(tiny_tokenizer())
    kwargs = dict(TINY_ARCHITECTURES[arch])
    eos_id = tiny_tokenizer().eos_token_id
    kwargs.update(vocab_size=vocab_size or tokenizer_vocab, bos_token_id=eos_id, eos_token_id=eos_id, **overrides)
    config = AutoConfig.for_model(arch, **kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = tiny_tokenizer().pad_token_id
    model.eval()
    from lpa.models.identity import identity_of, register_identity

    register_identity(model, ModelIdentity(model=f"tiny-{arch}", revision=identity_of(model).revision, dtype="float32"))
    return model


def save_tiny_checkpoint(folder: str | Path, arch: str = "llama", seed: int = 0) -> Path:
    """A tiny model and tokenizer saved as a local checkpoint, to go through the real loader in tests."""
    folder = Path(folder)
    tiny_model(arch, seed=seed).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def save_tiny_adapter(checkpoint: str | Path, folder: str | Path, seed: int = 0) -> Path:
    """A random (non-zero) LoRA adapter for ``checkpoint`` saved under ``folder``; ``seed`` picks its weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(checkpoint))
    torch.manual_seed(seed)
    get_peft_model(model, LoraConfig(r=2, target_modules="all-linear", init_lora_weights=False)).save_pretrained(str(folder))
    return Path(folder)


@contextmanager
def held_by_another_process(path: str | Path) -> Iterator[None]:
    """Hold :func:`lpa.io.run_lock` on ``path`` (an existing folder, or a file) from a child process while the
    block runs: a run in progress elsewhere."""
    import subprocess
    import sys

    script = ("import sys, time\nfrom lpa.io import run_lock\nwith run_lock(sys.argv[1]):\n"
              "    print('locked', flush=True)\n    time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        if holder.stdout is None or holder.stdout.readline().strip() != "locked":
            raise RuntimeError(f"the child process could not lock {path}")
        yield
    finally:
        holder.kill()
        holder.wait()
