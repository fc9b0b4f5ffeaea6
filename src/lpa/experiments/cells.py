"""One experiment cell (model x method x seed): its folder, key, training config, run and record.

A cell owns its folder::

    <model>/<method>/seed-<s>/train/   training run (adapter/, metrics.jsonl, adversary_samples.jsonl)
    <model>/<method>/seed-<s>/eval/    evaluation run (generations, judgements, results.json)
    <model>/<method>/seed-<s>/cell.json   finished-cell record: everything the report needs

The record holds the result rows, the costs, what the attacker made the model say during training
(``adversary``) and the training texts (``train_texts``, for the overlap analysis), so the report
reads records only and never opens a training folder or rebuilds a training config.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpa.experiments.spec import ExperimentSpec, MethodEntry, suite_for
from lpa.io import atomic_write_json, digest, read_jsonl, run_lock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    model: str
    entry: MethodEntry
    seed: int | None  # None: a deterministic base evaluation shared by all seeds

    def folder(self, root: Path) -> Path:
        return cell_folder(root, self.model, self.entry.name, "all" if self.seed is None else self.seed)


def cell_folder(root: Path, model: str, method: str, seed: int | str) -> Path:
    """Where a cell lives under ``root``: one folder per model, method and seed ("all" for untrained cells)."""
    return root / _slug(model) / method / f"seed-{seed}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "model"


def cells(spec: ExperimentSpec) -> list[Cell]:
    """Every cell, seed-major within a model: all methods of seed 0 finish before any of seed 1.

    That order makes a partly run study useful: after any stop, each method has the same seeds.
    """
    out: list[Cell] = []
    for model in spec.models:
        methods = [e for e in spec.methods if spec.runs_on(e, model)]
        shared = [e for e in methods if not e.trains and not spec.eval.generation.do_sample]
        out.extend(Cell(model, entry, None) for entry in shared)
        for seed in spec.all_seeds:
            out.extend(Cell(model, entry, seed) for entry in methods
                       if entry not in shared and seed in spec.seeds_of(entry))
    return out


CELL_KEYS = ("model", "method", "seed")


def select_cells(todo: list[Cell], only: dict[str, list[str]] | None) -> list[Cell]:
    """The cells matching every ``key -> allowed values`` filter (``model``, ``method``, ``seed``).

    A shared base cell (seed "all") matches any seed filter, since every seed's comparison needs it.
    Unknown keys or values raise one error naming the valid choices.
    """
    from lpa.errors import LpaError

    if not only:
        return todo
    choices = {
        "model": list(dict.fromkeys(c.model for c in todo)),
        "method": list(dict.fromkeys(c.entry.name for c in todo)),
        "seed": list(dict.fromkeys(str(c.seed) for c in todo if c.seed is not None)),
    }
    for key, values in only.items():
        if key not in CELL_KEYS:
            raise LpaError(f"Unknown cell filter {key!r}; valid: {', '.join(CELL_KEYS)}.")
        unknown = [v for v in values if v not in choices[key]]
        if unknown:
            raise LpaError(f"No {key} {', '.join(map(repr, unknown))} in this spec; valid: {', '.join(choices[key])}.")

    def keep(cell: Cell) -> bool:
        values = {"model": cell.model, "method": cell.entry.name, "seed": None if cell.seed is None else str(cell.seed)}
        return all(values[k] is None or values[k] in allowed for k, allowed in only.items())

    return [c for c in todo if keep(c)]


def parse_only(items: list[str] | None) -> dict[str, list[str]]:
    """``["method=base,lpa", "seed=0"]`` -> ``{"method": ["base", "lpa"], "seed": ["0"]}``."""
    from lpa.errors import LpaError

    out: dict[str, list[str]] = {}
    for item in items or []:
        key, sep, values = item.partition("=")
        if not sep or not values.strip():
            raise LpaError(f"--only expects KEY=V1,V2 with KEY one of {', '.join(CELL_KEYS)}; got {item!r}.")
        out.setdefault(key.strip(), []).extend(v.strip() for v in values.split(",") if v.strip())
    return out


def train_config(spec: ExperimentSpec, cell: Cell, folder: Path) -> Any:
    from lpa.training import build_train_config

    fields: dict[str, Any] = {
        **cell.entry.train,
        "method": cell.entry.method,
        "model": cell.model,
        "out": str(folder / "train"),
        "seed": cell.seed or 0,
        "device": spec.device,
        "data_dir": spec.data_dir,
        "preset": cell.entry.preset,
    }
    if cell.entry.traits is not None:
        fields["traits"] = cell.entry.traits
    if spec.selection is not None:  # every trained cell is selected by the spec's one rule
        fields["selection"] = {**spec.selection.model_dump(mode="json"), "enabled": True}
    return build_train_config(None, None, **fields)


def cell_key(spec: ExperimentSpec, cell: Cell) -> str:
    """What makes a cell's result valid: suite, method entry, model, seed, device, data folder.

    The model is named by its spec here; the weights' identity is in every generation key inside
    the cell (:class:`lpa.models.ModelIdentity`).  Keep this unchanged: finished cells are matched on it.
    """
    suite = suite_for(spec, cell.entry)
    # the entry's seeds and models say which cells exist, not what one cell computes: it stays out of the key
    payload = {"suite": suite.model_dump(mode="json"), "entry": cell.entry.model_dump(exclude={"seeds", "models"}),
               "model": cell.model,
               "seed": cell.seed, "device": spec.device, "data_dir": spec.data_dir}
    if spec.selection is not None and cell.entry.trains:  # absent otherwise, so older cells keep their keys
        payload["selection"] = spec.selection.model_dump(mode="json")
    return digest(payload)


def finished_record(spec: ExperimentSpec, cell: Cell, root: Path) -> dict[str, Any] | None:
    """The cell's record if it was finished under the current spec, else None (the report reads records only)."""
    marker = cell.folder(root) / "cell.json"
    if not marker.is_file():
        return None
    record = json.loads(marker.read_text(encoding="utf-8"))
    if record.get("key") != cell_key(spec, cell):
        return None
    return record


def _train_texts(spec: ExperimentSpec, cell: Cell, root: Path) -> list[str]:
    """The cell's training texts for the overlap analysis ([] for base, or when they cannot be rebuilt)."""
    if not cell.entry.trains:
        return []
    from lpa.errors import LpaError

    try:
        return training_texts(spec, cell, root)
    except (LpaError, ValueError, OSError) as exc:
        log.warning("%s: training texts not available for the overlap analysis (%s)", cell.folder(root), exc)
        return []


def adversary_summary(train_dir: Path | None) -> dict[str, Any] | None:
    """What the perturbed model said during training (greedy decodes under the attacker), screened with
    the harm-keyword list used for trait statements; None when monitoring was off."""
    if train_dir is None:
        return None
    texts = [r["text"] for r in read_jsonl(train_dir / "adversary_samples.jsonl")]
    if not texts:
        return None
    from lpa.coherence import is_refusal, is_template_leak
    from lpa.traits.screen import harm_keywords_in

    n = len(texts)
    harmful = [t for t in texts if harm_keywords_in(t)]
    return {"decoded": n, "harm_keyword_rate": len(harmful) / n, "refusal_rate": sum(map(is_refusal, texts)) / n,
            "template_rate": sum(map(is_template_leak, texts)) / n, "first_flagged": harmful[0] if harmful else None}


def training_texts(spec: ExperimentSpec, cell: Cell, root: Path) -> list[str]:
    """The user turns the method trains on (unique, in order): what the overlap analysis compares."""
    from lpa.training.base import METHODS

    config = train_config(spec, cell, cell.folder(root))
    examples = METHODS.get(cell.entry.method)().build_examples(config, None)
    return list(dict.fromkeys(e.messages[-1]["content"] for e in examples))


ANSWER_CACHES = ("generations.jsonl", "judgements.jsonl", "utility.jsonl")


def reuse_baseline_answers(spec: ExperimentSpec, cell: Cell, root: Path) -> bool:
    """Seed ``cell``'s empty eval folder with the untrained baseline cell's answers and verdicts (keyed by model,
    prompt and settings, so only identical requests hit them); False when there is nothing to reuse."""
    import shutil

    baseline = next((m for m in spec.methods if m.name == spec.baseline and not m.trains), None)
    if baseline is None:
        return False
    source, target = cell_folder(root, cell.model, baseline.name, "all") / "eval", cell.folder(root) / "eval"
    if not source.is_dir() or any(target.glob("generations.jsonl*")):
        return False
    target.mkdir(parents=True, exist_ok=True)
    for name in ANSWER_CACHES:
        for path in (source / name, source / f"{name}.gz"):
            if path.is_file():
                shutil.copy2(path, target / path.name)
    if (source / "attack_cache").is_dir():
        shutil.copytree(source / "attack_cache", target / "attack_cache", dirs_exist_ok=True)
    log.info("%s: selection kept step 0, so the cell evaluates the base model; answers reused from %s",
             cell.folder(root), source)
    return True


def run_cell(spec: ExperimentSpec, cell: Cell, root: Path, *, progress: bool = True) -> dict[str, Any]:
    """Train (if needed) and evaluate one cell; returns its record (rows, costs, report fields).

    The cell's folder is locked while it runs: a cell another process is running raises
    :class:`lpa.errors.FolderBusy` (two processes resuming one cell would write every answer twice).
    """
    if (record := finished_record(spec, cell, root)) is not None:
        return record
    folder = cell.folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    with run_lock(folder):  # a second process on this cell gets FolderBusy at once, before any work
        if (record := finished_record(spec, cell, root)) is not None:  # another process finished it just before
            return record
        return _compute_cell(spec, cell, root, progress=progress)


def _compute_cell(spec: ExperimentSpec, cell: Cell, root: Path, *, progress: bool) -> dict[str, Any]:
    """Train and evaluate an unfinished cell whose folder this process holds, and write its record."""
    from lpa.eval.runner import evaluate

    folder = cell.folder(root)
    adapter, selection, train_dir = None, None, None
    cost: dict[str, Any] = {"n_train_examples": 0, "fwd_bwd_passes": 0, "train_wall_s": 0.0}
    if cell.entry.trains:
        from lpa.training import train

        config = train_config(spec, cell, folder)
        config = config.model_copy(update={"progress": progress})
        result = train(config)
        adapter, train_dir = str(result.adapter), Path(result.adapter).parent
        summary = result.summary
        cost = {
            "n_train_examples": summary.get("n_train_examples", 0),
            "fwd_bwd_passes": summary.get("fwd_bwd_passes", 0),
            "train_wall_s": summary.get("wall_time_s", 0.0),
            "steps_done": summary.get("steps_done"),
            "stopped": summary.get("stopped"),
        }
        selection = summary.get("selection")
        if selection is not None and selection.get("step") == 0:
            # The rule kept the model before training: its answers are the base model's, so the cell evaluates
            # the base model itself, starting from the baseline cell's answers when they exist.
            adapter = None
            reuse_baseline_answers(spec, cell, root)
    # answers already on disk (a resumed run, or the base cell's) make this run's wall time a part of the whole
    cost["eval_resumed"] = any((folder / "eval").glob("generations.jsonl*"))
    start = time.perf_counter()
    results = evaluate(suite_for(spec, cell.entry), cell.model, adapter=adapter, out_dir=folder / "eval",
                       device=spec.device, progress=progress)
    cost["eval_wall_s"] = time.perf_counter() - start
    cost["attack_timing"] = results.meta.get("timing") or {}  # engine seconds per attack: the plan's unit costs
    tags = {"method": cell.entry.name, "seed": "all" if cell.seed is None else cell.seed, "model": cell.model}
    record = {
        "key": cell_key(spec, cell),
        **tags,
        "adapter": adapter,
        "identity": results.meta.get("identity"),
        "judges": results.meta.get("judges"),  # the versions that produced the verdicts (κ is per version)
        "cost": cost,
        "rows": [{**row, **tags} for row in results.rows],
        "adversary": adversary_summary(train_dir),
        "train_texts": _train_texts(spec, cell, root),
    }
    if selection is not None:
        from lpa.experiments.selection import cell_selection

        record["selection"] = cell_selection(selection, folder / "train", results.meta)
    atomic_write_json(folder / "cell.json", record)
    return record


__all__ = [
    "ANSWER_CACHES", "CELL_KEYS", "Cell", "adversary_summary", "cell_folder", "cell_key", "cells", "finished_record",
    "parse_only", "reuse_baseline_answers", "run_cell", "select_cells", "suite_for", "train_config", "training_texts",
]
