"""Generation speed on the embedded model: batched vs one prompt at a time, cold vs cached load.

Run: .venv/bin/python bench/generation.py [--model smollm2-135m] [--n 16] [--max-new-tokens 64]
Prints figures and ratios (targets: batched >= 4x one-at-a-time at batch 16; cached load < 5 s).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=16, help="prompts (= batch size)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold (GGUF conversion) load")
    args = parser.parse_args()

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
