"""Re-judge an existing evaluation run's answers with other judges, without any model.

Judges improve (a refit, a stronger classifier) long after the answers were generated; re-judging
the stored answers is how old runs are compared under the new judge.  The answers are matched to
their benchmark samples by (benchmark, sample id), so the run's generation keys do not matter: a
run written by an older ``lpa`` is re-judged as it stands.  The output is a complete run folder
(``config.yaml``, ``judgements.jsonl``, ``outcomes.jsonl``, ``results.json``, ``report.md``), so
``lpa compare`` and :mod:`lpa.eval.stats` read it like any other run.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from lpa.config import dump_config
from lpa.errors import LpaError
from lpa.io import atomic_write_text, digest, existing_jsonl, read_jsonl
from lpa.records import Generation


def rejudge_run(run_dir: str | Path, judges: list[Any], out_dir: str | Path, *, data_dir: str | None = None,
                progress: bool = False) -> Any:
    """Judge every stored answer of ``run_dir`` with ``judges`` and write a run folder to ``out_dir``.

    Model-free judges only (response judges, rules, the trained classifier, LLM servers): judges
    that need the evaluated model (the refusal probe) are refused with an error naming them.
    """
    import json

    import yaml

    from lpa.eval.metrics import compute_metrics
    from lpa.eval.preflight import prepare_suite
    from lpa.eval.runner import (
        CACHE_FIELDS,
        Results,
        _Store,
        _write_outcomes,
        judge_generations,
        write_results,
    )
    from lpa.eval.suite import EvalSuite
    from lpa.io import run_lock, writable_dir

    run, out = Path(run_dir), Path(out_dir)
    config, gens_path = run / "config.yaml", existing_jsonl(run / "generations.jsonl")
    for path in (config, gens_path):
        if not path.is_file():
            raise LpaError(f"{run} is not an evaluation run: {path.name} is missing (run `lpa eval` first).")
    if out.resolve() == run.resolve():
        raise LpaError("--out must be a new folder: re-judging never changes the original run.")
    fields = {**yaml.safe_load(config.read_text(encoding="utf-8")), "judges": judges, "utility": None}
    if data_dir:
        fields["data_dir"] = data_dir
    suite = EvalSuite.model_validate(fields)
    prepared = prepare_suite(suite)
    needs_model = [j.name for j in prepared.judges if getattr(j, "needs_model", False) or not j.needs_generation]
    if needs_model:
        raise LpaError(f"Judges {', '.join(needs_model)} need the evaluated model; re-judge with response judges only "
                       "(see `lpa judges list`), or rerun `lpa eval`.")
    samples = {(b.name, s.id): s for b, items in prepared.benchmarks for s in items}
    attacks = {a.name for a in prepared.attacks}

    def in_suite(benchmark: str, attack: str) -> bool:  # a folder may also hold answers of a wider, earlier suite
        scope = suite.attack_benchmarks.get(attack)
        return attack in attacks and (scope is None or benchmark in scope)

    by_attack: dict[str, list[tuple[Any, Any, str]]] = defaultdict(list)
    unmatched = 0
    for row in read_jsonl(gens_path):
        sample = samples.get((row.get("benchmark", ""), row.get("sample_id", "")))
        if sample is not None and not in_suite(sample.benchmark, row.get("attack", "direct")):
            continue
        if sample is None:
            unmatched += 1
            continue
        gen = Generation(**{k: v for k, v in row.items() if k not in CACHE_FIELDS})
        by_attack[gen.attack].append((sample, gen, row.get("key") or digest([row.get("sample_id"), gen.attack,
                                                                           row.get("variant", 0), gen.text])))
    if not by_attack:
        raise LpaError(f"No answer in {gens_path} matches the run's benchmark samples.")
    writable_dir(out)
    with run_lock(out), _Store(out) as store:
        atomic_write_text(out / "config.yaml", dump_config(suite))
        items = [item for judge in prepared.judges for attack, gens in by_attack.items()
                 for item in judge_generations(store, judge, gens, attack, progress=progress)]
    _write_outcomes(out, items)
    old = json.loads((run / "results.json").read_text(encoding="utf-8")) if (run / "results.json").is_file() else {}
    meta = {**old.get("meta", {}), "suite": suite.model_dump(mode="json"), "judges": [j.spec() for j in prepared.judges],
            "rejudged_from": str(run), "unmatched_answers": unmatched}
    model, adapter = meta.get("model"), meta.get("adapter")
    rows = [{**r.as_dict(), "model": model, "adapter": adapter} for r in compute_metrics(items, suite.bootstrap, suite.seed)]
    results = Results(out, rows, meta)
    write_results(results)
    return results


__all__ = ["rejudge_run"]
