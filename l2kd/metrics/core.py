"""What every scorer shares: its input, its output, the registry, and `score` that merges them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..registry import Registry


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool = True


@dataclass
class Scored:
    aggregate: dict[str, float]
    per_example: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreInput:
    predictions: list[str]
    references: list[list[str]]
    ids: list[str]  # example ids, in the order of predictions (WOZ needs the dialogue turns)
    task: str
    # One gold record per prediction, from the task's `{task}_answers.json` (the data layer loads and
    # aligns it): WOZ {"id", "answer"}, WikiSQL {"id", "sql", "header", "answer"}. None for tasks
    # whose references are enough.
    gold: list[dict[str, Any]] | None = None


Scorer = Callable[[ScoreInput], Scored]
SCORERS: Registry[Scorer] = Registry("metric")
# scorer name -> the figures it returns (`cli.py ls metrics` lists them with their direction)
SCORER_METRICS: dict[str, tuple[Metric, ...]] = {}


def produces(name: str, *keys: str, higher_is_better: bool = True) -> None:
    """Declare the aggregate figures scorer `name` returns."""
    SCORER_METRICS[name] = tuple(Metric(k, higher_is_better) for k in keys)


def mean100(values: list[float]) -> float:
    return 100.0 * sum(values) / len(values) if values else 0.0


def score(task_metrics: tuple[str, ...], inp: ScoreInput) -> Scored:
    """Run every scorer a task names ('em', 'nem', 'nf1' share one) and merge their figures."""
    out = Scored({}, {})
    for name in dict.fromkeys("em" if m in ("em", "nem", "nf1") else m for m in task_metrics):
        s = SCORERS.get(name)(inp)
        out.aggregate.update(s.aggregate)
        out.per_example.update(s.per_example)
    return out
