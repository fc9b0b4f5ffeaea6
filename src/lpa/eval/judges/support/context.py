"""Conversation context for judging multi-turn attacks (Crescendo).

A multi-turn answer leans on earlier turns ("as described above, step 3 is ..."), and the last
question is innocuous by design: judges read the answer against the ORIGINAL request (the sample)
with the earlier turns as context, the way HarmBench's contextual classifier prompt reads a
behaviour with its ``[CONTEXT]``.  Only generations marked ``info.multi_turn`` get a context; the
faux dialogues of many-shot prompts are not a conversation the model took part in.
"""

from __future__ import annotations

from lpa.records import Generation

MAX_CONTEXT_CHARS = 4000


def conversation_context(gen: Generation, max_chars: int = MAX_CONTEXT_CHARS) -> str | None:
    """The turns before the judged answer as 'User: ... / Assistant: ...' text, or None for a single turn."""
    info = getattr(gen, "info", None) or {}
    if not info.get("multi_turn") or len(gen.messages) < 2:
        return None
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in gen.messages if m.get("role") in ("user", "assistant")]
    text = "\n\n".join(lines)
    return text if len(text) <= max_chars else "..." + text[-max_chars:]


def with_context(request: str, gen: Generation) -> str:
    """The request a text-only rubric reads: the original request, followed by the conversation if any."""
    context = conversation_context(gen)
    if context is None:
        return request
    return f"{request}\n\n(The response below is the model's last turn in this conversation:\n{context}\n)"
