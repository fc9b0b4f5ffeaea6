"""Generation speed: batched vs one prompt at a time, cold vs cached load, and (--speed) prompts/s
against a compute-bound estimate.

Run: .venv/bin/python bench/generation.py [--model smollm2-135m] [--n 16] [--max-new-tokens 64]
Prints figures and ratios (targets: batched >= 4x one-at-a-time at batch 16; cached load < 5 s).

     .venv/bin/python bench/generation.py --speed --model qwen2.5-coder-0.5b [--prompts smoke|paragraphs]
prompts/s at 64 new tokens, batch 16, for both engines (hf = model.generate, lpa = our decoding
loop that drops finished rows), and its ratio to a compute-bound estimate: FLOPs from the model's
config (prefill over the real prompt tokens, decode over the tokens produced) divided by matmul
throughput measured here at the same shapes (issue 10 §5 target: >= 1 prompt/s on Qwen-0.5B).

     .venv/bin/python bench/generation.py --agreement [--models qwen2.5-coder-0.5b,qwen2.5-coder-1.5b]
         [--batches 16,64] [--n 64] [--busy]
the torch engine vs the llama.cpp engine on the same prompts (HarmBench-val and XSTest-safe from
$LPA_DATA_DIR, else the smoke set), side by side in one run: prompts/s, tok/s, the ratio, the share
of identical greedy answers and the share of prompts whose refusal label (the default judge)
differs.  ``--busy`` runs a second CPU-bound process throughout (the shared-machine case).  Issue 22
targets: >= 3x at batch 16 on both models, >= 1.5x at batch 64, >= 2 prompts/s on 0.5B.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

LOAD_SNIPPET = (
    "import time,sys; t=time.perf_counter(); from lpa.models import load_model; "
    "load_model(sys.argv[1], device='cpu'); print(time.perf_counter()-t)"
)


def timed_load(model: str, cache_dir: str | None) -> float:
    """Load in a fresh process so import and file-cache effects are what a user sees."""
    env = dict(os.environ)
    if cache_dir is not None:
        env["LPA_CACHE_DIR"] = cache_dir
    out = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, model], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def flops_per_token(config, context: float) -> tuple[float, float]:  # noqa: ANN001
    """(decoder FLOPs per token, lm_head FLOPs per token) from the config: 2 x multiply-adds."""
    hidden = config.hidden_size
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    inter = config.intermediate_size
    layers = config.num_hidden_layers
    projections = hidden * heads * head_dim + 2 * hidden * kv * head_dim + heads * head_dim * hidden
    mlp = 3 * hidden * inter  # gated MLP (gate, up, down)
    attention = 2 * heads * head_dim * context  # scores + weighted sum over the context
    return 2.0 * layers * (projections + mlp + attention), 2.0 * hidden * config.vocab_size


def matmul_gflops(rows: int, inner: int, cols: int, seconds: float = 1.0) -> float:
    """Measured fp32 matmul throughput at one shape (GFLOP/s)."""
    import torch

    a, b = torch.randn(rows, inner), torch.randn(inner, cols)
    torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
    return 2.0 * rows * inner * cols * count / (time.perf_counter() - start) / 1e9


def speed(args: argparse.Namespace) -> None:
    import torch

    from lpa.generation import GenerationSettings, format_chat, generate_texts
    from lpa.models import load_model

    model, tok = load_model(args.model, device="cpu")
    if args.prompts == "smoke":
        from lpa.eval.benchmarks.smoke import smoke_rows

        rows = smoke_rows()  # half harmful, half benign: the eval workload (refusals are short)
        harmful = [r["prompt"] for r in rows if r.get("label") == "harmful"]
        benign = [r["prompt"] for r in rows if r.get("label") != "harmful"]
        prompts = harmful[: args.n // 2] + benign[: args.n - args.n // 2]
    else:
        topics = ["bread", "chess", "rain", "volcanoes", "tea", "bicycles", "owls", "glass",
                  "music", "maps", "bees", "clocks", "ice", "paper", "salt", "stars"]
        prompts = [f"Write a short paragraph about {topics[i % len(topics)]}." for i in range(args.n)]
    texts = [format_chat(tok, p) for p in prompts]
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    generate_texts(model, tok, texts[:2], GenerationSettings(max_new_tokens=2))  # warm-up
    print(f"speed  {args.model}, {len(texts)} {args.prompts} prompts, batch {args.batch_size}, "
          f"{args.max_new_tokens} new tokens, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    config = model.config
    prompt_tokens = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    measured = {}
    for engine in args.engines.split(","):
        start = time.perf_counter()
        outs = generate_texts(model, tok, texts, settings, engine=engine)
        seconds = time.perf_counter() - start
        produced = sum(len(o.token_ids or []) for o in outs)
        measured[engine] = (len(texts) / seconds, produced, seconds)
        print(f"gen    engine {engine:<3}: {len(texts)} prompts in {seconds:6.1f} s = {len(texts) / seconds:5.2f} prompts/s "
              f"({produced} tokens produced, {produced / seconds:6.1f} tok/s)")
    mean_prompt = sum(prompt_tokens) / len(prompt_tokens)
    layer_f, head_f = flops_per_token(config, mean_prompt + args.max_new_tokens / 2)
    rows_prefill = int(args.batch_size * mean_prompt)
    hidden, inter = config.hidden_size, config.intermediate_size
    t_prefill = matmul_gflops(rows_prefill, hidden, inter)
    t_decode = matmul_gflops(args.batch_size, hidden, inter)
    print(f"matmul fp32 measured: {t_prefill:6.1f} GFLOP/s at ({rows_prefill}x{hidden})@({hidden}x{inter}) [prefill], "
          f"{t_decode:6.1f} GFLOP/s at ({args.batch_size}x{hidden})@({hidden}x{inter}) [decode]")
    import torch as _torch

    from lpa.generation import _shared_prefix, length_sorted_batches

    saved = 0  # prompt tokens the lpa engine does not recompute (prefix shared within a batch)
    for group in length_sorted_batches(tok, texts, args.batch_size):
        ids = [_torch.tensor(tok(texts[i], add_special_tokens=False)["input_ids"]) for i in group]
        shared = min(_shared_prefix(ids), min(len(x) for x in ids) - 1) if len(ids) > 1 else 0
        saved += shared * (len(ids) - 1) if shared >= 8 else 0
    print(f"shared prefix: {saved} of {sum(prompt_tokens)} prompt tokens need no recomputation in the lpa engine")
    for engine, (rate, produced, _seconds) in measured.items():
        useful = sum(prompt_tokens) - (saved if engine == "lpa" else 0)
        prefill = useful * layer_f + len(texts) * head_f  # logits only at the last prompt position
        decode = produced * (layer_f + head_f)
        bound_s = prefill / (t_prefill * 1e9) + decode / (t_decode * 1e9)
        print(f"bound  engine {engine:<3}: prefill {prefill / 1e9:7.1f} GFLOP + decode {decode / 1e9:7.1f} GFLOP "
              f"-> {bound_s:6.1f} s = {len(texts) / bound_s:5.2f} prompts/s compute-bound; "
              f"measured/bound = {rate / (len(texts) / bound_s):.2f}")
    if len(measured) == 2:
        (a, (ra, _, _)), (b, (rb, _, _)) = measured.items()
        print(f"ratio  {b} / {a}: {rb / ra:.2f}x")


def agreement_prompts(n: int) -> list[str]:
    """Half harmful (HarmBench val), half benign (XSTest safe): the eval workload, refusals included."""
    import csv
    from pathlib import Path

    data = Path(os.environ.get("LPA_DATA_DIR", ""))
    harmful: list[str] = []
    benign: list[str] = []
    if (data / "harmbench_behaviors_text_val.csv").is_file() and (data / "xstest_prompts.csv").is_file():
        with open(data / "harmbench_behaviors_text_val.csv", encoding="utf-8") as handle:
            harmful = [r["Behavior"] for r in csv.DictReader(handle) if not r.get("ContextString")]
        with open(data / "xstest_prompts.csv", encoding="utf-8") as handle:
            benign = [r["prompt"] for r in csv.DictReader(handle) if not r.get("type", "").startswith("contrast")]
    else:
        from lpa.eval.benchmarks.smoke import smoke_rows

        rows = smoke_rows()
        harmful = [r["prompt"] for r in rows if r.get("label") == "harmful"]
        benign = [r["prompt"] for r in rows if r.get("label") != "harmful"]
    half = n // 2
    prompts = harmful[:half] + benign[: n - half]
    return (prompts * (n // max(1, len(prompts)) + 1))[:n]


def refusal_labels(prompts: list[str], texts: list[str]) -> list[str]:
    """The default judge's label for each answer (refused / complied / ...)."""
    from lpa.eval.judges import DEFAULT_JUDGE, JUDGES
    from lpa.records import Generation, Sample

    judge = JUDGES.get(DEFAULT_JUDGE)()
    samples = [Sample(id=str(i), benchmark="bench", prompt=p, label="harmful") for i, p in enumerate(prompts)]
    gens = [Generation(sample_id=str(i), model="bench", text=t, messages=[{"role": "user", "content": p}])
            for i, (p, t) in enumerate(zip(prompts, texts, strict=True))]
    return [v.label for v in judge.judge(samples, gens)]


def _busy_loop() -> None:  # a second CPU-bound process (another user's job)
    while True:
        sum(i * i for i in range(10_000))


def agreement(args: argparse.Namespace) -> None:
    import multiprocessing

    busy = multiprocessing.Process(target=_busy_loop, daemon=True) if args.busy else None
    if busy is not None:
        busy.start()
    try:
        for model_name in args.models.split(","):
            agree_on(model_name, args, busy is not None)
    finally:
        if busy is not None:
            busy.terminate()


def agree_on(model_name: str, args: argparse.Namespace, busy: bool) -> None:
    import torch

    from lpa.eval.backends import BackendConfig
    from lpa.eval.backends.llamacpp import LlamaCppBackend
    from lpa.generation import GenerationSettings, format_chat, generate_texts
    from lpa.models import load_model

    model, tok = load_model(model_name, device="cpu")
    engine = LlamaCppBackend(BackendConfig(name="llama.cpp"), tok, model_name, None)
    batches = [int(b) for b in args.batches.split(",")]
    prompts = agreement_prompts(max(args.n, *batches))
    texts = [format_chat(tok, p) for p in prompts]
    warm = GenerationSettings(max_new_tokens=2)
    generate_texts(model, tok, texts[:2], warm)
    engine.generate_texts(texts[:2], warm)
    print(f"agreement {model_name}: {len(texts)} prompts (half HarmBench-val, half XSTest-safe), greedy, "
          f"{args.max_new_tokens} new tokens, torch threads {torch.get_num_threads()}, llama.cpp threads "
          f"{engine.threads}, {'with' if busy else 'no'} second CPU-bound process, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    answers: dict[str, list[str]] = {}
    for batch in batches:
        settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=batch)
        rates = {}
        runs = {"torch": lambda s: generate_texts(model, tok, texts, s), "llama.cpp": lambda s: engine.generate_texts(texts, s)}
        for label, run in runs.items():
            start = time.perf_counter()
            outs = run(settings)
            seconds = time.perf_counter() - start
            produced = sum(o.completion_tokens for o in outs)
            rates[label] = len(texts) / seconds
            answers[label] = [o.text for o in outs]
            print(f"  batch {batch:3d} {label:<9}: {len(texts) / seconds:5.2f} prompts/s, "
                  f"{produced / seconds:6.1f} tok/s ({seconds:6.1f} s, load average {os.getloadavg()[0]:.1f})",
                  flush=True)
        print(f"  batch {batch:3d} ratio llama.cpp / torch: {rates['llama.cpp'] / rates['torch']:.2f}x", flush=True)
    same = sum(a == b for a, b in zip(answers["torch"], answers["llama.cpp"], strict=True))
    labels_t = refusal_labels(prompts, answers["torch"])
    labels_l = refusal_labels(prompts, answers["llama.cpp"])
    differ = sum((a == "refused") != (b == "refused") for a, b in zip(labels_t, labels_l, strict=True))
    print(f"  identical greedy answers: {same}/{len(texts)} = {same / len(texts):.2f}; refusal label differs "
          f"(default judge): {differ}/{len(texts)} = {differ / len(texts):.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=16, help="prompts (= batch size)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold (GGUF conversion) load")
    parser.add_argument("--speed", action="store_true", help="prompts/s vs the compute-bound estimate only")
    parser.add_argument("--prompts", choices=["paragraphs", "smoke"], default="paragraphs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--engines", default="hf,lpa")
    parser.add_argument("--agreement", action="store_true", help="torch vs llama.cpp engine (issue 22)")
    parser.add_argument("--models", default="qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    parser.add_argument("--batches", default="16,64")
    parser.add_argument("--busy", action="store_true", help="with a second CPU-bound process running")
    args = parser.parse_args()
    if args.agreement:
        agreement(args)
        return
    if args.speed:
        speed(args)
        return

    from lpa.generation import GenerationSettings, generate
    from lpa.models import load_model

    if not args.skip_cold:
        with tempfile.TemporaryDirectory() as fresh:
            cold = timed_load(args.model, fresh)
            cached = timed_load(args.model, fresh)
        print(f"load  cold (GGUF de-quantise + convert): {cold:6.1f} s")
        print(f"load  cached (safetensors, new process):  {cached:6.1f} s   target < 5 s")

    model, tok = load_model(args.model, device="cpu")
    topics = ["bread", "chess", "rain", "volcanoes", "tea", "bicycles", "owls", "glass",
              "music", "maps", "bees", "clocks", "ice", "paper", "salt", "stars"]
    prompts = [f"Write a short paragraph about {topics[i % len(topics)]}." for i in range(args.n)]
    generate(model, tok, prompts[:2], GenerationSettings(max_new_tokens=4))  # warm-up

    results = {}
    for label, batch_size in (("one-at-a-time", 1), (f"batched ({args.n})", args.n)):
        settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=batch_size)
        start = time.perf_counter()
        outs = generate(model, tok, prompts, settings)
        seconds = time.perf_counter() - start
        tokens = sum(o.completion_tokens for o in outs)
        results[label] = tokens / seconds
        print(f"gen   {label:<16} {tokens:5d} tokens in {seconds:6.1f} s = {tokens / seconds:7.1f} tok/s")
    one, batched = results.values()
    print(f"ratio batched / one-at-a-time: {batched / one:.2f}x   target >= 4x")


if __name__ == "__main__":
    main()
