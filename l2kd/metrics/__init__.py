"""Scorers, registered by name; each returns aggregate figures (x100) and per-example values.

- `em` (text.py): `em`, `nem`, `nf1` for every task; classification accuracy is `em`.
- `rouge` (rouge.py): ROUGE-1/2/L F and `avg_rouge`, as ROUGE-1.5.5 with the reference's options.
- `dsem` (dialogue.py): WOZ joint goal EM (dsEM), turn request EM, turn goal EM, avg_dialogue.
- `lfem` (wikisql.py): WikiSQL logical-form EM, decaNLP's exact (`lfem`) and LAMOL's fuzzy (`lfem_lamol`).

A task names its scorers in l2kd/tasks.py; `score` runs them and merges the figures.
"""

from __future__ import annotations

from . import text, rouge, dialogue, wikisql  # noqa: F401, I001  (registration, in listing order)
from .core import SCORER_METRICS, SCORERS, Metric, ScoreInput, Scored, Scorer, mean100, score
from .rouge import rouge_tokens
from .text import f1_score, normalize_text

__all__ = ["SCORER_METRICS", "SCORERS", "Metric", "ScoreInput", "Scored", "Scorer", "mean100", "score", "rouge_tokens",
           "f1_score", "normalize_text"]
