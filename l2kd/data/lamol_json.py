"""Read and validate LAMOL/SQuAD-v2 JSON files (`{task}_to_squad-{split}-v2.0.json`).

Layout: {"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question", "is_impossible",
"answers": [{"text", "answer_start"}]}]}]}]}. Every paragraph's qas become examples in file order.
A malformed file or item raises DataError naming the file and the item's path, never a traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError


@dataclass(frozen=True)
class Example:
    """One question-answer item. `answers` holds every reference (RNNLG test files have two)."""

    id: str
    context: str
    question: str
    answers: tuple[str, ...]
    index: int  # position in file order; Seq-KD and predictions are aligned on it
    # The test item's record from `{task}_answers.json` (WOZ turn id and answer, WikiSQL SQL and
    # header), for tasks whose metric needs more than the answer text; see data/gold.py.
    gold: dict[str, Any] | None = field(default=None, compare=False, repr=False)


def _expect(cond: bool, path: Path, where: str, msg: str) -> None:
    if not cond:
        raise DataError(f"{path}: {where}: {msg}")


def _parse_answers(qa: dict, path: Path, where: str) -> tuple[str, ...]:
    answers = qa.get("answers", [])
    _expect(isinstance(answers, list), path, where, "'answers' must be a list")
    texts = []
    for a, ans in enumerate(answers):
        _expect(isinstance(ans, dict), path, f"{where}.answers[{a}]", "each answer must be an object")
        text = ans.get("text")
        _expect(isinstance(text, str), path, f"{where}.answers[{a}]", "'text' must be a string")
        texts.append(text)
    if not texts:
        # SQuAD-2 unanswerable item: the reference asserts is_impossible and trains on an empty answer.
        _expect(bool(qa.get("is_impossible")), path, where,
                "no answers and not marked is_impossible")
        texts = [""]
    return tuple(texts)


def parse_lamol(obj: Any, path: Path) -> list[Example]:
    _expect(isinstance(obj, dict) and isinstance(obj.get("data"), list), path, "top level",
            "expected an object with a 'data' list")
    examples: list[Example] = []
    for i, article in enumerate(obj["data"]):
        where_a = f"data[{i}]"
        _expect(isinstance(article, dict), path, where_a, "expected an object")
        paragraphs = article.get("paragraphs")
        _expect(isinstance(paragraphs, list), path, where_a, "'paragraphs' must be a list")
        for j, para in enumerate(paragraphs):
            where_p = f"{where_a}.paragraphs[{j}]"
            _expect(isinstance(para, dict), path, where_p, "expected an object")
            context = para.get("context")
            _expect(isinstance(context, str), path, where_p, "'context' must be a string")
            qas = para.get("qas")
            _expect(isinstance(qas, list), path, where_p, "'qas' must be a list")
            for k, qa in enumerate(qas):
                where_q = f"{where_p}.qas[{k}]"
                _expect(isinstance(qa, dict), path, where_q, "expected an object")
                question = qa.get("question")
                _expect(isinstance(question, str), path, where_q, "'question' must be a string")
                qid = qa.get("id", f"{i}_{j}_{k}")  # the reference's hashcode when ids are absent
                _expect(isinstance(qid, (str, int)), path, where_q, "'id' must be a string or int")
                examples.append(Example(str(qid), context, question,
                                        _parse_answers(qa, path, where_q), len(examples)))
    _expect(bool(examples), path, "data", "the file holds no question-answer items")
    return examples


def read_lamol(path: str | Path) -> list[Example]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_lamol(obj, path)


def to_lamol(examples: list[Example], title: str = "dummy") -> dict:
    """The inverse of parse_lamol, one paragraph per example (the layout of L2KD's NLG files)."""
    return {"data": [{"title": title, "paragraphs": [{"context": ex.context, "qas": [{
        "id": ex.id, "question": ex.question, "is_impossible": False,
        "answers": [{"answer_start": None, "text": a} for a in ex.answers]}]}]}
        for ex in examples]}
