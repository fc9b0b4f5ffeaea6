"""Many-shot jailbreaking: k fabricated user/assistant turns in which the assistant complies,
then the real request.  The shipped turns (``lpa/data/attacks/many_shot.yaml``) are compliant-
looking placeholders with no harmful content: they test the in-context mechanism only.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from lpa.errors import LpaError
from lpa.eval.attacks.base import Attack, AttackedPrompt, register_attack
from lpa.eval.attacks.support.util import DATA_DIR, sample_rng
from lpa.plugins import PluginArgs
from lpa.records import Message, Sample

DEFAULT_SHOTS = DATA_DIR / "many_shot.yaml"


@lru_cache(maxsize=8)
def load_shots(path: str | Path = DEFAULT_SHOTS) -> tuple[tuple[str, str], ...]:
    """(user, assistant) pairs from a YAML file with a ``shots:`` list of {user, assistant}."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise LpaError(f"Many-shot file not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    rows = data.get("shots", []) if isinstance(data, dict) else data
    shots = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not {"user", "assistant"} <= set(row):
            raise LpaError(f"{path}: shot {number} needs 'user' and 'assistant' fields.")
        shots.append((str(row["user"]), str(row["assistant"])))
    if not shots:
        raise LpaError(f"{path}: no shots found.")
    return tuple(shots)


class ManyShotArgs(PluginArgs):
    shots: int = Field(8, ge=1, description="Number k of fabricated compliant exchanges before the request.")
    file: str | None = Field(None, description="YAML file with a 'shots' list of {user, assistant}; default: shipped.")
    shuffle: bool = Field(True, description="Shuffle the shots per sample (seeded); repeats cycle if k > file size.")
    seed: int = Field(0, description="Seed for the per-sample shuffle.")


@register_attack
class ManyShot(Attack[ManyShotArgs]):
    name = "many-shot"
    description = "k fabricated turns where the assistant complies (placeholders), then the request."

    def check(self) -> None:
        load_shots(self.args.file or DEFAULT_SHOTS)

    def transform(self, sample: Sample) -> list[AttackedPrompt]:
        pool = list(load_shots(self.args.file or DEFAULT_SHOTS))
        if self.args.shuffle:
            sample_rng(self.args.seed, sample.id).shuffle(pool)
        dialogue: list[Message] = []
        for i in range(self.args.shots):
            user, assistant = pool[i % len(pool)]
            dialogue += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        messages = sample.as_messages()
        # keep a leading system turn first
        head = messages[:1] if messages and messages[0]["role"] == "system" else []
        return [AttackedPrompt(messages=[*head, *dialogue, *messages[len(head):]], info={"shots": self.args.shots})]
