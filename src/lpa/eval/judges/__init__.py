"""Judges: one module each, registered in :data:`JUDGES` (see ``base.py``).

:data:`DEFAULT_JUDGE` is the judge ``lpa eval``, ``lpa demo`` and the shipped specs use unless
told otherwise: the best offline judge validated on the shipped gold set (``docs/judging.md``).
"""

from lpa.eval.judges.base import JUDGES, Judge, JudgeArgs, register_judge

DEFAULT_JUDGE = "cascade"
DEFAULT_JUDGES: tuple[str, ...] = (DEFAULT_JUDGE,)

__all__ = ["DEFAULT_JUDGE", "DEFAULT_JUDGES", "JUDGES", "Judge", "JudgeArgs", "register_judge"]
