"""ROUGE-1/2/L F-scores per example, averaged over examples, and their mean `avg_rouge`, as the
reference's ROUGE-1.5.5 (options -a -c 95 -m -n 2 -w 1.3) computes them: Porter stemming, no stopword
removal, several references pooled by averaging (not the best one taken), summary-level ROUGE-L over
sentences split at '.'. `rouge-metric`'s PyRouge in 'average' multi-reference mode with ROUGE-1.5.5's
tokenisation reproduces it; `rouge-score` takes the best reference and reads higher on two-reference
sets. Known gap: ROUGE-1.5.5's WordNet exceptions list (went -> go) is not applied.
"""

from __future__ import annotations

import functools
import re

from .core import SCORERS, ScoreInput, Scored, mean100, produces


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


produces("rouge", "rouge1", "rouge2", "rougeL", "avg_rouge")


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
    agg = {"rouge1": mean100(r1), "rouge2": mean100(r2), "rougeL": mean100(rl)}
    agg["avg_rouge"] = (agg["rouge1"] + agg["rouge2"] + agg["rougeL"]) / 3
    return Scored(agg, {"rouge1": r1, "rouge2": r2, "rougeL": rl})
