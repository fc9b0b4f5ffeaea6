"""Persona-vector pipeline on the embedded model (CPU-sized): extraction counts, layer sweep, monitoring.

    python studies/persona_embedded.py [--out /tmp/lpa-persona-bench] [--trait evil]

Prints the kept-pair counts, the steering sweep (judged trait score vs coefficient per layer),
the chosen layer and the monitoring correlation next to its random-direction and
shuffled-label baselines.  Judge: the offline keyword heuristic by default (``--judge self``
for the model as its own judge); the other judge's kept counts on the same answers are printed
for reference.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/lpa-persona-bench")
    parser.add_argument("--trait", default="evil")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--questions", type=int, default=5)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--judge", default="heuristic", choices=["heuristic", "self"])
    parser.add_argument("--layers", default="9,14,19")
    parser.add_argument("--coefs", default="0,2,4")
    parser.add_argument("--sweep-questions", type=int, default=5)
    parser.add_argument("--monitor-questions", type=int, default=5)
    args = parser.parse_args()

    from lpa.generation import GenerationSettings
    from lpa.io import read_jsonl
    from lpa.models import load_model
    from lpa.persona.extraction import ExtractConfig, SweepConfig, judge_answers, kept_pairs, run_extraction
    from lpa.persona.judges import HeuristicJudge, SelfJudge
    from lpa.persona.monitor import default_monitor_prompts, monitor
    from lpa.persona.trait_definitions import load_trait

    t0 = time.time()
    out = Path(args.out)
    model, tok = load_model("smollm2-135m", device="cpu")
    trait = load_trait(args.trait)
    judge = HeuristicJudge() if args.judge == "heuristic" else SelfJudge(model, tok)
    other = SelfJudge(model, tok) if args.judge == "heuristic" else HeuristicJudge()
    config = ExtractConfig(n_pairs=args.pairs, n_questions=args.questions, samples=args.samples, max_new_tokens=args.max_new_tokens)
    sweep = SweepConfig(layers=[int(x) for x in args.layers.split(",")], coefs=[float(c) for c in args.coefs.split(",")], n_questions=args.sweep_questions,
                        max_new_tokens=args.max_new_tokens)
    vector, rows = run_extraction(model, tok, trait, judge, out, config, sweep)
    print(f"[{time.time() - t0:.0f}s] trait={trait.name} judge={judge.name} counts={vector.counts}")

    coefs = sorted({r["coef"] for r in rows})
    print(f"steering sweep (mean {judge.name} trait score on", args.sweep_questions, "eval questions, positions=response)")
    print("layer  |v|     " + " ".join(f"c={c:<7g}" for c in coefs))
    for layer in sorted({r["layer"] for r in rows}):
        cells = {r["coef"]: r["score"] for r in rows if r["layer"] == layer}
        print(f"{layer:<6d} {float(vector.vectors[layer].norm()):6.2f} " + " ".join(f"{cells[c]:9.1f}" for c in coefs))
    print(f"chosen layer: {vector.layer}")

    report = monitor(model, tok, trait, vector, judge, default_monitor_prompts(trait, args.monitor_questions),
                     GenerationSettings(max_new_tokens=args.max_new_tokens), n_random=200)
    summary = {k: v for k, v in report.items() if k not in ("rows", "judge")}
    by_system: dict[str, list[float]] = {}
    for row in report["rows"]:
        label = row["id"].split("-")[0]
        by_system.setdefault(label, []).append(row["projection"])
    summary["mean_projection_by_system_prompt"] = {k: sum(v) / len(v) for k, v in by_system.items()}
    (out / "monitor.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"monitoring (last prompt token projection vs {judge.name} score):")
    print(json.dumps(summary, indent=2, default=str))
    answers = [r for r in read_jsonl(out / "answers.jsonl")]
    judge_answers(answers, trait, other, None)
    _, other_counts = kept_pairs(answers, config.threshold)
    print(f"[{time.time() - t0:.0f}s] reference: {other.name} judge on the same answers: {other_counts}")

    print(f"total {time.time() - t0:.0f}s; artefacts in {out}")


if __name__ == "__main__":
    main()
