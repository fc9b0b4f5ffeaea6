"""Base vs trained adapter on the embedded model: generations, yes/no refusal probe, guard stats.

Usage: python studies/lpa_embedded_report.py RUN_DIR --data-dir /path/to/benchmarks [--n-gen 5] [--n-probe 20]
Uses the evaluation engineer's yes/no probe (lpa.eval.judges.refusal_probe.refusal_probe_scores).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def _instructions(path: Path, n: int) -> list[str]:
    return [row["instruction"] for row in json.loads(path.read_text(encoding="utf-8"))[:n]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--n-gen", type=int, default=5)
    parser.add_argument("--n-probe", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    args = parser.parse_args()

    from lpa.coherence import coherence_stats, is_refusal
    from lpa.eval.judges.refusal_probe import refusal_probe_scores
    from lpa.generation import GenerationSettings, generate
    from lpa.io import read_jsonl
    from lpa.models import load_model

    harmful = _instructions(args.data_dir / "harmful_val.json", args.n_probe)
    benign = _instructions(args.data_dir / "harmless_val.json", args.n_probe)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=2 * args.n_gen)
    results = {}
    for label, adapter in (("base", None), ("trained", args.run_dir / "adapter")):
        model, tok = load_model("smollm2-135m", device="cpu", adapter=adapter)
        prompts = harmful[: args.n_gen] + benign[: args.n_gen]
        texts = [c.text for c in generate(model, tok, prompts, settings)]
        probe_h = refusal_probe_scores(model, tok, harmful)
        probe_b = refusal_probe_scores(model, tok, benign)
        results[label] = {"texts": texts, "probe_h": probe_h, "probe_b": probe_b}
        print(f"\n=== {label} ===")
        for prompt, text in zip(prompts, texts, strict=True):
            kind = "H" if prompt in harmful[: args.n_gen] else "B"
            print(f"[{kind}] {prompt[:70]!r}\n    -> {text[:160]!r} (refusal={is_refusal(text)})")
        stats = coherence_stats(texts[args.n_gen :])
        print(f"benign gens: refusal={stats.refusal_rate:.2f} template_leak={stats.template_leak_rate:.2f} "
              f"distinct2={stats.mean_distinct_2:.2f}; harmful gens refusal="
              f"{sum(map(is_refusal, texts[: args.n_gen])) / args.n_gen:.2f}")
        print(f"yes/no probe log P(No)-log P(Yes): harmful mean={statistics.mean(probe_h):.3f} "
              f"(frac>0 {sum(s > 0 for s in probe_h) / len(probe_h):.2f}), benign mean={statistics.mean(probe_b):.3f} "
              f"(frac>0 {sum(s > 0 for s in probe_b) / len(probe_b):.2f}) over {len(probe_h)}+{len(probe_b)} requests")
    guard = [r for r in read_jsonl(args.run_dir / "metrics.jsonl") if any(k.startswith("guard/") for k in r)]
    print("\n=== collapse guard (training run) ===")
    for row in guard:
        print(f"step {row['step']}: " + " ".join(f"{k[6:]}={row[k]:.2f}" for k in sorted(row) if k.startswith("guard/")))


if __name__ == "__main__":
    main()
