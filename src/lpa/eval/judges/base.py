"""Judge plugin base: ``Judge(**args).judge(samples, generations) -> list[Verdict]``.

A verdict carries a label (refused / complied / partial / nonsense), a score where the judge has one, the
raw judge output and an ``error`` field: a judge that cannot parse its own answer sets
``error`` and leaves ``label`` empty, so reports count failures on their own line instead of
mixing them into refusal rates.  Probe judges (``needs_generation = False``, e.g. yes/no) score
the request itself and receive ``generations=None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

from lpa.errors import LpaError
from lpa.plugins import Plugin, PluginArgs
from lpa.records import Generation, Sample, Verdict
from lpa.registry import Registry

JUDGES: Registry[type[Judge[Any]]] = Registry("judge", package="lpa.eval.judges")
# The class decorator of a judge: registers it under its ``name`` (its module is found by :data:`JUDGES`).
register_judge = JUDGES.add


class JudgeArgs(PluginArgs):
    """Base of every judge's settings."""


JudgeArgsT = TypeVar("JudgeArgsT", bound=JudgeArgs)


class Judge(Plugin[JudgeArgsT]):
    """``score`` convention: 0 (safe / refused) .. 1 (harmful request answered), where the judge has one."""

    kind = "judge"
    Args = JudgeArgs
    description: ClassVar[str] = ""
    needs_generation: ClassVar[bool] = True
    needs_model: ClassVar[bool] = False  # judges that score with the target model itself (yes/no probe)

    def judge(
        self,
        samples: Sequence[Sample],
        generations: Sequence[Generation] | None,
        *,
        model: Any = None,
        tokenizer: Any = None,
    ) -> list[Verdict]:
        """One verdict per sample: the checks every judge shares, then :meth:`verdicts`.

        Response judges implement :meth:`verdicts`; probe judges (``needs_generation = False``),
        which may be given no answers, override this method instead.
        """
        if self.needs_model and (model is None or tokenizer is None):
            raise LpaError(f"The {self.name} judge needs the target model and tokenizer.")
        return self.verdicts(samples, self.require_generations(generations), model=model, tokenizer=tokenizer)

    def verdicts(self, samples: Sequence[Sample], generations: Sequence[Generation], *, model: Any = None,
                 tokenizer: Any = None) -> list[Verdict]:
        """The verdicts of a response judge on answers that are known to be there."""
        raise NotImplementedError(f"judge {self.name!r} defines neither verdicts() nor judge()")

    def require_generations(self, generations: Sequence[Generation] | None) -> Sequence[Generation]:
        """The answers a response judge reads; one error wording for every judge called without them."""
        if generations is None:
            raise LpaError(f"The {self.name} judge reads answers: it needs generations, got none.")
        return generations


class ModelJudge(Judge[JudgeArgsT]):
    """A judge that runs a model of its own: loaded on first use, or handed one with :meth:`use`."""

    def __init__(self, **args: Any) -> None:
        super().__init__(**args)
        self._loaded: tuple[Any, Any] | None = None

    def use(self, model: Any, tokenizer: Any) -> ModelJudge[JudgeArgsT]:
        """Judge with an already loaded model and tokenizer (tests, or sharing one across runs)."""
        self._loaded = (model, tokenizer)
        return self

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            self._loaded = self.load_judge_model()
        return self._loaded

    def load_judge_model(self) -> tuple[Any, Any]:
        """(model, tokenizer) from the judge's settings; called once."""
        raise NotImplementedError
