"""Persona trait definitions: a validated YAML schema and a registry of built-in traits.

A trait file holds contrastive system-prompt instruction pairs (expressing vs suppressing the
trait), extraction questions, held-out evaluation questions, a judge rubric and optional
keywords for the offline heuristic judge.  Built-ins live in ``lpa/data/persona/*.yaml``;
users pass their own file path wherever a trait name is accepted.

Not to be confused with :mod:`lpa.traits`: the trait *statement sets* that LPA trains on.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from lpa.config import read_yaml
from lpa.errors import LpaError
from lpa.registry import Registry


class InstructionPair(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expressing: str = Field(description="System prompt that makes the model express the trait.")
    suppressing: str = Field(description="System prompt that makes the model avoid the trait.")


class Keywords(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expressing: list[str] = Field(default_factory=list, description="Words typical of trait-expressing answers.")
    suppressing: list[str] = Field(default_factory=list, description="Words typical of trait-suppressing answers.")


class TraitDefinition(BaseModel):
    """One persona trait, as written in a YAML file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Trait name (letters, digits, '-', '_').")
    description: str = Field(description="What expressing the trait means; shown to judges.")
    pairs: list[InstructionPair] = Field(min_length=5, description="Contrastive system-prompt pairs (at least 5).")
    extraction_questions: list[str] = Field(min_length=5, description="Questions answered to extract the vector.")
    eval_questions: list[str] = Field(min_length=3, description="Held-out questions for layer selection and evaluation.")
    rubric: str = Field(description="Judge prompt with {question}, {answer}, {trait} and {max} placeholders; asks for "
                                    "an integer from 0 to {max} (100, or 9 for judges that read one digit).")
    keywords: Keywords = Field(default_factory=Keywords, description="Lexicon for the offline heuristic judge.")

    @field_validator("rubric")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        missing = [p for p in ("{question}", "{answer}") if p not in value]
        if missing:
            raise ValueError(f"rubric must contain the placeholders {', '.join(missing)}")
        return value

    @field_validator("eval_questions")
    @classmethod
    def _no_overlap(cls, value: list[str], info: ValidationInfo) -> list[str]:
        overlap = set(value) & set(info.data.get("extraction_questions") or [])
        if overlap:
            raise ValueError(f"evaluation questions must be held out; shared with extraction: {sorted(overlap)[:3]}")
        return value

    @property
    def rubric_scalable(self) -> bool:
        """Whether the rubric names its top score as ``{max}`` (otherwise it is read as 0-100)."""
        return "{max}" in self.rubric

    def render_rubric(self, question: str, answer: str, max_score: int = 100) -> str:
        return self.rubric.replace("{trait}", self.name).replace("{description}", self.description).replace(
            "{max}", str(max_score)).replace("{question}", question).replace("{answer}", answer)


def _builtin_dir() -> Path:
    return Path(str(resources.files("lpa") / "data" / "persona"))


TRAITS: Registry[Path] = Registry("persona trait")
for _file in sorted(_builtin_dir().glob("*.yaml")):
    TRAITS.register(_file.stem, _file)


def read_trait_file(path: str | Path) -> TraitDefinition:
    path = Path(path)
    if not path.is_file():
        raise LpaError(f"Trait file not found: {path}")
    data = read_yaml(path)
    try:
        return TraitDefinition.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise LpaError(f"{path}: invalid trait definition at {where or 'top level'}: {first['msg']}") from None


def load_trait(name_or_path: str | Path | TraitDefinition) -> TraitDefinition:
    """A built-in trait by name, or a user's YAML file by path."""
    if isinstance(name_or_path, TraitDefinition):
        return name_or_path
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return read_trait_file(text)
    return read_trait_file(TRAITS.get(text))


__all__ = ["TRAITS", "InstructionPair", "Keywords", "TraitDefinition", "load_trait", "read_trait_file"]
