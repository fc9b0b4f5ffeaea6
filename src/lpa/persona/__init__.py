"""Persona vectors (Chen et al. 2025): extract, steer, monitor, screen data, preventative fine-tuning.

Heavy submodules import torch; this package root exposes the artefact type, its loader and
:func:`extract` (``lpa persona extract`` as a function).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lpa.config import validate_config
from lpa.persona.vector import PersonaVector, load_vector

if TYPE_CHECKING:
    from lpa.persona.judges import TraitJudge


@dataclass
class Extraction:
    """What :func:`extract` returns: the vector (with its chosen layer), the sweep rows and where it was saved."""

    vector: PersonaVector
    path: Path
    sweep: list[dict[str, Any]] = field(default_factory=list)


def extract(
    *,
    trait: str,
    model: str,
    adapter: str | Path | None = None,
    out: str | Path | None = None,
    judge: str | TraitJudge = "heuristic",
    judge_url: str | None = None,
    judge_model: str | None = None,
    api_key_env: str | None = "OPENAI_API_KEY",
    pairs: int = 5,
    questions: int = 20,
    samples: int = 3,
    max_new_tokens: int = 64,
    batch_size: int = 16,
    layers: Sequence[int] | None = None,
    coefs: Sequence[float] = (0.0, 1.0, 2.0),
    sweep_questions: int = 10,
    sweep: bool = True,
    device: str | None = None,
    dtype: str | None = None,
) -> Extraction:
    """Extract a persona vector for ``trait`` and choose its layer by a steering sweep (``lpa persona extract``).

    ``judge`` is a trait judge's name (:data:`lpa.persona.judges.TRAIT_JUDGES`) or a judge object.
    ``out`` defaults to ``runs/persona/<trait>``; reruns resume from the answers cached there.
    """
    from lpa.models import load_model
    from lpa.persona.extraction import ExtractConfig, SweepConfig, run_extraction
    from lpa.persona.judges import TraitJudge, make_judge
    from lpa.persona.trait_definitions import load_trait

    definition = load_trait(trait)
    folder = Path(out) if out is not None else Path("runs/persona") / definition.name
    # options are checked before the model loads: a bad number is one LpaError, not a pydantic traceback
    config = validate_config(ExtractConfig, dict(n_pairs=pairs, n_questions=questions, samples=samples,
                                                 max_new_tokens=max_new_tokens, batch_size=batch_size),
                             source="extraction options")
    sweep_config = validate_config(SweepConfig, dict(layers=list(layers) if layers is not None else None,
                                                     coefs=list(coefs), n_questions=sweep_questions,
                                                     max_new_tokens=max_new_tokens, batch_size=batch_size),
                                   source="sweep options")
    lm, tok = load_model(model, adapter=adapter, device=device, dtype=dtype)
    trait_judge = judge if isinstance(judge, TraitJudge) else make_judge(
        judge, model=lm, tokenizer=tok, judge_url=judge_url, judge_model=judge_model, api_key_env=api_key_env)
    vector, rows = run_extraction(lm, tok, definition, trait_judge, folder, config, sweep_config, do_sweep=sweep)
    return Extraction(vector, folder / f"{vector.trait}.safetensors", rows)


__all__ = ["Extraction", "PersonaVector", "extract", "load_vector"]
