"""Trait-set files: a list of first-person statements with the answer the model should give.

Files are YAML (``items: [...]`` or a bare list) or CSV (columns ``statement,target,family,
polarity`` and optional ``facet,severity``).  Every error names the file, the row and the problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lpa.errors import LpaError
from lpa.io import read_csv, read_text

Target = Literal["agree", "disagree"]
Polarity = Literal["desirable", "undesirable", "neutral"]


class TraitItem(BaseModel):
    """One questionnaire-style statement and the answer training pushes toward."""

    model_config = ConfigDict(extra="forbid")

    statement: str = Field(description="First-person statement shown as the user message.")
    target: Target = Field(description="The answer to train toward: agree or disagree.")
    family: str = Field(description="Trait family (e.g. agreeableness, malicious).")
    polarity: Polarity = Field(description="Whether the statement describes a desirable or undesirable trait.")
    facet: str | None = Field(None, description="Optional finer facet within the family.")
    severity: int | None = Field(None, ge=1, le=10, description="Optional grade from mild (1) to extreme.")

    @field_validator("statement", "family")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        return value


class TraitSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    items: list[TraitItem]

    def summary(self) -> dict[str, Any]:
        """Counts per target, polarity and family (for ``lpa traits list/show``)."""
        out: dict[str, Any] = {"n": len(self.items)}
        for key in ("target", "polarity", "family"):
            counts: dict[str, int] = {}
            for item in self.items:
                value = str(getattr(item, key))
                counts[value] = counts.get(value, 0) + 1
            out[key] = counts
        return out


def _row_error(path: Path, row: int, exc: ValidationError) -> LpaError:
    problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in exc.errors())
    return LpaError(f"{path}: row {row}: {problems}.")


def _items_from(path: Path, rows: list[Any], first_row: int) -> list[TraitItem]:
    items = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(rows, start=first_row):
        if not isinstance(raw, dict):
            raise LpaError(f"{path}: row {number}: expected a mapping with statement/target/family/polarity.")
        raw = {k: (None if v == "" else v) for k, v in raw.items()}
        try:
            item = TraitItem.model_validate(raw)
        except ValidationError as exc:
            raise _row_error(path, number, exc) from None
        key = item.statement.lower()
        if key in seen:
            raise LpaError(f"{path}: row {number}: duplicate statement (first at row {seen[key]}).")
        seen[key] = number
        items.append(item)
    if not items:
        raise LpaError(f"{path}: no trait statements found.")
    return items


def load_trait_file(path: str | Path) -> TraitSet:
    """Read and validate a YAML or CSV trait file."""
    path = Path(path)
    if not path.is_file():
        raise LpaError(f"Trait file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        fields, rows = read_csv(path)
        missing = {"statement", "target", "family", "polarity"} - set(fields)
        if missing:
            raise LpaError(f"{path}: missing CSV column(s): {', '.join(sorted(missing))}.")
        return TraitSet(name=path.stem, items=_items_from(path, rows, first_row=2))
    if suffix not in (".yaml", ".yml"):
        raise LpaError(f"{path}: unsupported trait file type {suffix!r}; use .yaml, .yml or .csv.")
    try:
        data = yaml.safe_load(read_text(path))
    except yaml.YAMLError as exc:
        raise LpaError(f"{path}: not valid YAML ({exc}).") from None
    if isinstance(data, list):
        data = {"items": data}
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise LpaError(f"{path}: expected a list of items or a mapping with an 'items' list.")
    unknown = set(data) - {"name", "description", "items"}
    if unknown:
        raise LpaError(f"{path}: unknown top-level key(s): {', '.join(sorted(unknown))} (valid: name, description, items).")
    return TraitSet(
        name=str(data.get("name") or path.stem),
        description=str(data.get("description") or ""),
        items=_items_from(path, data["items"], first_row=1),
    )
