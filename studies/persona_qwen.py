"""Persona vectors on a model that can play a persona (CPU-sized): judge agreement, extraction,
steering sweep with coherence, monitoring with baselines, and data screening with planted samples.

    OMP_NUM_THREADS=1 python studies/persona_qwen.py --traits evil,sycophancy,neuroticism \\
        [--model qwen2.5-coder-0.5b] [--judge-model qwen2.5-coder-1.5b] [--out /work/runs/persona/qwen]

Every stage is cached in ``--out/<trait>/`` (answers, judgements, sweep cells, judge checks, monitor
and screen reports, each reused only for the same judge spec / vector / sizes), so a rerun resumes
and only prints.  Each candidate judge's agreement with the built-in hand labels is printed first;
``--judge auto`` then uses, per trait, the candidate with the highest Pearson r, and that agreement
is printed beside every trait score.  Sizes default to what two shared CPU cores finish in about an hour.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path
from typing import Any


def _fmt(value: Any, spec: str = ".2f") -> str:
    return "nan" if value is None else format(value, spec)


def _cached(path: Path, key: Any, compute: Any) -> dict[str, Any]:
    """``path``'s report when it was computed for the same ``key``; else compute, time and save it."""
    from lpa.io import atomic_write_json, digest

    report = json.loads(path.read_text()) if path.is_file() else None
    if report is None or report.get("cache_key") != digest(key):
        t = time.time()
        report = {**compute(), "wall_s": time.time() - t, "cache_key": digest(key)}
        atomic_write_json(path, report)
    return report


def _agreement(report: dict[str, Any]) -> str:
    return (f"pearson={_fmt(report['pearson_r'])} spearman={_fmt(report['spearman_r'])} MAE={_fmt(report['mae'], '.1f')} "
            f"split>=50={_fmt(report['split_agreement'])} n={report['n']} failures={report['failures']}")


def _coh(cell: dict[str, Any]) -> float | None:
    """Judged coherence when the sweep asked for it, else 100 x distinct-2 (a cheap text statistic)."""
    return cell.get("coherence") if cell.get("coherence") is not None else 100 * cell.get("distinct_2", float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/work/runs/persona/qwen")
    parser.add_argument("--traits", default="evil,sycophancy,neuroticism")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--judge-model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--judge", default="auto", choices=["auto", "local", "self", "heuristic"],
                        help="local: --judge-model judges; self: the studied model judges itself (3x cheaper for 0.5B vs "
                             "1.5B); heuristic: the trait's keyword lexicon (free); auto: per trait, whichever of the three "
                             "agrees best (Pearson r) with the hand labels.")
    parser.add_argument("--candidates", default="heuristic,self,local", help="Judges --judge auto chooses from.")
    parser.add_argument("--judged-coherence", action="store_true", help="Also judge coherence 0-100 in the sweep (2x judge calls).")
    parser.add_argument("--stages", default="extract,monitor,screen", help="Judge checks always run (cached).")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--layers", default="8,14")
    parser.add_argument("--coefs", default="0,1.5,3")
    parser.add_argument("--sweep-questions", type=int, default=3)
    parser.add_argument("--monitor-questions", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    from lpa.generation import GenerationSettings
    from lpa.io import atomic_write_json, read_jsonl
    from lpa.models import load_model
    from lpa.persona import load_vector
    from lpa.persona.extraction import ExtractConfig, SweepConfig, run_extraction
    from lpa.persona.judges import HeuristicJudge, LocalJudge, SelfJudge, judge_key
    from lpa.persona.monitor import default_monitor_prompts, monitor, shots_from_answers
    from lpa.persona.screen import read_sft_rows, screen
    from lpa.persona.trait_definitions import load_trait
    from lpa.persona.validate import builtin_labels_path, load_labels, validate_judge

    out = Path(args.out)
    stages = set(args.stages.split(","))
    t0 = time.time()
    model, tok = load_model(args.model, device="cpu")
    names = args.candidates.split(",") if args.judge == "auto" else [args.judge]
    judges: dict[str, Any] = {}
    for name in names:
        if name == "heuristic":
            judges[name] = HeuristicJudge()
        elif name == "self":
            judges[name] = SelfJudge(model, tok, batch_size=args.batch_size)
        else:
            judge_lm, judge_tok = load_model(args.judge_model, device="cpu")
            judges[name] = LocalJudge(judge_lm, judge_tok, batch_size=args.batch_size)
    labels = {"heuristic": "heuristic (keywords)", "self": f"self ({args.model})", "local": f"local ({args.judge_model})"}
    print(f"[{time.time() - t0:.0f}s] judges {', '.join(labels[n] for n in names)} loaded", flush=True)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    for trait_name in args.traits.split(","):
        trait = load_trait(trait_name)
        folder = out / trait.name
        checks = {}
        for name, candidate in judges.items():
            path = folder / f"judge_check_{name}.json"
            saved = json.loads(path.read_text()) if path.is_file() else None
            if saved is None or saved.get("judge") != judge_key(candidate, trait):  # `lpa persona judge-check -o` files are reused
                t = time.time()
                saved = validate_judge(candidate, trait, load_labels(trait))
                saved["wall_s"] = time.time() - t
                atomic_write_json(path, saved)
            checks[name] = saved
            print(f"[{time.time() - t0:.0f}s] {trait.name}: judge {labels[name]} vs {builtin_labels_path(trait.name).name}: "
                  f"{_agreement(saved)}" + (f" ({saved['wall_s']:.0f}s)" if saved.get("wall_s") else ""), flush=True)
        name = max(checks, key=lambda n: -2.0 if checks[n]["pearson_r"] is None or checks[n]["pearson_r"] != checks[n]["pearson_r"]
                   else checks[n]["pearson_r"])
        judge, agree = judges[name], f"judge {labels[name]}: {_agreement(checks[name])}"
        print(f"  {trait.name}: scores below by {agree}", flush=True)
        config = ExtractConfig(n_pairs=args.pairs, n_questions=args.questions, samples=args.samples,
                               max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
        sweep = SweepConfig(layers=[int(x) for x in args.layers.split(",")], coefs=[float(c) for c in args.coefs.split(",")],
                            n_questions=args.sweep_questions, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                            coherence=args.judged_coherence)
        if "extract" in stages:
            t = time.time()
            try:
                vector, rows = run_extraction(model, tok, trait, judge, folder, config, sweep)
            except Exception as exc:  # a null result (no kept pair) is reported, not hidden
                print(f"[{time.time() - t0:.0f}s] {trait.name}: extraction failed: {exc}", flush=True)
                continue
            print(f"[{time.time() - t0:.0f}s] {trait.name} extraction ({time.time() - t:.0f}s): {vector.counts}", flush=True)
            print(f"  sweep (mean judged trait / {'judged coherence' if args.judged_coherence else 'distinct-2 x 100'} over "
                  f"{args.sweep_questions} eval questions, positions=response)")
            print("  layer  |v|     " + "  ".join(f"coef={c:<12g}" for c in sweep.coefs))
            for layer in sweep.layers or []:
                cells = {r["coef"]: r for r in rows if r["layer"] == layer}
                print(f"  {layer:<6d} {float(vector.vectors[layer].norm()):6.2f} " + "  ".join(
                    f"{cells[c]['score']:5.1f} / {_fmt(_coh(cells[c]), '5.1f'):>5s}" for c in sweep.coefs))
            print(f"  best cell: {vector.extra.get('sweep', {}).get('best_cell')}; chosen layer {vector.layer}", flush=True)
        vector_path = folder / f"{trait.name}.safetensors"
        if not vector_path.is_file():
            continue
        vector = load_vector(vector_path)
        vector_key = [vector.vectors.float().sum().item(), vector.layer]
        if "monitor" in stages:
            judged = {r["key"]: r for r in read_jsonl(folder / "judged.jsonl")}
            answers = [{**r, "score": judged.get(r["key"], {}).get("score")} for r in read_jsonl(folder / "answers.jsonl")]
            prompts = default_monitor_prompts(trait, args.monitor_questions, shots=shots_from_answers(answers), n_shots=2)
            report = _cached(folder / "monitor.json", [judge_key(judge, trait), vector_key, prompts, settings.key()],
                             partial(monitor, model, tok, trait, vector, judge, prompts, settings))
            print(f"[{time.time() - t0:.0f}s] {trait.name} monitoring at layer {report['layer']} (n={report['n']}, "
                  f"{len(report['variants'])} prompt variants): r={_fmt(report['r'])}  "
                  f"random-direction mean|r|={_fmt(report['random_direction_mean_abs_r'])} p={_fmt(report['random_direction_p'], '.3f')}  "
                  f"shuffled-label p95|r|={_fmt(report['shuffled_label_p95_abs_r'])} p={_fmt(report['shuffled_label_p'], '.3f')} "
                  f"({report['wall_s']:.0f}s; {agree})", flush=True)
            for variant, v in report["variants"].items():
                print(f"  {variant:22s} n={v['n']:<3d} projection={v['projection']:+8.3f} score={v['score']:5.1f}")
        data = Path(__file__).resolve().parents[1] / "src" / "lpa" / "data" / "persona" / "screen" / f"{trait.name}.jsonl"
        if "screen" in stages and data.is_file():
            sft = read_sft_rows(data)
            report = _cached(folder / "screen.json", [vector_key, sft, settings.key()],
                             partial(screen, model, tok, vector, sft, settings, cache=out / "own_responses.jsonl",
                                     batch_size=args.batch_size))
            print(f"[{time.time() - t0:.0f}s] {trait.name} screening {data.name} at layer {report.get('layer')}: "
                  f"precision@{report.get('n_planted')} = {_fmt(report.get('precision_at_k'))} "
                  f"(chance {_fmt(report.get('chance_precision'))}), mean planted rank "
                  f"{_fmt(report.get('planted_mean_rank'), '.1f')} of {report['n']} ({report['wall_s']:.0f}s)", flush=True)

if __name__ == "__main__":
    main()
