"""Attacks: one module each, registered in :data:`ATTACKS` (see ``base.py``)."""

from lpa.eval.attacks.base import ATTACKS, Attack, AttackContext, AttackedPrompt, register_attack

__all__ = ["ATTACKS", "Attack", "AttackContext", "AttackedPrompt", "register_attack"]
