"""Every query of a search attack (target, attacker, evaluator) cached in the run folder.

Search attacks (PAIR, TAP, Crescendo) make hundreds of queries per behaviour; the eval runner
saves a behaviour only once its search ends.  This cache appends each answer as one fsynced JSONL
line keyed by who was asked, the whole conversation and the sampling settings, so a search
interrupted halfway replays its finished queries from disk and continues where it stopped (the
attacker's sampling is seeded per round, so the replay takes the same path).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lpa.io import JsonlCache, digest
from lpa.records import Message


class QueryCache:
    """``{key: text}`` backed by ``path`` (a :class:`lpa.io.JsonlCache`), or memory only when ``path`` is None."""

    def __init__(self, path: str | Path | None) -> None:
        self.hits = 0
        self.misses = 0
        # the eval run holds the folder's lock; the shared cache cuts a torn last line and refuses foreign rows
        self._store = JsonlCache(path, "attack-query", lock=False) if path is not None else None
        self._texts: dict[str, str] = {k: r["text"] for k, r in self._store.rows.items()} if self._store else {}

    def _lookup(self, keys: Sequence[str], missing: Callable[[list[int]], list[str]], role: str) -> list[str]:
        todo = [i for i, k in enumerate(keys) if k not in self._texts]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            texts = missing(todo)
            rows = [{"key": keys[i], "role": role, "text": t} for i, t in zip(todo, texts, strict=True)]
            if self._store is not None:
                self._store.add(rows)
            self._texts.update({r["key"]: r["text"] for r in rows})
        return [self._texts[k] for k in keys]

    def chat(self, role: str, who: dict[str, Any], conversations: Sequence[Sequence[Message]],
             options: dict[str, Any], engine: Callable[[Sequence[Sequence[Message]], dict[str, Any]], list[str]]
             ) -> list[str]:
        """Attacker/evaluator replies; the key holds the conversation, so distinct requests never collide."""
        # the position is in the key: identical conversations sampled in one call (parallel streams) differ
        keys = [digest([role, who, list(c), options, i]) for i, c in enumerate(conversations)]
        return self._lookup(keys, lambda todo: engine([conversations[i] for i in todo], options), role)

    def target(self, ctx: Any, prompts: Sequence[Any]) -> list[str]:
        """The target's answers through ``ctx.generate`` (deterministic settings make the cache exact)."""
        who = {"model": ctx.model_name, "adapter": ctx.adapter, "settings": ctx.settings}
        keys = [digest(["target", who, p.messages, p.prefill]) for p in prompts]
        return self._lookup(keys, lambda todo: ctx.generate([prompts[i] for i in todo]), "target")


def attack_cache(ctx: Any, attack_name: str) -> QueryCache:
    """The run folder's cache for one attack (memory only when the context has no folder)."""
    folder = getattr(ctx, "cache_dir", None)
    return QueryCache(Path(folder) / f"{attack_name}.jsonl" if folder is not None else None)
