"""Checkpoint selection: evaluate the adapter every k steps on a selection split and keep one step by a stated rule.

A training run's length used to be whatever the collapse guard allowed.  With ``selection.enabled``
(``lpa train --select``), :class:`CheckpointSelection` evaluates the adapter before step 1, every
``selection.every`` steps and at the last step, in process, with the evaluation code of
:mod:`lpa.eval.runner` -- harmful requests of a *selection* split under held-in attacks, borderline-safe
prompts asked directly, MMLU answered by generation (the probe that exposes collapse, which
log-likelihood hides) and the template-answer rate on both -- and appends one row per step to
``selection.jsonl``.  :func:`choose` then keeps the lowest selection ASR among the steps within the
rule's bounds (relative to step 0); when none qualifies the run keeps step 0 and says "no selective
window".  The chosen step's adapter becomes the run's ``adapter/``; the curve is plotted.

Resume: rows already in ``selection.jsonl`` (same settings) are not recomputed, and the evaluation
caches under ``selection/`` are keyed by the adapter's content, so a killed run redoes at most the
step in flight.  The collapse guard keeps its job: a step it rejects is never evaluated or chosen.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lpa.io import append_jsonl, atomic_write_json, digest, read_jsonl
from lpa.training.callbacks import LpaCallback
from lpa.training.selection_config import SelectionRule, SelectionSettings

log = logging.getLogger(__name__)

CURVE = "selection.jsonl"
FOLDER = "selection"
NO_WINDOW = "no selective window"


# ------------------------------------------------------------------------------------- the rule
@dataclass
class Choice:
    step: int
    reason: str
    qualifying: list[int]
    selective_window: bool
    asr_test: dict[str, Any] | None = None  # the kept step vs step 0 on the selection split (see :func:`asr_test`)


def violations(row: dict[str, Any], base: dict[str, Any], rule: SelectionRule) -> list[str]:
    """The bounds ``row`` breaks against step 0's ``base`` row (empty = the step qualifies)."""
    out = []
    for name in ("template_rate_harmful", "template_rate_borderline"):
        if (row.get(name) or 0.0) > rule.max_template_rate:
            out.append(f"{name} {row[name]:.2f} > {rule.max_template_rate:.2f}")
    if rule.max_template_shape_rate is not None:
        for name in ("template_shape_rate_harmful", "template_shape_rate_borderline"):
            if name not in row:  # a curve recorded before the metric existed: not knowable, so not passed
                out.append(f"{name} not recorded (see studies/shape_rule.py to count it from the step's answers)")
            elif (row[name] or 0.0) > rule.max_template_shape_rate:
                out.append(f"{name} {row[name]:.2f} > {rule.max_template_shape_rate:.2f}")
    refusal, base_refusal = row.get("borderline_refusal"), base.get("borderline_refusal")
    if refusal is not None and base_refusal is not None and refusal > base_refusal + rule.max_borderline_refusal_increase:
        out.append(f"borderline refusal {refusal:.2f} > step 0 {base_refusal:.2f} + {rule.max_borderline_refusal_increase:.2f}")
    utility, base_utility = row.get("utility"), base.get("utility")
    if utility is not None and base_utility is not None and utility < base_utility - rule.max_utility_drop:
        out.append(f"utility {utility:.3f} < step 0 {base_utility:.3f} - {rule.max_utility_drop:.2f}")
    asr, base_asr = row.get("asr"), base.get("asr")
    if asr is None or base_asr is None or not asr < base_asr - rule.min_asr_drop:
        out.append(f"selection ASR {_fmt(asr)} not below step 0 {_fmt(base_asr)} - {rule.min_asr_drop:.2f}")
    return out


def choose(rows: list[dict[str, Any]], rule: SelectionRule) -> Choice:
    """Lowest selection ASR among the trained steps within every bound (ties: the earlier step); else step 0."""
    by_step = {int(r["step"]): r for r in rows}
    if 0 not in by_step:
        return Choice(0, "step 0 was not evaluated; kept step 0", [], False)
    base = by_step[0]
    qualifying = [s for s, r in sorted(by_step.items()) if s > 0 and not violations(r, base, rule)]
    if not qualifying:
        return Choice(0, f"{NO_WINDOW}: none of steps {sorted(s for s in by_step if s > 0)} passed the rule; "
                         "kept step 0 (the model before training)", [], False)
    best = min(qualifying, key=lambda s: (by_step[s]["asr"], s))
    test = asr_test(base, by_step[best])
    margin = "" if test is None else (
        f"; {test['step0_only']} behaviour(s) of {test['behaviours']} jailbroken at step 0 only, {test['kept_only']} "
        f"at step {best} only (McNemar p {test['mcnemar_p']:.2g})")
    return Choice(best, f"lowest selection ASR {by_step[best]['asr']:.3f} (step 0: {base['asr']:.3f}) among "
                        f"qualifying steps {qualifying}{margin}", qualifying, True, test)


def asr_test(base: dict[str, Any], kept: dict[str, Any]) -> dict[str, Any] | None:
    """McNemar's exact test of the kept step against step 0 on the selection split's harmful behaviours.

    Why: the rule keeps any step whose selection ASR is lower, and on a split of a few dozen behaviours one request
    is enough; the test says whether the window is larger than chance before the test split is spent on it.
    None for rows written before rows recorded their ``jailbroken`` behaviours.
    """
    if "jailbroken" not in base or "jailbroken" not in kept:
        return None
    from lpa.eval.stats import mcnemar_exact

    before, after = set(base["jailbroken"]), set(kept["jailbroken"])
    union = sorted(before | after)
    result = mcnemar_exact([float(b in before) for b in union], [float(b in after) for b in union])
    return {"behaviours": int(kept.get("n_behaviours", len(union))),
            "step0_only": result.a_only, "kept_only": result.b_only, "mcnemar_p": result.p_value}


def jailbroken_behaviours(outcomes: dict[tuple[str, str, str, str], float], attacks: list[str],
                          judge: str) -> tuple[list[str], int]:
    """The harmful behaviours (``benchmark/sample``) answered under any of ``attacks`` by ``judge``, and how many
    were asked: what a paired test between two steps needs (a few dozen ids per row, so the curve stays small)."""
    asked: set[str] = set()
    answered: set[str] = set()
    for (bench, attack, by, item), value in outcomes.items():
        label, _, sample = item.partition("\t")
        if by != judge or attack not in attacks or label != "harmful":
            continue
        asked.add(f"{bench}/{sample}")
        if value > 0.5:
            answered.add(f"{bench}/{sample}")
    return sorted(answered), len(asked)


def rule_text(rule: SelectionRule) -> str:
    """The rule in one sentence, for reports."""
    shape = ("" if rule.max_template_shape_rate is None else
             f", answers in a template's shape <= {rule.max_template_shape_rate:.0%}")
    return (f"lowest selection ASR with template answers <= {rule.max_template_rate:.0%} (harmful and borderline)"
            f"{shape}, "
            f"borderline refusal <= step 0 + {rule.max_borderline_refusal_increase:.2f}, utility probe >= step 0 - "
            f"{rule.max_utility_drop * 100:.0f} points, ASR below step 0 - {rule.min_asr_drop:.2f}; else step 0 "
            f"('{NO_WINDOW}')")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


# ------------------------------------------------------------------------------ the evaluation
def selection_suites(settings: SelectionSettings, templates: list[str], data_dir: str | None) -> tuple[Any, Any]:
    """(harmful suite, borderline suite): held-in attacks on the harmful split; borderline asked directly,
    with the utility probe.  Two suites, so each attack runs only on its own prompts."""
    from lpa.eval.suite import EvalSuite, UtilityConfig
    from lpa.generation import GenerationSettings

    # the weights being trained live in this process: selection always generates with them on torch
    common = dict(judges=[settings.judge], data_dir=data_dir, bootstrap=0, templates=templates, backend={"name": "hf"},
                  generation=GenerationSettings(max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size))
    utility = (UtilityConfig(file=settings.utility_file, n=settings.utility_n, methods=["generate"], max_new_tokens=16,
                             batch_size=settings.batch_size) if settings.utility_n else None)
    harmful = EvalSuite(name="selection-harmful", benchmarks=settings.harmful, attacks=settings.attacks, **common)
    borderline = EvalSuite(name="selection-borderline", benchmarks=settings.borderline, attacks=["direct"],
                           utility=utility, **common)
    return harmful, borderline


def split_names(settings: SelectionSettings) -> list[str]:
    """The selection split's benchmarks as the report names them."""
    from lpa.eval.benchmarks import BENCHMARKS
    from lpa.plugins import create

    return [_spec_label(create(BENCHMARKS, s).spec()) for s in [*settings.harmful, *settings.borderline]]


def _spec_label(spec: dict[str, Any]) -> str:
    args = {k: v for k, v in spec["args"].items() if v is not None and k != "data_dir"}
    return f"{spec['name']}({', '.join(f'{k}={v}' for k, v in sorted(args.items()))})" if args else spec["name"]


def _weighted(rows: list[dict[str, Any]], keep: Any) -> float | None:
    chosen = [r for r in rows if keep(r) and r.get("n")]
    total = sum(r["n"] for r in chosen)
    return sum(r["value"] * r["n"] for r in chosen) / total if total else None


def summarise_results(harmful_rows: list[dict[str, Any]], borderline_rows: list[dict[str, Any]],
                      attacks: list[str], judge: str) -> dict[str, float | None]:
    """The rule's inputs from the two evaluations' result rows (pooled over benchmarks, weighted by n)."""
    attack = "any" if len(attacks) > 1 else attacks[0]
    return {
        "asr": _weighted(harmful_rows, lambda r: (r["metric"], r["attack"], r["judge"]) == ("asr", attack, judge)),
        "borderline_refusal": _weighted(borderline_rows, lambda r: (r["metric"], r["judge"]) == ("refusal_rate", judge)),
        "template_rate_harmful": _weighted(harmful_rows, lambda r: r["metric"] == "template_leak_rate"),
        "template_rate_borderline": _weighted(borderline_rows, lambda r: r["metric"] == "template_leak_rate"),
        "template_shape_rate_harmful": _weighted(harmful_rows, lambda r: r["metric"] == "template_shape_rate"),
        "template_shape_rate_borderline": _weighted(borderline_rows, lambda r: r["metric"] == "template_shape_rate"),
        "utility": _weighted(borderline_rows, lambda r: (r["metric"], r["judge"]) == ("accuracy", "generate")),
    }


def weights_digest(state: dict[str, Any]) -> str:
    """Content hash of a LoRA state dict: the cache key of a step's evaluation."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].float().numpy().tobytes())
    return h.hexdigest()[:16]


def evaluate_step(model: Any, tokenizer: Any, suites: tuple[Any, Any], folder: Path, identity: Any,
                  attack_labels: list[str], judge: str) -> dict[str, Any]:
    """Evaluate the model as it is now on both selection suites (cached under ``folder``)."""
    from lpa.eval.runner import evaluate_model

    was_training = model.training
    model.eval()
    try:
        harmful = evaluate_model(model, tokenizer, suites[0], folder / "harmful", identity=identity)
        borderline = evaluate_model(model, tokenizer, suites[1], folder / "borderline", identity=identity)
    finally:
        model.train(was_training)
    from lpa.eval.stats import load_outcomes

    jailbroken, asked = jailbroken_behaviours(load_outcomes(folder / "harmful"), attack_labels, judge)
    return {**summarise_results(harmful.rows, borderline.rows, attack_labels, judge), "jailbroken": jailbroken,
            "n_behaviours": asked}


# ------------------------------------------------------------------------------- the callback
class CheckpointSelection(LpaCallback):
    """Evaluate on the selection split before step 1, every ``selection.every`` steps and at the end; keep the
    chosen step's adapter (``selection/best``) and put it back into the model when training ends."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.suites: tuple[Any, Any] | None = None
        self.key = ""

    def _on(self) -> bool:
        return bool(self.trainer is not None and self.trainer.cfg.selection.enabled)

    def _setup(self) -> None:
        from lpa.eval.preflight import prepare_suite

        t = self.trainer
        s = t.cfg.selection
        self.suites = selection_suites(s, list(t.templates), t.cfg.data_dir)
        for suite in self.suites:
            prepare_suite(suite)  # every file and plugin checked before the first evaluation
        self.key = digest({"selection": s.model_dump(mode="json", exclude={"rule", "enabled"}),
                           "templates": list(t.templates), "data_dir": t.cfg.data_dir})
        self.rows = [r for r in read_jsonl(t.run / CURVE) if r.get("key") == self.key]

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._on():
            return
        self._setup()
        if not any(r["step"] == 0 for r in self.rows):
            self._evaluate(0, state)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._on():
            return
        t, step = self.trainer, state.global_step
        if step % t.cfg.selection.every and step != state.max_steps:
            return
        if t.stopped:  # the guard rejected this step: it is neither evaluated nor chosen
            return
        done = {r["step"]: r for r in self.rows}
        row = done.get(step) or self._evaluate(step, state)
        t.row.update({f"selection/{k}": v for k, v in row.items() if k in _VALUES and v is not None})

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._on():
            return
        t = self.trainer
        rule = t.cfg.selection.rule
        choice = choose(self.rows, rule)
        best = t.run / FOLDER / "best"
        stored = _read_step(best)
        if stored == choice.step:
            from safetensors.torch import load_file

            t.set_lora_state(load_file(str(best / "adapter_model.safetensors")))
        elif self.rows:
            log.warning("selection: the stored adapter is step %s, not the chosen step %s; keeping the model as it is",
                        stored, choice.step)
        t.selection = {**asdict(choice), "rule": rule_text(rule), "rule_settings": rule.model_dump(),
                       "chose_on": split_names(t.cfg.selection), "attacks": [_label(a) for a in t.cfg.selection.attacks],
                       "judge": _label(t.cfg.selection.judge), "curve": CURVE, "evaluated_steps": sorted(
                           r["step"] for r in self.rows), "chosen_row": next((r for r in self.rows if r["step"] ==
                                                                                choice.step), None)}
        test = choice.asr_test
        if test is not None and test["mcnemar_p"] >= 0.05:
            log.warning("selection: step %s's drop on the selection split is within chance (%s of %s behaviours "
                        "fewer, McNemar p %.2g); the test split decides. Raise selection.rule.min_asr_drop or the "
                        "split to demand more.", choice.step, test["step0_only"] - test["kept_only"],
                        test["behaviours"], test["mcnemar_p"])
        if state.is_world_process_zero:
            atomic_write_json(t.run / FOLDER / "choice.json", t.selection)
            try:
                from lpa.report.plots import selection_curve

                selection_curve(self.rows, t.run / "plots" / "selection.png", chosen=choice.step,
                                title=f"{t.cfg.method} on {t.cfg.model}: {choice.reason[:80]}")
            except Exception as exc:  # a plot never costs the numbers
                log.warning("selection plot failed: %s", exc)

    def _evaluate(self, step: int, state: Any) -> dict[str, Any]:
        from lpa.models.identity import ModelIdentity

        t = self.trainer
        s = t.cfg.selection
        assert self.suites is not None
        lora = t.lora_state()
        identity = ModelIdentity(model=t.cfg.model, adapter=f"{t.cfg.method}@step-{step}", adapter_sha=weights_digest(lora))
        labels = [_label(a) for a in s.attacks]
        values = evaluate_step(t.model, t.processing_class, self.suites, t.run / FOLDER, identity, labels, _label(s.judge))
        row = {"step": step, "key": self.key, **values}
        self.rows.append(row)
        if state.is_world_process_zero:  # the adapter first: a row on disk always has its best adapter saved
            if choose(self.rows, s.rule).step == step:
                _save_best(t.model, t.run / FOLDER / "best", step)
            append_jsonl(t.run / CURVE, [row])
        return row


_VALUES = ("asr", "borderline_refusal", "template_rate_harmful", "template_rate_borderline", "utility")


def _label(spec: Any) -> str:
    return spec if isinstance(spec, str) else str(spec["name"])


def _read_step(folder: Path) -> int | None:
    import json

    marker = folder / "step.json"
    return json.loads(marker.read_text(encoding="utf-8"))["step"] if marker.is_file() else None


def _save_best(model: Any, folder: Path, step: int) -> None:
    """Replace ``folder`` with the model's adapter at ``step`` (written aside, then renamed)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".best."))
    model.save_pretrained(str(tmp))
    atomic_write_json(tmp / "step.json", {"step": step})
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def read_curve(run_dir: str | Path) -> list[dict[str, Any]]:
    """A run's selection curve, one row per evaluated step."""
    return sorted(read_jsonl(Path(run_dir) / CURVE), key=lambda r: r["step"])


__all__ = ["CURVE", "NO_WINDOW", "CheckpointSelection", "Choice", "asr_test", "choose", "jailbroken_behaviours",
           "read_curve", "rule_text", "selection_suites", "summarise_results", "violations"]
