"""single: one task alone; QA + LM by default (the paper's "Single (QA+LM)"; an L2KD teacher)."""

from __future__ import annotations

from pydantic import Field

from .base import LMParams, QALMMethod
from .registry import register


class SingleParams(LMParams):
    qa_only: bool = Field(False, description="train the QA loss only (the paper's 'Single (QA)')")


@register("single")
class Single(QALMMethod):
    Params = SingleParams

    @property
    def qa_only(self) -> bool:  # type: ignore[override]
        return self.p.qa_only

    @classmethod
    def check_tasks(cls, tasks: list[str]) -> None:
        if len(tasks) != 1:
            raise ValueError(f"'single' trains one task; got {len(tasks)} ({', '.join(tasks)})")
