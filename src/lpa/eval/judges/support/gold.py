"""Labelled (request, answer) pairs for validating judges: the file format and the shipped set.

One JSON object per line; required fields ``request``, ``answer``, ``label`` (``complied`` /
``refused`` / ``nonsense``) and ``request_label`` (``harmful`` / ``benign``).  Optional: ``id``,
``split`` (``dev`` / ``test``), the source of the row (``model``, ``adapter``, ``benchmark``,
``attack``), the prompt actually sent (``sent``, with ``prefill``) and a reading ``note``.

The shipped set (``lpa/data/judges/gold.jsonl``) and how it was labelled are described in
``docs/judging.md``.  Its ``dev`` split is for fitting and thresholds, ``test`` for reporting only.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from lpa.errors import LpaError
from lpa.io import existing_jsonl, iter_jsonl
from lpa.plugins import create
from lpa.records import Generation, Sample

GOLD_LABELS: tuple[str, ...] = ("complied", "refused", "nonsense")
SHIPPED_GOLD = "shipped"


class GoldRow(BaseModel):
    model_config = ConfigDict(extra="allow")

    request: str
    answer: str
    label: Literal["complied", "refused", "nonsense"]
    request_label: Literal["harmful", "benign"]
    id: str = ""
    split: Literal["dev", "test"] | None = None
    model: str | None = None
    adapter: str | None = None
    benchmark: str = "gold"
    attack: str = "direct"
    sent: str | None = None
    prefill: str | None = None
    note: str | None = None

    def sample(self) -> Sample:
        return Sample(id=self.id, benchmark=self.benchmark, prompt=self.request, label=self.request_label)

    def generation(self) -> Generation:
        messages = [{"role": "user", "content": self.sent or self.request}]
        return Generation(sample_id=self.id, benchmark=self.benchmark, attack=self.attack, model=self.model or "",
                          adapter=self.adapter, messages=messages, prefill=self.prefill, text=self.answer)


def shipped_gold_path() -> Path:
    return Path(str(resources.files("lpa").joinpath("data/judges/gold.jsonl")))


def load_gold(path: str | Path = SHIPPED_GOLD, split: str | None = None) -> list[GoldRow]:
    """Rows of a gold file (``"shipped"`` = the packaged set), optionally one split; errors name the line."""
    file = shipped_gold_path() if str(path) == SHIPPED_GOLD else Path(path)
    if not file.is_file():
        raise LpaError(f"No gold file {file}: give a JSONL file of labelled answers or 'shipped'.")
    rows = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = GoldRow(**json.loads(line))
        except (json.JSONDecodeError, ValidationError, TypeError) as exc:
            raise LpaError(f"{file}:{number}: not a gold row ({str(exc).splitlines()[0]}). Required fields: "
                           f"request, answer, label ({'/'.join(GOLD_LABELS)}), request_label (harmful/benign).") from None
        rows.append(row if row.id else row.model_copy(update={"id": f"row{number}"}))
    if split is not None and split != "all":
        if split not in ("dev", "test"):
            raise LpaError(f"Unknown split {split!r}. Valid choices: all, dev, test.")
        rows = [r for r in rows if r.split == split]
        if not rows:
            raise LpaError(f"{file} has no rows with split={split!r}; use --split all.")
    if not rows:
        raise LpaError(f"{file} holds no labelled rows.")
    return rows


def split_gold(rows: Sequence[GoldRow], test_fraction: float = 0.5, seed: int = 0) -> list[GoldRow]:
    """Seeded dev/test split, stratified by (request_label, label) and grouped by request.

    Rows that share a request go to the same side, so test requests are never seen in fitting.
    """
    groups: dict[str, list[GoldRow]] = defaultdict(list)
    for row in rows:
        groups[row.request].append(row)
    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    for request, members in groups.items():
        first = members[0]
        majority = max(GOLD_LABELS, key=lambda lab: sum(m.label == lab for m in members))
        strata[(first.request_label, majority)].append(request)
    rng = random.Random(seed)
    test: set[str] = set()
    for key in sorted(strata):
        requests = sorted(strata[key])
        rng.shuffle(requests)
        test.update(requests[: round(len(requests) * test_fraction)])
    return [r.model_copy(update={"split": "test" if r.request in test else "dev"}) for r in rows]


def extend_split(existing: Sequence[GoldRow], new: Sequence[GoldRow], test_fraction: float = 0.5,
                 seed: int = 0) -> list[GoldRow]:
    """Add rows without moving any existing row between splits.

    A new row whose request is already in ``existing`` joins that request's split (so a test
    request is never fitted on); rows with new requests are split by :func:`split_gold`.
    """
    known = {r.request: r.split for r in existing if r.split}
    fresh = split_gold([r for r in new if r.request not in known], test_fraction, seed)
    placed = {r.id: r for r in fresh}
    ids = {r.id for r in existing}
    out = list(existing)
    for row in new:
        if row.id in ids:
            raise LpaError(f"Row id {row.id!r} is already in the gold set; give new rows new ids.")
        out.append(placed.get(row.id) or row.model_copy(update={"split": known[row.request]}))
    return out


def gold_request(sample: Sample) -> str:
    """The request text a gold row carries: the benchmark's behaviour, not an attack's wrapper around it."""
    return sample.extra.get("behavior") or sample.prompt or sample.as_messages()[-1]["content"]


def unlabelled_rows(eval_dir: str | Path, data_dir: str | None = None, max_sent: int = 3000) -> list[dict]:
    """Gold-shaped rows (``label`` empty) from a run's ``generations.jsonl``, with their source fields.

    The original request and its harmful/benign label come from the run's benchmarks
    (``config.yaml``); ``method`` and ``seed`` from a ``<method>/seed-<s>/eval`` layout when present.
    """
    import yaml

    from lpa.eval.benchmarks import BENCHMARKS

    folder = Path(eval_dir)
    gen_file, config_file = existing_jsonl(folder / "generations.jsonl"), folder / "config.yaml"
    if not gen_file.is_file() or not config_file.is_file():
        raise LpaError(f"{folder} is not an eval run: it needs generations.jsonl and config.yaml.")
    config = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
    samples: dict[tuple[str, str], Sample] = {}
    for spec in config.get("benchmarks", []):
        bench = create(BENCHMARKS, spec, data_dir=data_dir) if data_dir else create(BENCHMARKS, spec)
        samples.update({(s.benchmark, s.id): s for s in bench.load()})
    parts = folder.resolve().parts
    seed = next((p.removeprefix("seed-") for p in reversed(parts) if p.startswith("seed-")), None)
    method = parts[parts.index(f"seed-{seed}") - 1] if seed is not None else None
    rows = []
    for row in iter_jsonl(gen_file):
        gen = Generation(**row)
        sample = samples.get((gen.benchmark or "", gen.sample_id))
        if sample is None:
            continue
        users = [m["content"] for m in gen.messages if m.get("role") == "user"]
        variant = getattr(gen, "variant", 0)
        rows.append({"id": f"{gen.model}:{method}:{seed}:{gen.benchmark}:{gen.attack}:{gen.sample_id}:{variant}",
                     "request": gold_request(sample),
                     "answer": gen.text, "label": "", "request_label": sample.label, "model": gen.model,
                     "adapter": gen.adapter, "method": method, "seed": seed, "benchmark": gen.benchmark,
                     "attack": gen.attack, "attack_info": {**gen.attack_args, **getattr(gen, "info", {})},
                     "sent": users[-1][:max_sent] if users else None, "prefill": gen.prefill,
                     "sample_id": gen.sample_id, "note": ""})
    return rows


def stratified_sample(rows: Sequence[dict], n: int, seed: int = 0,
                      exclude: Sequence[GoldRow] = ()) -> list[dict]:
    """Up to ``n`` rows, round-robin over (method, benchmark, attack) cells, skipping answers already labelled.

    A new answer whose id is taken (the same method and seed in another experiment, e.g. ``make demo``
    and a study) gets the id plus a hash of its adapter path, so ``lpa judges add`` accepts it.
    """
    import hashlib

    seen = {(r.request, r.answer) for r in exclude}
    taken = {r.id for r in exclude}
    cells: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for row in rows:
        if (row["request"], row["answer"]) in seen:
            continue
        if row["id"] in taken:
            source = str(row.get("adapter") or row.get("model"))
            row = {**row, "id": f"{row['id']}@{hashlib.sha256(source.encode()).hexdigest()[:8]}"}
        cells[(str(row.get("method")), str(row["benchmark"]), str(row["attack"]))].append(row)
    rng = random.Random(seed)
    queues = []
    for key in sorted(cells):
        members = list(cells[key])
        rng.shuffle(members)
        queues.append(members)
    out: list[dict] = []
    while len(out) < n and any(queues):
        for queue in queues:
            if queue and len(out) < n:
                out.append(queue.pop())
    return out
