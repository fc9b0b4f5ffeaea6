"""CLI commands: ``lpa persona`` — extract, steer, monitor, screen, finetune, traits.

Thin wrappers over :mod:`lpa.persona` (the CLI holds no logic the Python API lacks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lpa.cli.common import (
    AdapterOption,
    DeviceOption,
    DtypeOption,
    ModelOption,
    ReportToOption,
    adapter_option,
    data_dir_option,
    model_option,
    parse_trackers,
)
from lpa.errors import LpaError

TraitOption = typer.Option(..., "--trait", "-t", help="Built-in trait name (see `lpa persona traits list`) or a YAML file.")
VectorOption = typer.Option(None, "--vector", help="Vector file (default: runs/persona/<trait>/<trait>.safetensors).")
JudgeOption = typer.Option("heuristic", "--judge",
                           help="Trait judge: heuristic (offline keywords) | self (the model) | local (--judge-model, offline) | llm.")
JudgeUrlOption = typer.Option(None, "--judge-url", help="OpenAI-compatible base URL for --judge llm.")
JudgeModelOption = typer.Option(None, "--judge-model",
                                help="--judge local: model alias/HF id/path (e.g. qwen2.5-coder-1.5b); --judge llm: model name at --judge-url.")
KeyEnvOption = typer.Option("OPENAI_API_KEY", "--api-key-env", help="Environment variable holding the judge API key.")


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str | None) -> list[int] | None:
    return [int(x) for x in text.split(",") if x.strip()] if text else None


def _vector_path(trait: str, vector: Path | None) -> Path:
    return vector or Path("runs/persona") / Path(trait).stem / f"{Path(trait).stem}.safetensors"


def _print_json(obj: Any) -> None:
    import json

    typer.echo(json.dumps(obj, indent=2, default=str))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root app."""
    persona_app = typer.Typer(help="Persona vectors: extract, steer, monitor, screen data, preventative fine-tuning.",
                              no_args_is_help=True)
    traits_app = typer.Typer(help="Built-in and user persona trait definitions.", no_args_is_help=True)
    persona_app.add_typer(traits_app, name="traits")
    traits_app.command("list")(traits_list)
    traits_app.command("show")(traits_show)
    persona_app.command("judge-check")(judge_check_cmd)
    persona_app.command("extract")(extract_cmd)
    persona_app.command("steer")(steer_cmd)
    persona_app.command("monitor")(monitor_cmd)
    persona_app.command("screen")(screen_cmd)
    persona_app.command("finetune")(finetune_cmd)
    persona_app.command("lens")(lens_cmd)
    app.add_typer(persona_app, name="persona")


def traits_list() -> None:
    """List built-in persona traits."""
    from lpa.persona.trait_definitions import TRAITS, load_trait

    for name in TRAITS.names():
        trait = load_trait(name)
        typer.echo(f"{name:18s} {len(trait.pairs)} pairs, {len(trait.extraction_questions)}+{len(trait.eval_questions)} questions  {trait.description}")


def traits_show(trait: str = typer.Argument(..., help="Trait name or YAML file.")) -> None:
    """Print a trait definition as YAML."""
    import yaml

    from lpa.persona.trait_definitions import load_trait

    typer.echo(yaml.safe_dump(load_trait(trait).model_dump(), sort_keys=False, allow_unicode=True, width=120))


def _judge(name: str, model: Any, tok: Any, url: str | None, judge_model: str | None, key_env: str | None,
           device: str | None = None) -> Any:
    from lpa.persona.judges import make_judge

    return make_judge(name, model=model, tokenizer=tok, judge_url=url, judge_model=judge_model, api_key_env=key_env,
                      device=device)


def judge_check_cmd(
    trait: str = TraitOption,
    labels: Path | None = typer.Option(None, "--labels", help="JSONL with question, answer, score (default: built-in labels)."),
    judge: str = JudgeOption,
    judge_url: str | None = JudgeUrlOption,
    judge_model: str | None = JudgeModelOption,
    api_key_env: str = KeyEnvOption,
    threshold: float = typer.Option(50.0, help="Split used by extraction: expressed if score >= threshold."),
    model: str | None = model_option(None, help="Studied model (only for --judge self)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write per-answer scores as JSON."),
    device: str = DeviceOption,
) -> None:
    """Agreement of a trait judge with hand-labelled answers (Pearson/Spearman r, MAE, split agreement)."""
    from lpa.io import atomic_write_json
    from lpa.persona.trait_definitions import load_trait
    from lpa.persona.validate import load_labels, validate_judge

    definition = load_trait(trait)
    rows = load_labels(definition, labels)
    lm = tok = None
    if judge == "self":
        if model is None:
            raise LpaError("--judge self needs --model (the model that judges itself).")
        from lpa.models import load_model

        lm, tok = load_model(model, device=device)
    report = validate_judge(_judge(judge, lm, tok, judge_url, judge_model, api_key_env, device), definition, rows, threshold)
    if out:
        atomic_write_json(out, report)
    _print_json({k: v for k, v in report.items() if k != "rows"})


def extract_cmd(
    trait: str = TraitOption,
    model: str = ModelOption,
    adapter: str | None = AdapterOption,
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default runs/persona/<trait>); reruns resume."),
    judge: str = JudgeOption,
    judge_url: str | None = JudgeUrlOption,
    judge_model: str | None = JudgeModelOption,
    api_key_env: str = KeyEnvOption,
    pairs: int = typer.Option(5, help="Instruction pairs to use (from the trait file, in order)."),
    questions: int = typer.Option(20, help="Extraction questions to use."),
    samples: int = typer.Option(3, help="Sampled answers per question and system prompt."),
    max_new_tokens: int = typer.Option(64, help="Answer length in tokens (extraction and sweep)."),
    batch_size: int = typer.Option(16, help="Prompts per batch."),
    layers: str | None = typer.Option(None, help="Comma list of sweep layers (default: 5 in the middle 20-80%)."),
    coefs: str = typer.Option("0,1,2", help="Comma list of sweep coefficients (0 = unsteered baseline)."),
    sweep_questions: int = typer.Option(10, help="Evaluation questions per sweep cell."),
    sweep: bool = typer.Option(True, "--sweep/--no-sweep", help="Choose the layer by a steering sweep."),
    device: str = DeviceOption,
    dtype: str = DtypeOption,
) -> None:
    """Extract a persona vector; choose its layer by a steering sweep; save vector + sweep."""
    from lpa.persona import extract

    result = extract(trait=trait, model=model, adapter=adapter, out=out, judge=judge, judge_url=judge_url,
                     judge_model=judge_model, api_key_env=api_key_env, pairs=pairs, questions=questions, samples=samples,
                     max_new_tokens=max_new_tokens, batch_size=batch_size, layers=_ints(layers), coefs=_floats(coefs),
                     sweep_questions=sweep_questions, sweep=sweep, device=device, dtype=dtype)
    vector, rows = result.vector, result.sweep
    typer.echo(f"trait={vector.trait} judge={vector.judge.get('judge')} counts={vector.counts}")
    if rows:
        cs = sorted({r["coef"] for r in rows})
        typer.echo("layer  " + "  ".join(f"coef={c:<5g}" for c in cs))
        for layer in sorted({r["layer"] for r in rows}):
            cells = {r["coef"]: r["score"] for r in rows if r["layer"] == layer}
            typer.echo(f"{layer:<6d} " + "  ".join(f"{cells[c]:10.1f}" for c in cs))
    typer.echo(f"chosen layer={vector.layer}; saved {result.path}")


def steer_cmd(
    trait: str = TraitOption,
    vector: Path | None = VectorOption,
    prompt: list[str] = typer.Option(None, "--prompt", "-p", help="Prompt (repeatable); default: the trait's evaluation questions."),
    coef: float = typer.Option(2.0, help="Steering coefficient (negative suppresses)."),
    layer: int | None = typer.Option(None, help="Layer (default: the vector's chosen layer)."),
    positions: str = typer.Option("response", help="response | prompt | all."),
    max_new_tokens: int = typer.Option(64, help="Answer length in tokens."),
    model: str = ModelOption,
    adapter: str | None = AdapterOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
) -> None:
    """Generate with and without steering, side by side."""
    from lpa.generation import generate
    from lpa.models import load_model
    from lpa.persona import load_vector
    from lpa.persona.steer import steer
    from lpa.persona.trait_definitions import load_trait

    vec = load_vector(_vector_path(trait, vector))
    prompts = list(prompt) if prompt else load_trait(trait).eval_questions[:3]
    lm, tok = load_model(model, adapter=adapter, device=device, dtype=dtype)
    settings = _settings(max_new_tokens=max_new_tokens)
    plain = generate(lm, tok, prompts, settings)
    # typer hands over a plain str; steer() rejects anything but its Positions with an LpaError
    with steer(lm, vec, layer=layer, coef=coef, positions=positions):  # type: ignore[arg-type]
        steered = generate(lm, tok, prompts, settings)
    for p, a, b in zip(prompts, plain, steered, strict=True):
        typer.echo(f"## {p}\n[coef 0] {a.text}\n[coef {coef:g} @ layer {vec.resolve(layer)}] {b.text}\n")


def monitor_cmd(
    trait: str = TraitOption,
    vector: Path | None = VectorOption,
    prompts: Path | None = typer.Option(None, "--prompts", help="JSONL (prompt|messages, optional system, id); default: eval questions x {expressing, none, suppressing} system prompts."),
    questions: int = typer.Option(10, help="Evaluation questions for the default prompt set."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the full report (per-token projections) as JSON."),
    judge: str = JudgeOption,
    judge_url: str | None = JudgeUrlOption,
    judge_model: str | None = JudgeModelOption,
    api_key_env: str = KeyEnvOption,
    max_new_tokens: int = typer.Option(64, help="Answer length in tokens."),
    random_baselines: int = typer.Option(100, help="Random directions and label shuffles for the baselines."),
    model: str = ModelOption,
    adapter: str | None = AdapterOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
) -> None:
    """Projection of the last prompt token vs the judged trait score, with random baselines."""
    from lpa.generation import read_prompts
    from lpa.io import atomic_write_json
    from lpa.models import load_model
    from lpa.persona import load_vector
    from lpa.persona.monitor import default_monitor_prompts, monitor
    from lpa.persona.trait_definitions import load_trait

    definition = load_trait(trait)
    vec = load_vector(_vector_path(trait, vector))
    rows = read_prompts(prompts) if prompts else default_monitor_prompts(definition, questions)
    lm, tok = load_model(model, adapter=adapter, device=device, dtype=dtype)
    report = monitor(lm, tok, definition, vec, _judge(judge, lm, tok, judge_url, judge_model, api_key_env), rows,
                     _settings(max_new_tokens=max_new_tokens), n_random=random_baselines)
    if out:
        atomic_write_json(out, report)
    _print_json({k: v for k, v in report.items() if k != "rows"})


def screen_cmd(
    data: Path = typer.Argument(..., help="JSONL with prompt|messages and response (optional boolean 'planted' -> precision@k)."),
    trait: str = TraitOption,
    vector: Path | None = VectorOption,
    out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default: <data>.screen/); own answers cached there."),
    flag_z: float = typer.Option(2.0, help="Flag samples whose projection difference is this many std above the mean."),
    top: int = typer.Option(10, help="Samples to print."),
    max_new_tokens: int = typer.Option(128, help="Length of the model's own answers."),
    batch_size: int = typer.Option(16, help="Prompts per batch."),
    model: str = ModelOption,
    adapter: str | None = AdapterOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
) -> None:
    """Rank training samples by projection difference onto the persona vector."""
    from lpa.io import atomic_write_json
    from lpa.models import load_model
    from lpa.persona import load_vector
    from lpa.persona.screen import read_sft_rows, screen

    vec = load_vector(_vector_path(trait, vector))
    rows = read_sft_rows(data)
    out = out or data.with_suffix(".screen")
    lm, tok = load_model(model, adapter=adapter, device=device, dtype=dtype)
    report = screen(lm, tok, vec, rows, _settings(max_new_tokens=max_new_tokens, batch_size=batch_size),
                    cache=out / "own_responses.jsonl", flag_z=flag_z)
    atomic_write_json(out / "screen.json", report)
    typer.echo(f"dataset score (mean ΔP) = {report['dataset_score']:.4f}  std={report['std']:.4f}  "
               f"flagged {report['n_flagged']}/{report['n']} (z > {flag_z})")
    if "precision_at_k" in report:
        typer.echo(f"planted samples: precision@{report['n_planted']} = {report['precision_at_k']:.2f} "
                   f"(chance {report['chance_precision']:.2f}); mean rank of planted = {report['planted_mean_rank']:.1f}")
    for s in report["samples"][:top]:
        planted = "  planted" if s.get("planted") else ""
        typer.echo(f"{s['rank']:>4d} id={s['id']:<8s} ΔP={s['delta_p']:+.4f} z={s['z']:+.2f}{'  FLAG' if s['flagged'] else ''}{planted}")
    typer.echo(f"full report: {out / 'screen.json'}")


def finetune_cmd(
    data: Path = typer.Argument(..., help="JSONL with prompt|messages and response."),
    trait: str = TraitOption,
    vector: Path | None = VectorOption,
    out: Path = typer.Option(Path("runs/persona-finetune"), "--out", "-o", help="Output folder."),
    preventative: bool = typer.Option(False, "--preventative/--plain", help="Add +coef*v during training forwards."),
    compare: bool = typer.Option(False, "--compare", help="Run base, plain and preventative and report trait score and utility."),
    coef: float = typer.Option(1.0, help="Preventative steering coefficient."),
    layer: int | None = typer.Option(None, help="Steering layer (default: the vector's chosen layer)."),
    epochs: int = typer.Option(1, help="Passes over the dataset."),
    max_steps: int | None = typer.Option(None, help="Stop after this many steps."),
    lr: float = typer.Option(2e-4, help="Learning rate."),
    batch_size: int = typer.Option(4, help="Samples per step."),
    lora_r: int = typer.Option(8, help="LoRA rank."),
    eval_questions: int = typer.Option(10, help="Evaluation questions for the trait score (--compare)."),
    seeds: str = typer.Option("0", help="Comma list of seeds for --compare (plain and preventative once per seed)."),
    mmlu: int = typer.Option(0, help="MMLU questions scored by log-likelihood per model in --compare (0 = skip)."),
    max_new_tokens: int = typer.Option(64, help="Answer length for the trait score (--compare)."),
    report_to: str | None = ReportToOption,
    judge: str = JudgeOption,
    judge_url: str | None = JudgeUrlOption,
    judge_model: str | None = JudgeModelOption,
    api_key_env: str = KeyEnvOption,
    model: str = ModelOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
) -> None:
    """LoRA fine-tuning, optionally with preventative steering; --compare reports plain vs preventative."""
    from lpa.models import load_model
    from lpa.persona import load_vector
    from lpa.persona.screen import read_sft_rows
    from lpa.persona.trait_definitions import load_trait
    from lpa.training.persona_finetune import FinetuneConfig, finetune
    from lpa.training.persona_finetune import compare as run_compare

    vec = load_vector(_vector_path(trait, vector))
    rows = read_sft_rows(data)
    trackers = parse_trackers(report_to) or []
    config = FinetuneConfig(epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size, lora_r=lora_r,
                            preventative=preventative, coef=coef, layer=layer, report_to=trackers)

    def load() -> tuple[Any, Any]:
        return load_model(model, device=device, dtype=dtype)

    if compare:
        lm, tok = load()

        report = run_compare(load, rows, load_trait(trait), vec, _judge(judge, lm, tok, judge_url, judge_model, api_key_env),
                             config, out, n_questions=eval_questions, seeds=[int(x) for x in seeds.split(",") if x.strip()],
                             mmlu_n=mmlu, settings=_settings(max_new_tokens=max_new_tokens, batch_size=batch_size))
        _print_json({k: v for k, v in report.items() if k != "runs"})
        return
    lm, tok = load()
    finetune(lm, tok, rows, config, out, vector=vec, probe_vectors=[vec])
    typer.echo(f"saved adapter to {out / 'adapter'} (steering is not part of it); metrics in {out / 'metrics.jsonl'}")


def lens_cmd(
    adapter: str = adapter_option(..., help="LPA adapter directory (the base is the same model with it disabled)."),
    trait: str = typer.Option("evil", "--trait", "-t", help="Trait whose vector is the lens."),
    vector: Path | None = VectorOption,
    benchmarks: str = typer.Option("harmbench", help="Comma list of harmful benchmarks (see `lpa eval --help`)."),
    limit: int = typer.Option(24, help="Prompts per benchmark."),
    data_dir: Path | None = data_dir_option(help="Benchmark files (default $LPA_DATA_DIR)."),
    max_new_tokens: int = typer.Option(48, help="Answer length for the compliance label."),
    batch_size: int = typer.Option(8, help="Prompts per batch."),
    random_baselines: int = typer.Option(100, help="Random directions and label shuffles for the baselines."),
    compliance_judge: str = typer.Option(None, "--compliance-judge", help="Response judge that labels compliance "
                                         "(see `lpa judges list`; default: the validated default judge)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the full report as JSON."),
    model: str = ModelOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
) -> None:
    """Project base and LPA activations on a persona vector over harmful prompts; shift and compliance r."""
    from lpa.eval.benchmarks import BENCHMARKS
    from lpa.eval.judges import DEFAULT_JUDGE
    from lpa.io import atomic_write_json
    from lpa.models import load_model
    from lpa.persona import load_vector
    from lpa.persona.lens import judge_compliance, lens
    from lpa.plugins import create

    judge = compliance_judge or DEFAULT_JUDGE
    vec = load_vector(_vector_path(trait, vector))
    samples = []
    for name in [b for b in benchmarks.split(",") if b.strip()]:
        bench = create(BENCHMARKS, name.strip(), data_dir=str(data_dir) if data_dir else None, limit=limit)
        samples += [s for s in bench.load() if s.label == "harmful"]
    complied = judge_compliance(judge, samples)  # an unknown judge fails before the model loads
    lm, tok = load_model(model, adapter=adapter, device=device, dtype=dtype)
    report = lens(lm, tok, vec, [s.messages or s.prompt or "" for s in samples],
                  _settings(max_new_tokens=max_new_tokens, batch_size=batch_size), n_random=random_baselines,
                  complied=complied, compliance_judge=judge)
    report["benchmarks"], report["adapter"] = benchmarks, adapter
    if out:
        atomic_write_json(out, report)
    _print_json({k: v for k, v in report.items() if k != "rows"})


def _settings(**fields: Any) -> Any:
    """Generation settings from CLI numbers: a bad value is one error line, like ``lpa eval``'s."""
    from lpa.config import validate_config
    from lpa.generation import GenerationSettings

    return validate_config(GenerationSettings, fields, source="generation options")
