"""Scorers, registered by name; each returns aggregate figures (x100) and per-example values.

- `em`: raw exact match, the best over references (the reference's `em`; classification accuracy);
  `nem`/`nf1`: exact match and SQuAD token F1 after SQuAD normalisation, best over references.
- `rouge`: ROUGE-1/2/L F-scores per example, averaged over examples, and their mean `avg_rouge`,
  as the reference's ROUGE-1.5.5 (options -a -c 95 -m -n 2 -w 1.3) computes them: Porter stemming,
  no stopword removal, several references pooled by averaging (not the best one taken), summary-level
  ROUGE-L over sentences split at '.'. `rouge-metric`'s PyRouge in 'average' multi-reference mode with
  ROUGE-1.5.5's tokenisation reproduces it; `rouge-score` takes the best reference and reads higher
  on two-reference sets. Known gap: ROUGE-1.5.5's WordNet exceptions list (went -> go) is not applied.
"""

from __future__ import annotations

import collections
import functools
import re
import string
from dataclasses import dataclass, field
from typing import Callable

from .registry import Registry


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


Scorer = Callable[[ScoreInput], Scored]
SCORERS: Registry[Scorer] = Registry("metric")


# --------------------------------------------------------------------------- exact match / F1
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


def _mean100(values: list[float]) -> float:
    return 100.0 * sum(values) / len(values) if values else 0.0


@SCORERS.register("em")
def score_em(inp: ScoreInput) -> Scored:
    em = [_best(lambda p, r: float(p == r), p, refs) for p, refs in zip(inp.predictions, inp.references)]
    nem = [_best(lambda p, r: float(normalize_text(p) == normalize_text(r)), p, refs)
           for p, refs in zip(inp.predictions, inp.references)]
    nf1 = [_best(f1_score, p, refs) for p, refs in zip(inp.predictions, inp.references)]
    return Scored({"em": _mean100(em), "nem": _mean100(nem), "nf1": _mean100(nf1)},
                  {"em": em, "nf1": nf1})


# --------------------------------------------------------------------------- ROUGE
@functools.lru_cache(maxsize=1)
def _stemmer():
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer(PorterStemmer.ORIGINAL_ALGORITHM)  # ROUGE-1.5.5 ships the original Porter


@functools.lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return _stemmer().stem(word) if len(word) > 3 else word  # ROUGE-1.5.5 stems words over 3 letters


def rouge_tokens(text: str) -> list[list[str]]:
    """A summary as ROUGE-1.5.5 reads it: sentences split at '.', lower case, non-alphanumerics as
    spaces, Porter-stemmed words."""
    sentences = []
    for sent in text.split("."):
        toks = [_stem(w) for w in re.sub(r"[^a-z0-9]+", " ", sent.lower()).split()]
        if toks:
            sentences.append(toks)
    return sentences


@SCORERS.register("rouge")
def score_rouge(inp: ScoreInput) -> Scored:
    from rouge_metric import PyRouge

    rouge = PyRouge(rouge_n=(1, 2), rouge_l=True, multi_ref_mode="average", alpha=0.5,
                    mode="individual")
    hyps = [rouge_tokens(p) or [[]] for p in inp.predictions]
    refs = [[rouge_tokens(r) or [[]] for r in rs] or [[[]]] for rs in inp.references]
    scores = rouge.evaluate_tokenized(hyps, refs) if hyps else []
    r1 = [s["rouge-1"]["f"] for s in scores]
    r2 = [s["rouge-2"]["f"] for s in scores]
    rl = [s["rouge-l"]["f"] for s in scores]
    agg = {"rouge1": _mean100(r1), "rouge2": _mean100(r2), "rougeL": _mean100(rl)}
    agg["avg_rouge"] = (agg["rouge1"] + agg["rouge2"] + agg["rougeL"]) / 3
    return Scored(agg, {"rouge1": r1, "rouge2": r2, "rougeL": rl})


def score(task_metrics: tuple[str, ...], inp: ScoreInput) -> Scored:
    """Run every scorer a task names ('em', 'nem', 'nf1' share one) and merge their figures."""
    out = Scored({}, {})
    for name in dict.fromkeys("em" if m in ("em", "nem", "nf1") else m for m in task_metrics):
        s = SCORERS.get(name)(inp)
        out.aggregate.update(s.aggregate)
        out.per_example.update(s.per_example)
    return out
