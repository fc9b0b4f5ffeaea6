"""Human-style jailbreak templates: the request is pasted into a template's ``{request}`` placeholder.

Template files (the shipped ``lpa/data/attacks/templates.yaml`` or your own collection):

* **YAML**: a list of entries, or a mapping with a ``templates:`` list.
* **JSONL**: one JSON object per line.
* **CSV**: a header row with at least ``id`` and ``template`` columns.

Each entry has ``id`` (unique string), ``template`` (text containing the placeholder, ``{request}``
by default; other braces are left alone) and an optional ``description``.  Every template is one
variant of each sample; the sample counts as jailbroken if any template succeeds.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field

from lpa.errors import LpaError
from lpa.eval.attacks.base import Attack, AttackedPrompt, register_attack
from lpa.eval.attacks.support.util import DATA_DIR, replace_request, request_text
from lpa.io import read_table
from lpa.plugins import PluginArgs
from lpa.records import Sample

DEFAULT_TEMPLATES = DATA_DIR / "templates.yaml"


class JailbreakTemplate(BaseModel):
    id: str
    template: str
    description: str = ""


@lru_cache(maxsize=16)
def load_templates(path: str | Path = DEFAULT_TEMPLATES, placeholder: str = "{request}") -> tuple[JailbreakTemplate, ...]:
    """Read and validate a template file (unique ids, each containing the placeholder)."""
    path = Path(path)
    if not path.is_file():
        raise LpaError(f"Template file not found: {path}")
    templates: list[JailbreakTemplate] = []
    for number, row in enumerate(read_table(path, list_key="templates"), start=1):
        if not isinstance(row, dict) or "template" not in row:
            raise LpaError(f"{path}: entry {number} needs a 'template' field (and an 'id').")
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
    file: str | None = Field(None, description="Template file (.yaml/.jsonl/.csv); default: lpa's shipped templates.")
    ids: list[str] | None = Field(None, description="Use only these template ids (default: all).")
    placeholder: str = Field("{request}", description="Marker replaced by the request in each template.")


@register_attack
class Template(Attack):
    name = "template"
    description = "Paste the request into human-style jailbreak templates (role-play, story, developer mode...)."
    Args = TemplateArgs

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
                messages=replace_request(sample, t.template.replace(self.args.placeholder, request)),
                variant=variant,
                info={"template": t.id},
            )
            for variant, t in enumerate(self.templates())
        ]
