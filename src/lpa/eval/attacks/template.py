"""Human-style jailbreak templates: the request is pasted into each template's slot.

Template files (the shipped ``lpa/data/attacks/templates.yaml`` or your own collection):

* **YAML**: a list of entries, or a mapping with a ``templates:`` list.
* **JSONL**: one JSON object per line.
* **CSV**: a header row with at least ``id`` and ``template`` columns.
* **PyRIT-style YAML**: one template per file (``name`` and a ``value`` with a Jinja
  ``{{ prompt }}`` slot, usually inside ``{% raw %}`` blocks), or a folder of such files.

Each of our entries has ``id`` (unique string), ``template`` (text containing the placeholder,
``{request}`` by default; other braces are left alone) and an optional ``description``; an entry
with ``value`` instead of ``template`` is read as a PyRIT slot template.  Every template is one
variant of each sample; the sample counts as jailbroken if any template succeeds.

PyRIT values are never evaluated as Jinja (they are untrusted text collected on the web): the
``{% raw %}`` markers are dropped, and only ``{{ prompt }}`` outside them is a slot; anything else
(``{{ 7*7 }}``, ``{% for %}``) stays literal text.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from lpa.errors import LpaError
from lpa.eval.attacks.base import Attack, AttackedPrompt, register_attack
from lpa.eval.attacks.support.util import DATA_DIR, replace_request, request_text
from lpa.io import read_table
from lpa.plugins import PluginArgs
from lpa.records import Sample

DEFAULT_TEMPLATES = DATA_DIR / "templates.yaml"
_RAW_BLOCK = re.compile(r"\{%-?\s*raw\s*-?%\}(.*?)\{%-?\s*endraw\s*-?%\}", re.S)
_SLOT = re.compile(r"\{\{-?\s*prompt\s*-?\}\}")


class JailbreakTemplate(BaseModel):
    """One template: ``parts`` are the literal texts around the slot(s); the request goes between them."""

    id: str
    template: str
    description: str = ""
    parts: tuple[str, ...] | None = None  # set for slot templates (PyRIT); else ``template`` + placeholder

    def render(self, request: str, placeholder: str = "{request}") -> str:
        if self.parts is not None:
            return request.join(self.parts)
        return self.template.replace(placeholder, request)


def split_slot_template(value: str) -> tuple[str, ...]:
    """Literal pieces of a PyRIT value around its ``{{ prompt }}`` slots, without evaluating any Jinja."""
    pieces: list[str] = [""]
    position = 0
    for raw in _RAW_BLOCK.finditer(value):
        _split_outside(value[position : raw.start()], pieces)
        pieces[-1] += raw.group(1)
        position = raw.end()
    _split_outside(value[position:], pieces)
    return tuple(pieces)


def _split_outside(text: str, pieces: list[str]) -> None:
    """Text outside raw blocks: ``{{ prompt }}`` starts a new piece, everything else is literal."""
    chunks = _SLOT.split(text)
    pieces[-1] += chunks[0]
    pieces.extend(chunks[1:])


def slot_template(entry: dict[str, Any], default_id: str, where: str) -> JailbreakTemplate:
    """A PyRIT-style entry (``name``/``id`` and ``value``) as a template; an error if it has no slot."""
    value = entry.get("value")
    if not isinstance(value, str):
        raise LpaError(f"{where}: a PyRIT-style template needs a text 'value'.")
    parts = split_slot_template(value)
    if len(parts) < 2:
        raise LpaError(f"{where}: template value has no {{{{ prompt }}}} slot.")
    template_id = str(entry.get("id") or entry.get("name") or default_id)
    description = entry.get("description") if isinstance(entry.get("description"), str) else ""
    return JailbreakTemplate(id=template_id, template="{prompt}".join(parts), description=description or "", parts=parts)


def fast_yaml(text: str) -> Any:
    """``yaml.safe_load`` through libyaml when PyYAML has it: the 488-file in-the-wild corpus reads in 0.2 s, not 4.9 s."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 (a safe loader)


def _read_entries(path: Path) -> list[tuple[dict[str, Any], str]]:
    """(entry, where) pairs of a file or a folder of PyRIT YAML files."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".yaml", ".yml"))
        if not files:
            raise LpaError(f"{path}: folder holds no .yaml templates.")
        out = []
        for file in files:
            try:
                data = fast_yaml(file.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                raise LpaError(f"Cannot read {file}: {exc}") from None
            if not isinstance(data, dict) or "value" not in data:
                raise LpaError(f"{file}: expected a PyRIT-style template (a mapping with 'value').")
            out.append(({"id": data.get("name") or file.stem, **data}, str(file)))
        return out
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            data = fast_yaml(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise LpaError(f"Cannot read {path}: {exc}") from None
        if isinstance(data, dict) and "value" in data:  # one PyRIT template
            return [({"id": data.get("name") or path.stem, **data}, str(path))]
    return [(row, f"{path}: entry {n}") for n, row in enumerate(read_table(path, list_key="templates"), start=1)]


@lru_cache(maxsize=16)
def load_templates(path: str | Path = DEFAULT_TEMPLATES, placeholder: str = "{request}") -> tuple[JailbreakTemplate, ...]:
    """Read and validate templates (unique ids, each with a slot): a file or a folder of PyRIT YAML."""
    path = Path(path)
    if not path.exists():
        raise LpaError(f"Template file not found: {path}")
    templates: list[JailbreakTemplate] = []
    for number, (row, where) in enumerate(_read_entries(path), start=1):
        if isinstance(row, dict) and "template" not in row and "value" in row:
            templates.append(slot_template(row, str(number), where))
            continue
        if not isinstance(row, dict) or "template" not in row:
            raise LpaError(f"{where}: needs a 'template' field (and an 'id'), or a PyRIT 'value'.")
        row = {k: v for k, v in row.items() if k in ("id", "template", "description") and v is not None}
        row.setdefault("id", str(number))
        row["id"] = str(row["id"])
        item = JailbreakTemplate(**row)
        if placeholder not in item.template:
            raise LpaError(f"{path}: template {item.id!r} lacks the placeholder {placeholder}.")
        templates.append(item)
    ids = [t.id for t in templates]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise LpaError(f"{path}: duplicate template ids {duplicates}.")
    if not templates:
        raise LpaError(f"{path}: no templates found.")
    return tuple(templates)


class TemplateArgs(PluginArgs):
    file: str | None = Field(None, description="Template file (.yaml/.jsonl/.csv, PyRIT YAML or a folder of them); "
                                               "default: lpa's shipped templates.")
    ids: list[str] | None = Field(None, description="Use only these template ids (default: all).")
    placeholder: str = Field("{request}", description="Marker replaced by the request in each template.")


@register_attack
class Template(Attack[TemplateArgs]):
    name = "template"
    description = "Paste the request into human-style jailbreak templates (role-play, story, developer mode...)."

    def templates(self) -> list[JailbreakTemplate]:
        templates = list(load_templates(self.args.file or DEFAULT_TEMPLATES, self.args.placeholder))
        if self.args.ids is None:
            return templates
        known = {t.id: t for t in templates}
        missing = [i for i in self.args.ids if i not in known]
        if missing:
            raise LpaError(f"Unknown template ids {missing}. Valid ids: {', '.join(known)}.")
        return [known[i] for i in self.args.ids]

    def check(self) -> None:
        self.templates()

    def transform(self, sample: Sample) -> list[AttackedPrompt]:
        request = request_text(sample)
        return [
            AttackedPrompt(
                messages=replace_request(sample, t.render(request, self.args.placeholder)),
                variant=variant,
                info={"template": t.id},
            )
            for variant, t in enumerate(self.templates())
        ]
