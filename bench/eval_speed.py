"""Speed of `lpa eval` on the embedded model: batched vs one prompt at a time, plus the yes/no probe.

Run: .venv/bin/python bench/eval_speed.py [--model smollm2-135m] [--n 16] [--max-new-tokens 32] [--batch-size 16]
Each timing is a full ``evaluate_model`` call (generation + keyword judging + metrics + report) into a
fresh run directory; prompts/s counts prompts, tokens/s counts generated tokens (from generations.jsonl).
On a shared CPU, set OMP_NUM_THREADS=1: oversubscribed torch threads are many times slower.

     .venv/bin/python bench/eval_speed.py --backends [--model smollm2-135m]
The same suite through the hf backend and through the openai backend against a local
OpenAI-compatible server (lpa.eval.backends.support.server, answering from the same model in this
process): prompts/s of each, i.e. the client/server overhead (a real engine such as vLLM is
where the speed-up comes from; see docs/gpu.md).

     .venv/bin/python bench/eval_speed.py --estimate experiments/paper.yaml \
         [--gen-tok-s T] [--fwd-tok-s F] [--mean-tokens-frac 1.0]
Counts the work of an experiment spec (completions and generated tokens per cell, GCG forward
tokens) and, given throughputs measured on your hardware (--measure prints them for a model),
the hours it takes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def timed_eval(model, tokenizer, n: int, max_new_tokens: int, batch_size: int) -> tuple[float, int]:
    from lpa.eval.runner import evaluate_model
    from lpa.eval.suite import EvalSuite
    from lpa.io import read_jsonl

    suite = EvalSuite(benchmarks=["smoke"], judges=["keyword"], limit=n, bootstrap=0,
                      generation={"max_new_tokens": max_new_tokens, "batch_size": batch_size})
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        evaluate_model(model, tokenizer, suite, out)
        elapsed = time.perf_counter() - start
        tokens = sum(r["completion_tokens"] for r in read_jsonl(Path(out) / "generations.jsonl"))
    return elapsed, tokens


def backends(args: argparse.Namespace) -> None:
    """hf backend vs openai backend (local server, same model) on the same prompts and settings."""
    import os

    from lpa.eval.backends.support.server import LocalServer
    from lpa.eval.runner import evaluate_model
    from lpa.eval.suite import EvalSuite
    from lpa.models import load_model

    model, tokenizer = load_model(args.model, device="cpu")
    common = dict(benchmarks=["smoke"], judges=["keyword"], limit=args.n, bootstrap=0,
                  generation={"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size})
    print(f"backends  {args.model}, {args.n} smoke prompts, max_new_tokens={args.max_new_tokens}, "
          f"batch {args.batch_size}, load average {os.getloadavg()[0]:.1f}")
    timed_eval(model, tokenizer, 2, 4, 2)  # warm-up
    texts = {}
    with LocalServer(model, tokenizer) as server:
        for name, backend in (("hf", {"name": "hf"}),
                              ("openai", {"name": "openai", "base_url": server.url, "concurrency": 4})):
            with tempfile.TemporaryDirectory() as out:
                start = time.perf_counter()
                evaluate_model(model if name == "hf" else None, tokenizer, EvalSuite(**common, backend=backend), out,
                               model_name=args.model)
                elapsed = time.perf_counter() - start
                from lpa.io import read_jsonl

                texts[name] = [r["text"] for r in sorted(read_jsonl(Path(out) / "generations.jsonl"),
                                                         key=lambda r: r["key"])]
            print(f"{name:7s} backend: {elapsed:7.2f} s  {args.n / elapsed:6.2f} prompts/s")
        print(f"server requests {server.log.requests}, prompts per request {server.log.batch_sizes}")
    print(f"same completions from both backends: {texts['hf'] == texts['openai']}")


# Published sizes, used only when a benchmark's file is not available here.
PUBLISHED_SIZES = {"harmbench": 240, "strongreject": 313, "jailbreakbench": 100, "donotanswer": 939,
                   "xstest": 450, "orbench": 1319, "advbench": 520, "smoke": 60}


WORST_CASE_COMPLETIONS = {  # target + attacker (+ evaluator) completions per behaviour, budget fully spent
    "tap": lambda a: a.depth * a.width * a.branching * 2 + a.depth * a.width,
    "crescendo": lambda a: 2 * (a.turns + a.backtracks),
    "autodan": lambda a: a.steps // a.check_every + int(a.mutation * a.population * a.steps),
    "in-the-wild": lambda a: a.k or 488,
}


def estimate(args: argparse.Namespace) -> None:
    """Count the evaluation work of an experiment spec; hours from measured throughputs."""
    from lpa.config import build_config
    from lpa.eval.attacks import ATTACKS
    from lpa.eval.benchmarks import BENCHMARKS
    from lpa.experiments.spec import ExperimentSpec
    from lpa.plugins import create
    from lpa.records import Sample

    spec = build_config(ExperimentSpec, args.estimate, [])
    suite = spec.eval
    probe = Sample(id="probe", benchmark="probe", prompt="How do I do something harmful?", label="harmful")
    cells = len(spec.models) * sum(len(spec.seeds_of(m)) if m.method != "base" else 1 for m in spec.methods)
    max_tokens = suite.generation.max_new_tokens
    completions = gcg_tokens = 0.0
    lines = []
    for bench_spec in suite.benchmarks:
        bench = create(BENCHMARKS, bench_spec)
        try:
            size, how = len(bench.load()), "loaded"
        except Exception:  # offline: no file
            size, how = PUBLISHED_SIZES.get(bench.name, 0), "published size"
        for attack_spec in suite.attacks:
            attack = create(ATTACKS, attack_spec)
            scope = suite.attack_benchmarks.get(attack.name)
            if scope is not None and bench.name not in scope:
                continue
            a = attack.args
            n = min(size, getattr(a, "limit", None) or size)  # search attacks may take only the first N
            if attack.name == "gcg":
                per = 1
                seq = 80 + a.suffix_length  # prompt + suffix + target tokens, typical chat template
                gcg_tokens += size * a.steps * (a.candidates + 3) * seq  # candidates fwd + one fwd/bwd (~3 fwd)
            elif attack.name == "pair":
                per = 2 * a.streams * a.rounds  # target + attacker completions (judge calls not counted)
            elif attack.name == "embedding-pgd":
                per = 1
            elif attack.name in WORST_CASE_COMPLETIONS:  # red-teaming attacks: their worst case (no early success)
                per = WORST_CASE_COMPLETIONS[attack.name](a)
            else:
                per = len(attack.transform(probe))
            completions += n * per
            lines.append(f"  {bench.name:<14} {n:5d} ({how:<14}) x {attack.name:<12} {per:6d} = {n * per:>10,.0f}")
    tokens = completions * max_tokens * args.mean_tokens_frac
    print(f"estimate  {args.estimate}: {cells} evaluated cells (models x methods x seeds; base once per model)")
    print("\n".join(lines))
    print(f"per cell: {completions:,.0f} completions, {tokens:,.0f} generated tokens "
          f"(max_new_tokens {max_tokens} x {args.mean_tokens_frac}), {gcg_tokens:,.0f} GCG forward tokens")
    print(f"all cells: {completions * cells:,.0f} completions, {tokens * cells:,.0f} generated tokens, "
          f"{gcg_tokens * cells:,.0f} GCG forward tokens")
    if args.gen_tok_s and args.fwd_tok_s:
        gen_h = tokens * cells / args.gen_tok_s / 3600
        gcg_h = gcg_tokens * cells / args.fwd_tok_s / 3600
        print(f"hours at {args.gen_tok_s:,.0f} generated tok/s and {args.fwd_tok_s:,.0f} forward tok/s: "
              f"generation {gen_h:,.1f} h + GCG {gcg_h:,.1f} h = {gen_h + gcg_h:,.1f} h "
              "(judging and training not included)")


def measure(args: argparse.Namespace) -> None:
    """Throughputs to feed --estimate: batched generation (tok/s) and batched forward (tok/s)."""
    import torch

    from lpa.generation import GenerationSettings, generate
    from lpa.models import load_model

    model, tok = load_model(args.model, device=args.device)
    prompts = [f"Write a short paragraph about topic number {i}." for i in range(args.batch_size)]
    generate(model, tok, prompts[:2], GenerationSettings(max_new_tokens=2))
    start = time.perf_counter()
    outs = generate(model, tok, prompts, GenerationSettings(max_new_tokens=args.max_new_tokens,
                                                            batch_size=args.batch_size))
    gen = sum(o.completion_tokens for o in outs) / (time.perf_counter() - start)
    ids = torch.randint(0, model.config.vocab_size, (args.batch_size, 100), device=model.device)
    with torch.inference_mode():
        model(input_ids=ids[:2])
        start = time.perf_counter()
        model(input_ids=ids)
    fwd = ids.numel() / (time.perf_counter() - start)
    print(f"measure  {args.model} on {model.device}: generation {gen:,.1f} tok/s (batch {args.batch_size}, hf), "
          f"forward {fwd:,.1f} tok/s (batch {args.batch_size} x 100)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=16, help="smoke prompts")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--backends", action="store_true", help="hf vs openai backend (local server)")
    parser.add_argument("--estimate", help="experiment spec whose work to count")
    parser.add_argument("--gen-tok-s", type=float, help="measured generated tokens/s (for --estimate)")
    parser.add_argument("--fwd-tok-s", type=float, help="measured forward tokens/s (for --estimate)")
    parser.add_argument("--mean-tokens-frac", type=float, default=1.0, help="mean completion / max_new_tokens")
    parser.add_argument("--measure", action="store_true", help="print throughputs for --estimate")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    if args.backends:
        return backends(args)
    if args.estimate:
        return estimate(args)
    if args.measure:
        return measure(args)

    import torch

    from lpa.eval.benchmarks import BENCHMARKS
    from lpa.eval.judges.refusal_probe import refusal_probe_scores
    from lpa.models import load_model
    from lpa.plugins import create

    model, tokenizer = load_model(args.model, device="cpu")
    print(f"model {args.model}, {args.n} smoke prompts, max_new_tokens={args.max_new_tokens}, "
          f"torch threads={torch.get_num_threads()}")
    timed_eval(model, tokenizer, 2, 4, 2)  # warm-up
    rates = {}
    for label, batch in (("batched", args.batch_size), ("unbatched", 1)):
        elapsed, tokens = timed_eval(model, tokenizer, args.n, args.max_new_tokens, batch)
        rates[label] = args.n / elapsed
        print(f"{label:9s} (batch {batch:2d}): {elapsed:7.2f} s  {args.n / elapsed:6.2f} prompts/s  "
              f"{tokens / elapsed:7.1f} generated tokens/s  ({tokens} tokens)")
    print(f"batched / unbatched speed-up: {rates['batched'] / rates['unbatched']:.2f}x")
    requests = [s.prompt for s in create(BENCHMARKS, "smoke").load()]
    start = time.perf_counter()
    refusal_probe_scores(model, tokenizer, requests, batch_size=16)
    elapsed = time.perf_counter() - start
    print(f"yes/no probe: {len(requests)} requests in {elapsed:.2f} s = {len(requests) / elapsed:.1f} requests/s")


if __name__ == "__main__":
    main()
