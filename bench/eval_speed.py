"""Speed of `lpa eval` on the embedded model: batched vs one prompt at a time, plus the yes/no probe.

Run: .venv/bin/python bench/eval_speed.py [--model smollm2-135m] [--n 16] [--max-new-tokens 32] [--batch-size 16]
Each timing is a full ``evaluate_model`` call (generation + keyword judging + metrics + report) into a
fresh run directory; prompts/s counts prompts, tokens/s counts generated tokens (from generations.jsonl).
On a shared CPU, set OMP_NUM_THREADS=1: oversubscribed torch threads are many times slower.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=16, help="smoke prompts")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    import torch

    from lpa.eval.benchmarks import BENCHMARKS
    from lpa.eval.judges.yesno import refusal_probe_scores
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
