"""Exact match and SQuAD token F1: `em` (raw, best over references; the reference's `em` and the
classification accuracy), `nem`/`nf1` (after SQuAD normalisation, best over references)."""

from __future__ import annotations

import collections
import re
import string
from typing import Callable

from .core import SCORERS, ScoreInput, Scored, mean100, produces


def normalize_text(s: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(prediction: str, gold: str) -> float:
    p, g = normalize_text(prediction).split(), normalize_text(gold).split()
    common = collections.Counter(p) & collections.Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def _best(fn: Callable[[str, str], float], pred: str, refs: list[str]) -> float:
    return max(fn(pred, r) for r in refs) if refs else 0.0


produces("em", "em", "nem", "nf1")


@SCORERS.register("em")
def score_em(inp: ScoreInput) -> Scored:
    em = [_best(lambda p, r: float(p == r), p, refs) for p, refs in zip(inp.predictions, inp.references)]
    nem = [_best(lambda p, r: float(normalize_text(p) == normalize_text(r)), p, refs)
           for p, refs in zip(inp.predictions, inp.references)]
    nf1 = [_best(f1_score, p, refs) for p, refs in zip(inp.predictions, inp.references)]
    return Scored({"em": mean100(em), "nem": mean100(nem), "nf1": mean100(nf1)},
                  {"em": em, "nf1": nf1})
