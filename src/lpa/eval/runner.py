"""Run an :class:`EvalSuite`: generate (cached), judge (cached), compute metrics, write reports.

Files in the run directory:

* ``generations.jsonl`` — one row per (model, adapter, benchmark, sample, attack spec, variant,
  generation settings, system prompt, prompt digest), keyed by ``key``;
* ``judgements.jsonl`` — one verdict per generation key x judge spec, keyed by ``key``;
  each generation row also holds ``gen_s``, the engine seconds it cost (its share of its batch, or of
  its search: attacker queries included), so time per attack survives resumes (``meta.timing``);
* ``results.json`` / ``results.csv`` (tidy rows), ``report.md``, ``plots/*.png``.

Rows are appended after each batch (fsynced), so an interrupted run loses at most the batch in
flight; a rerun skips finished work; changing the judge re-judges without regenerating.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lpa.eval.attacks import Attack, AttackContext, AttackedPrompt
from lpa.eval.inspect_log import LogCell, write_logs
from lpa.eval.judges import JUDGES, Judge
from lpa.eval.metrics import JudgedItem, MetricRow, coherence_rows, compute_metrics
from lpa.eval.preflight import PreparedSuite, prepare_suite
from lpa.eval.suite import EvalSuite, needs_weights, routing
from lpa.generation import GenerationSettings
from lpa.io import (
    JsonlCache,
    atomic_write_csv,
    atomic_write_json,
    atomic_write_text,
    digest,
    packed_path,
    run_lock,
    writable_dir,
)
from lpa.models.identity import ModelIdentity, identity_of
from lpa.plugins import create
from lpa.records import Generation, Sample, Verdict

log = logging.getLogger(__name__)
JUDGE_CHUNK = 64


@dataclass
class Results:
    """Tidy result rows (see :data:`lpa.eval.metrics.ROW_FIELDS`) plus run metadata."""

    out_dir: Path
    rows: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    def value(self, benchmark: str, metric: str, attack: str = "direct", judge: str | None = None) -> float | None:
        for row in self.rows:
            if (row["benchmark"], row["metric"], row["attack"]) == (benchmark, metric, attack) and (
                judge is None or row["judge"] == judge
            ):
                return row["value"]
        return None


@dataclass
class _Unit:
    """One prompt to generate for: a sample under one attack variant."""

    sample: Sample
    attack: Attack
    prompt: AttackedPrompt
    key: str


class _Store:
    """The two append-only caches of a run directory, locked while this run writes them."""

    def __init__(self, out_dir: Path) -> None:
        self.gen_path = out_dir / "generations.jsonl"
        self.judge_path = out_dir / "judgements.jsonl"
        self._gens = JsonlCache(self.gen_path, "eval.generations")
        try:
            self._verdicts = JsonlCache(self.judge_path, "eval.judgements")
        except BaseException:
            self._gens.close()
            raise
        self.generations: dict[str, dict[str, Any]] = self._gens.rows
        self.verdicts: dict[str, dict[str, Any]] = self._verdicts.rows

    def add_generations(self, rows: list[dict[str, Any]]) -> None:
        self._gens.add(rows)

    def add_verdicts(self, rows: list[dict[str, Any]]) -> None:
        self._verdicts.add(rows)

    def close(self) -> None:
        self._gens.close()
        self._verdicts.close()

    def __enter__(self) -> _Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def evaluate(
    suite: EvalSuite,
    model_spec: str,
    adapter: str | Path | None = None,
    out_dir: str | Path = "runs/eval",
    *,
    device: str | None = None,
    dtype: str | None = None,
    progress: bool = False,
) -> Results:
    """Check the suite, load ``model_spec`` (+ ``adapter``) and run it; see :func:`evaluate_model`.

    Every benchmark file, attack and judge is checked before the model is loaded
    (:func:`lpa.eval.preflight.prepare_suite`).  With a server backend and nothing that needs the
    weights in process, only the tokenizer is loaded (prompts are formatted here with the model's
    chat template).
    """
    from lpa.models.loader import load, load_tokenizer, spec_identity

    prepared = prepare_suite(suite)
    writable_dir(out_dir)  # a file or a read-only folder as --out fails here, not after the model loaded
    suite = with_engine(suite, model_spec, device)
    if suite.backend.name != "hf" and not needs_weights(suite):
        model, tokenizer = None, load_tokenizer(model_spec)
        identity = spec_identity(model_spec, adapter)
    else:
        loaded = load(model_spec, adapter=adapter, device=device, dtype=dtype)
        model, tokenizer, identity = loaded.model, loaded.tokenizer, loaded.identity
    return evaluate_model(model, tokenizer, suite, out_dir, identity=identity, progress=progress, prepared=prepared)


def with_engine(suite: EvalSuite, model_spec: str, device: str | None = None) -> EvalSuite:
    """The suite with ``backend: auto`` resolved for this model (recorded in config.yaml as resolved)."""
    from lpa.eval.backends import resolve_engine

    name = resolve_engine(suite.backend, model_spec, device)
    if name == suite.backend.name:
        return suite
    return suite.model_copy(update={"backend": suite.backend.model_copy(update={"name": name})})


def run_identity(model: Any, model_name: str | None = None, adapter: str | Path | None = None) -> ModelIdentity:
    """Who a run evaluates: the loaded model's record, or the name given (a server model, a test)."""
    from lpa.errors import LpaError

    if model_name is None:
        if model is None:
            raise LpaError("evaluate_model without a loaded model (a server backend) needs model_name or identity.")
        identity = identity_of(model)
        return identity if adapter is None else identity.with_adapter(adapter)
    dtype = str(model.dtype).replace("torch.", "") if model is not None and hasattr(model, "dtype") else None
    return ModelIdentity(model=model_name, dtype=dtype).with_adapter(adapter)


def evaluate_model(
    model: Any,
    tokenizer: Any,
    suite: EvalSuite,
    out_dir: str | Path,
    *,
    identity: ModelIdentity | None = None,
    model_name: str | None = None,
    adapter: str | None = None,
    progress: bool = False,
    prepared: PreparedSuite | None = None,
) -> Results:
    """Run the suite on an already loaded model (no reload between checkpoints or seeds).

    Every cache key holds the model's ``identity`` (default: :func:`lpa.models.identity_of`, or
    ``model_name`` + ``adapter`` when given, e.g. for a model served elsewhere).

    ``prepared`` is the suite's checked plugins and samples (default: :func:`prepare_suite`, which
    fails on any missing file or bad argument before anything is generated).
    """
    from lpa.config import dump_config

    prepared = prepared or prepare_suite(suite)
    out = writable_dir(out_dir)
    identity = identity or run_identity(model, model_name, adapter)
    if model is not None and suite.backend.name == "auto":
        # a model object given here is what the caller means to evaluate (weights being trained, edited...):
        # generate with it on torch, never from the file its name points to
        suite = suite.model_copy(update={"backend": suite.backend.model_copy(update={"name": "hf"})})
    suite = with_engine(suite, identity.model)
    with run_lock(out), _Store(out) as store:
        atomic_write_text(out / "config.yaml", dump_config(suite))
        return _evaluate(model, tokenizer, suite, out, store, identity, prepared, progress)


def _evaluate(model: Any, tokenizer: Any, suite: EvalSuite, out: Path, store: _Store, identity: ModelIdentity,
              prepared: PreparedSuite, progress: bool) -> Results:
    name, adapter = identity.model, identity.adapter
    from lpa.eval.backends import make_backend

    backend = make_backend(suite.backend, model=model, tokenizer=tokenizer, model_name=name, adapter=adapter)
    attacks, judges = prepared.attacks, prepared.judges
    need_text = any(j.needs_generation for j in judges)
    runner = _Runner(model, tokenizer, suite, store, identity, judges, progress, backend)

    labels = _attack_labels(attacks)
    items: list[JudgedItem] = []
    rows: list[MetricRow] = []
    data_files: list[dict[str, Any]] = []
    cells: list[LogCell] = []
    timing: dict[str, dict[str, float]] = {}
    for bench, samples in prepared.benchmarks:
        data_files += getattr(bench, "data_files", [])
        for attack in attacks:
            scope = suite.attack_benchmarks.get(attack.name)
            if scope is not None and bench.name not in scope:
                continue
            gens = runner.generations(samples[: getattr(attack.args, "limit", None)], attack, need_text)
            cells.append(LogCell(_bench_name(samples, bench.name), labels[id(attack)], attack.spec(), gens, suite.system))
            add_timing(timing.setdefault(attack.name, {}), gens, store.generations)
            if need_text:
                texts = [g.text for _, g, _ in gens]
                tokens = [g.completion_tokens for _, g, _ in gens]
                rows += coherence_rows(_bench_name(samples, bench.name), labels[id(attack)], texts, tokens,
                                       suite.templates)
            for judge in judges:
                items += runner.judge(judge, gens, labels[id(attack)])
    changes = record_data_files(out, data_files)
    _write_outcomes(out, items)
    rows = compute_metrics(items, suite.bootstrap, suite.seed) + rows
    if suite.utility is not None:
        rows += runner.utility_rows()
    result_rows = [{**r.as_dict(), "model": name, "adapter": adapter} for r in rows]
    meta = {"model": name, "adapter": adapter, "identity": identity.as_dict(), "suite": suite.model_dump(mode="json"),
            "judges": [j.spec() for j in judges], "attacks": [a.spec() for a in attacks],
            "backend": suite.backend.public(), "routing": routing(suite), "data_files": data_files,
            "data_changes": changes, "timing": timing}
    results = Results(out, result_rows, meta)
    write_results(results)
    try:
        write_logs(out, identity, cells, judges, store.verdicts, result_rows, verdict_key)
    except Exception as exc:  # the numbers are saved; a viewer log must not turn a finished run into a failure
        log.warning("could not write the inspect eval logs (%s: %s); results are in %s", type(exc).__name__, exc, out)
    return results


def verdict_key(generation_key: str, judge: Judge) -> str:
    """Where a judge's verdict on one generation is cached (generation key x judge spec)."""
    return digest([generation_key, judge.spec()])


def _write_outcomes(out: Path, items: Sequence[JudgedItem]) -> None:
    """Per-item verdicts, so runs on the same behaviours can be compared paired (lpa.eval.stats)."""
    import json
    from dataclasses import asdict

    path = out / "outcomes.jsonl"
    atomic_write_text(path, "".join(json.dumps(asdict(i), sort_keys=True) + "\n" for i in items))
    packed_path(path).unlink(missing_ok=True)  # an archived folder's old outcomes, now superseded


def write_results(results: Results) -> None:
    """results.json, results.csv, report.md and plots; report failures never lose the numbers."""
    from lpa.eval.metrics import ROW_FIELDS

    atomic_write_json(results.out_dir / "results.json", {"meta": results.meta, "rows": results.rows})
    atomic_write_csv(results.out_dir / "results.csv", results.rows, ROW_FIELDS)
    from lpa.report import write_report

    write_report(results.out_dir, examples=results.meta["suite"].get("examples", 0))
    report = results.out_dir / "report.md"
    if report.is_file():
        from lpa.eval.attack_report import attack_sections
        from lpa.io import atomic_write_text

        atomic_write_text(report, report.read_text(encoding="utf-8").rstrip("\n") + "\n"
                          + attack_sections(results.out_dir) + _provenance(results.meta))


def _provenance(meta: dict[str, Any]) -> str:
    """Report sections: where each part ran, which data files (sha256) were used, and what changed."""
    lines = []
    if meta.get("routing"):
        lines += ["", "## Where each part ran", "", "| part | backend |", "| --- | --- |"]
        lines += [f"| {part} | {where} |" for part, where in meta["routing"].items()]
    if meta.get("data_files"):
        lines += ["", "## Data files", "", "| benchmark | file | sha256 | origin | matches pinned content |",
                  "| --- | --- | --- | --- | --- |"]
        pin = {True: "yes", False: "**NO**", None: "(no pin)"}
        lines += [f"| {d['benchmark']} | {d['file']} | `{d['sha256'][:16]}` | {d['origin']} | {pin[d['matches_pin']]} |"
                  for d in meta["data_files"]]
    if meta.get("data_changes"):
        lines += ["", "## WARNING: benchmark files changed since this run directory was started", ""]
        lines += [f"- {c}" for c in meta["data_changes"]]
        lines += ["", "Generations are keyed by prompt content, so changed prompts were regenerated, not mixed; "
                  "old rows stay in generations.jsonl but are not counted."]
    return "\n".join(lines) + "\n"


def record_data_files(out: Path, files: list[dict[str, Any]]) -> list[str]:
    """Keep ``data_files.json`` (every file ever used here) and return the changes against it."""
    import json

    path = out / "data_files.json"
    previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    seen = {(d["benchmark"], d["file"]): d for d in previous}
    changes = []
    for record in files:
        old = seen.get((record["benchmark"], record["file"]))
        if old is not None and old["sha256"] != record["sha256"]:
            message = (f"{record['benchmark']}: {record['file']} sha256 {old['sha256'][:12]} -> {record['sha256'][:12]} "
                       f"({old.get('origin')} -> {record['origin']})")
            log.warning("%s; results use the new content only", message)
            changes.append(message)
    merged = {**seen, **{(d["benchmark"], d["file"]): d for d in files}}
    atomic_write_json(path, [merged[k] for k in sorted(merged)])
    return changes


def _attack_labels(attacks: Sequence[Attack]) -> dict[int, str]:
    """Attack names in tables; the same attack twice with different settings gets its arguments appended."""
    names = [a.name for a in attacks]
    labels = {}
    for attack in attacks:
        label = attack.name
        if names.count(attack.name) > 1:
            args = attack.args.model_dump(mode="json", exclude_defaults=True)
            label += ":" + ",".join(f"{k}={v}" for k, v in sorted(args.items()))
        labels[id(attack)] = label
    return labels


def _bench_name(samples: Sequence[Sample], default: str) -> str:
    return samples[0].benchmark if samples else default


class _Runner:
    def __init__(self, model: Any, tokenizer: Any, suite: EvalSuite, store: _Store, identity: ModelIdentity,
                 judges: list[Judge], progress: bool, backend: Any) -> None:
        self.model, self.tokenizer, self.suite, self.store = model, tokenizer, suite, store
        self.identity, self.judges, self.progress = identity, judges, progress
        self.name, self.adapter = identity.model, identity.adapter
        self.backend = backend
        self.settings: GenerationSettings = suite.generation

    # -- generation ---------------------------------------------------------------------
    def _base_key(self, sample: Sample, attack: Attack) -> dict[str, Any]:
        return {**self.identity.key(), **self.suite.backend.engine_key(self.backend.engine),
                "benchmark": sample.benchmark, "sample": sample.id,
                "attack": attack.spec(), "settings": self.settings.key(), "system": self.suite.system}

    def generate_prompts(self, prompts: Sequence[AttackedPrompt],
                         on_batch: Callable[[list[int], list[Any]], None] | None = None) -> list[Any]:
        return self.backend.generate([p.messages for p in prompts], self.settings, system=self.suite.system,
                                     prefills=[p.prefill for p in prompts],
                                     progress=self.progress and "generating", on_batch=on_batch)

    def generations(self, samples: Sequence[Sample], attack: Attack,
                    need_text: bool) -> list[tuple[Sample, Generation, str]]:
        """(sample, generation, key) for every sample x variant, generating only what is missing."""
        if attack.needs_model:
            return self._optimiser(samples, attack)
        units = []
        for sample in samples:
            for prompt in attack.transform(sample):
                key = digest({**self._base_key(sample, attack), "variant": prompt.variant,
                              "prompt": digest([prompt.messages, prompt.prefill])})
                units.append(_Unit(sample, attack, prompt, key))
        todo = [u for u in units if u.key not in self.store.generations]
        if todo and need_text:
            clock = [time.perf_counter()]

            def save(indices: list[int], completions: list[Any]) -> None:
                share = _elapsed_share(clock, len(indices))
                self.store.add_generations([{**self._row(todo[i], c), "gen_s": share}
                                            for i, c in zip(indices, completions, strict=True)])

            self.generate_prompts([u.prompt for u in todo], on_batch=save)
        out = []
        for unit in units:
            row = self.store.generations.get(unit.key)
            gen = Generation(**_gen_fields(row)) if row else self._placeholder(unit)
            out.append((unit.sample, gen, unit.key))
        return out

    def _row(self, unit: _Unit, completion: Any) -> dict[str, Any]:
        gen = Generation(
            sample_id=unit.sample.id, benchmark=unit.sample.benchmark, attack=unit.attack.name,
            attack_args=unit.attack.args.model_dump(mode="json"), model=self.name, adapter=self.adapter,
            settings=self.settings.key(), messages=unit.prompt.messages, prefill=unit.prompt.prefill,
            text=completion.text, prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens, finish_reason=completion.finish_reason,
            variant=unit.prompt.variant, info=unit.prompt.info, engine=getattr(self.backend, "engine", None) or None,
        )
        return {**gen.model_dump(mode="json"), "key": unit.key}

    def _placeholder(self, unit: _Unit) -> Generation:
        """Probe judges only (no generation asked for): the prompt without a completion."""
        return Generation(sample_id=unit.sample.id, benchmark=unit.sample.benchmark, attack=unit.attack.name,
                          model=self.name, adapter=self.adapter, messages=unit.prompt.messages,
                          prefill=unit.prompt.prefill, text="", variant=unit.prompt.variant)

    def _optimiser(self, samples: Sequence[Sample], attack: Attack) -> list[tuple[Sample, Generation, str]]:
        ctx = AttackContext(
            model=self.model, tokenizer=self.tokenizer,
            generate=lambda prompts: [c.text for c in self.generate_prompts(prompts)],
            judge=self.jailbreak_score_fn(), seed=self.suite.seed, model_name=self.name,
            adapter=self.adapter, settings=self.settings.key(), cache_dir=self._attack_cache_dir(),
        )
        from lpa.progress import progress

        unit_keys = [digest(self._base_key(sample, attack)) for sample in samples]
        # An attack whose requests are independent (batch_samples) runs a batch of requests per call, so the
        # engine decodes them together; each request's rows are still saved under its own key as a chunk ends.
        unique = len({s.id for s in samples}) == len(samples)  # rows are matched to requests by sample id
        chunk = max(1, self.settings.batch_size) if unique and getattr(attack, "batch_samples", False) else 1
        done = {r["unit_key"] for r in self.store.generations.values() if r.get("unit_key") in set(unit_keys)}
        missing = [i for i, key in enumerate(unit_keys) if key not in done]
        starts = range(0, len(missing), chunk)
        for start in progress(starts, f"{attack.name} behaviours ({chunk}/call)"):
            indices = missing[start : start + chunk]
            clock = [time.perf_counter()]
            gens = attack.run([samples[i] for i in indices], ctx)
            share = _elapsed_share(clock, len(gens))  # the search's attacker and target queries, per answer kept
            for i in indices:
                mine = [g for g in gens if g.sample_id == samples[i].id]
                self.store.add_generations([{**g.model_dump(mode="json"), "unit_key": unit_keys[i], "gen_s": share,
                                             "key": digest([unit_keys[i], getattr(g, "variant", 0), n])}
                                            for n, g in enumerate(mine)])
        out = []
        for sample, unit_key in zip(samples, unit_keys, strict=True):
            rows = [r for r in self.store.generations.values() if r.get("unit_key") == unit_key]
            out += [(sample, Generation(**_gen_fields(r)), r["key"]) for r in rows]
        return out

    def _attack_cache_dir(self) -> Path:
        """Search attacks' query caches, one folder per model identity and system prompt."""
        return self.store.gen_path.parent / "attack_cache" / digest([self.identity.key(), self.suite.system])

    def jailbreak_score_fn(self) -> Callable[[Sample, str], float]:
        """0 (safe) .. 1 (jailbroken) from the first generation judge (keyword if none)."""
        judge = next((j for j in self.judges if j.needs_generation), None) or create(JUDGES, "keyword")

        def score(sample: Sample, text: str) -> float:
            gen = Generation(sample_id=sample.id, benchmark=sample.benchmark, model=self.name,
                             messages=sample.as_messages(), text=text)
            verdict = judge.judge([sample], [gen], model=self.model, tokenizer=self.tokenizer)[0]
            if verdict.score is not None:
                return float(verdict.score)
            return float(verdict.label in ("complied", "partial"))

        return score

    # -- judging --------------------------------------------------------------------------
    def judge(self, judge: Judge, gens: list[tuple[Sample, Generation, str]], attack_label: str) -> list[JudgedItem]:
        return judge_generations(self.store, judge, gens, attack_label, model=self.model, tokenizer=self.tokenizer,
                                 progress=self.progress)

    # -- utility ----------------------------------------------------------------------------
    def utility_rows(self) -> list[MetricRow]:
        from lpa.eval.utility import run_utility

        assert self.suite.utility is not None
        cache = self.store.gen_path.parent / "utility.jsonl"
        return run_utility(self.model, self.tokenizer, self.suite.utility, cache,
                           key={**self.identity.key(), **self.suite.backend.engine_key(self.backend.engine)},
                           backend=self.backend)


def judge_generations(store: _Store, judge: Judge, gens: list[tuple[Sample, Generation, str]], attack_label: str, *,
                      model: Any = None, tokenizer: Any = None, progress: bool = False) -> list[JudgedItem]:
    """Verdicts of ``judge`` on (sample, generation, key) triples, cached in ``store`` under key + judge spec."""
    keyed = [(s, g, verdict_key(k, judge)) for s, g, k in gens]
    todo = [(s, g, k) for s, g, k in keyed if k not in store.verdicts]
    from lpa.progress import progress as progress_bar

    starts = range(0, len(todo), JUDGE_CHUNK)
    label = f"judging ({judge.name}, {JUDGE_CHUNK}/chunk)"
    for start in progress_bar(starts, label, enabled=None if progress else False):
        chunk = todo[start : start + JUDGE_CHUNK]
        verdicts = judge.judge([s for s, _, _ in chunk], [g for _, g, _ in chunk],
                               model=model, tokenizer=tokenizer)
        store.add_verdicts([
            {**v.model_dump(mode="json"), "key": k, "benchmark": s.benchmark, "sample_label": s.label,
             "variant": getattr(g, "variant", 0), "attack": g.attack}
            for (s, g, k), v in zip(chunk, verdicts, strict=True)
        ])
    items = []
    for sample, gen, key in keyed:
        v = Verdict(**{k: val for k, val in store.verdicts[key].items() if k not in CACHE_FIELDS})
        items.append(JudgedItem(benchmark=sample.benchmark, attack=attack_label, judge=judge.name,
                                sample_id=sample.id, sample_label=sample.label,
                                variant=int(getattr(gen, "variant", 0) or 0), verdict=v.label,
                                score=v.score, error=v.error))
    return items


CACHE_FIELDS = ("key", "unit_key", "cache", "run_key", "gen_s")


def _elapsed_share(clock: list[float], rows: int) -> float:
    """Seconds since ``clock[0]`` split over ``rows`` answers; restarts the clock (one batch at a time)."""
    now = time.perf_counter()
    share = (now - clock[0]) / max(1, rows)
    clock[0] = now
    return round(share, 4)


def add_timing(into: dict[str, float], gens: Sequence[tuple[Sample, Generation, str]],
               rows: dict[str, dict[str, Any]]) -> None:
    """Add one benchmark's answers of an attack to its timing: requests, answers, and the engine seconds of the
    answers that record theirs (rows written before ``gen_s`` existed, or copied from elsewhere, have none)."""
    timed = [(s.id, rows[k]["gen_s"]) for s, _, k in gens if k in rows and rows[k].get("gen_s") is not None]
    for name, value in (("requests", len({s.id for s, _, _ in gens})), ("answers", len(gens)),
                        ("timed_requests", len({sid for sid, _ in timed})), ("timed_answers", len(timed)),
                        ("seconds", sum(t for _, t in timed))):
        into[name] = round(into.get(name, 0) + value, 4)


def _gen_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in CACHE_FIELDS}
