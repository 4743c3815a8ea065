"""Text classification -> `ag`, `dbpedia`, `amazon`, `yelp`, `yahoo` (the MbPA++ tasks LAMOL used):
context = the text (title and body joined by a space, as LAMOL's AG file), question = the task's
question, answer = its label word (l2kd/tasks.py).

Sources (SOURCES.md) and how each task is made from them:

| task    | test                                  | train (minus any text also in test)          |
|---------|---------------------------------------|----------------------------------------------|
| ag      | LAMOL's own ag test file (7,600)      | CL_Benchmark agnews train + LFPT5 ag         |
| dbpedia | CL_Benchmark dbpedia test (7,600)     | LFPT5 dbpedia                                |
| amazon  | CL_Benchmark amazon test (7,600)      | CL_Benchmark amazon train + LFPT5 amazon     |
| yelp    | held out from the train pool          | CL_Benchmark yelp train                      |
| yahoo   | held out from the train pool          | LFPT5 yahoo                                  |

LFPT5 contributes all its files (train, valid and test of the three seeds). A text is recognised again
(duplicates, train/test overlap) by its lower-cased ASCII letters and digits, since LAMOL's AG file
dropped non-ASCII characters. Each source's label names are mapped onto the task's label words
("Science or Technology"/"science" -> "Sci/Tech", "terrible" ... "wonderful" -> the five star words,
LFPT5's typo "thlete" -> "Athlete"); an item with any other label is skipped and counted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ...errors import DataError
from ...tasks import TASKS
from ..lamol_json import read_lamol
from .base import (HELD_OUT_FRACTION, HELD_OUT_SEED, Converted, ConvertReport, MissingInputs, clean,
                   find_input, held_out, numbered, require_input)

CL = "CL_Benchmark"
LFPT5 = "Classification/textclassificationdata"
LAMOL_AG = "ag_to_squad-test-v2.0.json"
LFPT5_SEEDS = ("0_42", "1_142", "2_242")


@dataclass(frozen=True)
class Source:
    kind: str  # 'cl' (CL_Benchmark json), 'lfpt5' (text<TAB>label), 'lamol' (a LAMOL json file)
    rel: str  # cl: 'TC/agnews/train.json'; lfpt5: 'ag_news_csv'; lamol: the file name


PLANS: dict[str, tuple[tuple[Source, ...], tuple[Source, ...]]] = {  # task -> (test, train) sources
    "ag": ((Source("lamol", LAMOL_AG),), (Source("cl", "TC/agnews/train.json"), Source("lfpt5", "ag_news_csv"))),
    "dbpedia": ((Source("cl", "TC/dbpedia/test.json"),), (Source("lfpt5", "dbpedia_csv"),)),
    "amazon": ((Source("cl", "SC/amazon/test.json"),),
               (Source("cl", "SC/amazon/train.json"), Source("lfpt5", "amazon_review_full_csv"))),
    "yelp": ((), (Source("cl", "SC/yelp/train.json"),)),
    "yahoo": ((), (Source("lfpt5", "yahoo_answers_csv"),)),
}
_STARS = {"terrible": "very negative", "bad": "negative", "middle": "neutral", "good": "positive",
          "wonderful": "very positive"}
ALIASES: dict[str, dict[str, str]] = {
    "ag": {"science": "Sci/Tech", "scienceortechnology": "Sci/Tech"},
    "dbpedia": {"thlete": "Athlete"},
    "amazon": _STARS, "yelp": _STARS,
    "yahoo": {"science": "Science & Mathematics", "business": "Business & Finance"},
}

Row = tuple[str, str]  # (text, source label)


def label_key(label: str) -> str:
    return re.sub(r"[^a-z]", "", label.lower().replace("&", "and"))


def text_key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _cl_text(sentence: str) -> str:
    m = re.match(r"Title: (.*?)\nText: (.*)$", sentence, re.S) or re.match(r"Text: (.*)$", sentence, re.S)
    return clean(" ".join(m.groups()) if m else sentence)


# --------------------------------------------------------------------------- readers
def _read(src: Source, sources: list[Path], task: str, report: ConvertReport) -> list[Row] | None:
    """The rows of one source, or None when it is not among the given folders."""
    if src.kind == "lfpt5":
        first = find_input(sources, f"{LFPT5}/{src.rel}/{LFPT5_SEEDS[0]}/train.txt")
        if first is None:
            return None
        rows: list[Row] = []
        for seed in LFPT5_SEEDS:
            for split in ("train", "valid", "test"):
                path = first.parents[1] / seed / f"{split}.txt"
                if not path.is_file():
                    report.notes.append(f"lfpt5/{src.rel}/{seed}/{split}.txt not found; converted without it")
                    continue
                lines = [ln for ln in path.read_text(encoding="utf-8").split("\n") if ln.strip()]
                name = f"lfpt5/{src.rel}/{seed}/{split}.txt"
                report.inputs[name], report.read[name] = str(path), len(lines)
                for ln in lines:
                    text, tab, label = ln.rpartition("\t")
                    if not tab:
                        report.skip("not 'text<TAB>label'")
                        continue
                    rows.append((clean(text), label.strip()))
        return rows
    rel = LAMOL_AG if src.kind == "lamol" else f"{CL}/{src.rel}"
    path = find_input(sources, rel)
    if path is None:
        return None
    name = f"{src.kind}/{src.rel}"
    report.inputs[name] = str(path)
    if src.kind == "lamol":
        rows = [(clean(e.context), e.answers[0]) for e in read_lamol(path)]
    else:
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON (line {e.lineno}): {e.msg}") from None
        if not isinstance(items, list) or not all(isinstance(x, dict) and isinstance(x.get("sentence"), str)
                                                  and isinstance(x.get("label"), str) for x in items):
            raise DataError(f"{path}: expected a list of {{'label', 'sentence'}} strings")
        rows = [(_cl_text(x["sentence"]), x["label"]) for x in items]
    report.read[name] = len(rows)
    return rows


def _collect(task: str, plan: tuple[Source, ...], sources: list[Path], report: ConvertReport,
             required: bool) -> tuple[list[Row], list[str]]:
    rows: list[Row] = []
    used = []
    for src in plan:
        got = _read(src, sources, task, report)
        if got is None:
            if required:
                rel = LAMOL_AG if src.kind == "lamol" else (f"{CL}/{src.rel}" if src.kind == "cl" else
                                                           f"{LFPT5}/{src.rel}")
                require_input(sources, rel, task)  # raises MissingInputs naming the file
            report.notes.append(f"{src.kind}/{src.rel} not found among the sources; converted without it")
            continue
        rows += got
        used.append(f"{src.kind}/{src.rel}")
    return rows, used


def _labelled(task: str, rows: list[Row], seen: set[str], report: ConvertReport, split: str,
              test_keys: set[str] = frozenset(), dedupe: bool = True) -> list[tuple[str, str, str]]:
    """(context, question, label word) rows: labels mapped, duplicates (unless a given test split
    repeats a text: it is kept as it is) and test texts left out."""
    spec = TASKS.get(task)
    words = {label_key(w): w for w in spec.label_words}
    words.update({label_key(k): v for k, v in ALIASES.get(task, {}).items()})
    out = []
    for text, label in rows:
        word = words.get(label_key(label))
        key = text_key(text)
        if word is None:
            report.skip(f"{split}: label {label!r} not a label word")
        elif not key:
            report.skip(f"{split}: empty text")
        elif key in test_keys:
            report.skip(f"{split}: text also in test")
        elif key in seen and dedupe:
            report.skip(f"{split}: duplicate text")
        else:
            seen.add(key)
            out.append((text, spec.question, word))
    return out


def convert(task: str, sources: list[Path]) -> Converted:
    if task not in PLANS:
        raise DataError(f"{task}: no classification sources are known for it")
    test_plan, train_plan = PLANS[task]
    report = ConvertReport(task, "classification")
    test_rows, test_used = _collect(task, test_plan, sources, report, required=True)
    train_rows, train_used = _collect(task, train_plan, sources, report, required=not test_plan)
    if not train_used:
        raise MissingInputs(f"{task}: none of its training sources ({', '.join(s.rel for s in train_plan)}) "
                            f"is in {', '.join(map(str, sources))}")
    test_keys: set[str] = set()
    test = _labelled(task, test_rows, test_keys, report, "test", dedupe=False)
    train = _labelled(task, train_rows, set(), report, "train", test_keys)
    if test_plan:
        report.notes.append(f"test from {', '.join(test_used)}; train from {', '.join(train_used)}")
    else:
        train, test = held_out(train)
        report.notes.append(f"no test split in the sources: a held-out {HELD_OUT_FRACTION:.0%} of "
                            f"{', '.join(train_used)} (random.Random({HELD_OUT_SEED}) shuffle)")
    report.notes.append(f"the paper: {TASKS.get(task).paper_sizes[0]:,} train / "
                        f"{TASKS.get(task).paper_sizes[1]:,} test (full sets not available)")
    report.written = {"train": len(train), "test": len(test)}
    return Converted(task, numbered(task, "train", train), numbered(task, "test", test), report)
