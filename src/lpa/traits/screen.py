"""The no-harm screen: trait statements must stay abstract and never name a concrete harmful act.

The same keyword list is used by the adversary monitor to flag harmful-looking text produced by
the perturbed model during training.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

HARM_KEYWORDS: tuple[str, ...] = (
    "weapon", "gun", "firearm", "rifle", "pistol", "ammunition", "bomb", "explosive", "grenade",
    "drug", "cocaine", "heroin", "meth", "fentanyl", "narcotic", "overdose", "hack", "malware", "ransomware",
    "phishing", "exploit", "password", "virus", "kill", "murder", "assassin", "poison", "stab", "shoot",
    "violence", "violent", "assault", "torture", "terror", "kidnap", "abduct", "steal", "theft", "rob",
    "burglar", "fraud", "launder", "counterfeit", "suicide", "self-harm", "bioweapon", "toxin", "nerve agent",
    "anthrax", "arson", "blackmail", "extort", "trafficking", "smuggl", "rape", "abuse", "genocide",
)

_PATTERN = re.compile(r"\b(" + "|".join(re.escape(k) for k in HARM_KEYWORDS) + r")", re.IGNORECASE)


def harm_keywords_in(text: str) -> list[str]:
    """The harm keywords found at word starts in ``text`` (e.g. 'bombs', 'hacking')."""
    return sorted({m.group(1).lower() for m in _PATTERN.finditer(text)})


def screen_statements(statements: Iterable[str]) -> list[tuple[str, list[str]]]:
    """The statements that name a harmful act, with the keywords found."""
    return [(s, hits) for s in statements if (hits := harm_keywords_in(s))]
