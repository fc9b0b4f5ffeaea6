"""Judges: one module each, registered in :data:`JUDGES` (see ``base.py``)."""

from lpa.eval.judges.base import JUDGES, Judge, JudgeArgs, register_judge

__all__ = ["JUDGES", "Judge", "JudgeArgs", "register_judge"]
