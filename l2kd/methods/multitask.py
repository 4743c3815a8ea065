"""multitask: the upper bound. One stage over the union of every task's training data.

As LAMOL's `multitask` it trains on the shuffled union (the `concat` sampler); QA + LM by default
(L2KD's `multilm`, the paper's "Multi (QA+LM)" rows) or QA only with `qa_only` ("Multi (QA)").
Every task keeps its own generation token for the LM rows (L2KD's --multitask_specific), since
LAMOL's single shared token is an artefact of its code, not a design choice.
"""

from __future__ import annotations

from pydantic import Field

from .base import LMParams, QALMMethod
from .registry import register


class MultitaskParams(LMParams):
    qa_only: bool = Field(False, description="train the QA loss only (the paper's 'Multi (QA)')")


@register("multitask")
class Multitask(QALMMethod):
    Params = MultitaskParams

    @property
    def qa_only(self) -> bool:  # type: ignore[override]
        return self.p.qa_only

    def stages(self, order):
        return [tuple(order)]
