"""What every converter shares: finding its input files, counting, splitting, and its result.

A converter reads raw public files and returns a `Converted`: the task's train and test examples, the
gold records its metric needs, and a `ConvertReport` (what was read, written and skipped, and why).
Nothing is written here; the dispatcher (`__init__.py`) writes every output only after every task
converted, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import random
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ...errors import DataError
from ..lamol_json import Example

T = TypeVar("T")

# Held-out test splits, where a source has none, are drawn with this seed and fraction (stated in
# each report); random.Random's shuffle is stable across CPython versions, so the split is too.
HELD_OUT_SEED = 2020
HELD_OUT_FRACTION = 0.2


class MissingInputs(DataError):
    """A converter's raw files are not among the given sources (skipped under `--task all`)."""


@dataclass
class ConvertReport:
    task: str
    kind: str  # the converter (source kind) that made it
    read: dict[str, int] = field(default_factory=dict)  # input file -> items read
    written: dict[str, int] = field(default_factory=dict)  # split -> examples (validated, for 'lamol')
    skipped: Counter = field(default_factory=Counter)  # reason -> items left out
    notes: list[str] = field(default_factory=list)  # choices a user should know (splits, seeds, gaps)
    inputs: dict[str, str] = field(default_factory=dict)  # input file -> its path
    files: list[str] = field(default_factory=list)  # files written into the output folder

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "converter": self.kind, "read": self.read, "written": self.written,
                "skipped": dict(sorted(self.skipped.items())), "notes": self.notes, "files": self.files}


@dataclass
class Converted:
    task: str
    train: list[Example]
    test: list[Example]
    report: ConvertReport
    gold: list[Any] | None = None  # one record per test example, in test order ({task}_answers.json)
    write: bool = True  # False: the source is already in LAMOL format and was only validated


def find_input(sources: list[Path], rel: str) -> Path | None:
    """`rel` inside one of the sources, or inside one of their immediate subfolders (so the shared
    data folder itself can be given); the first source that has it wins."""
    for src in sources:
        if (src / rel).is_file():
            return src / rel
        if src.is_dir():
            for sub in sorted(p for p in src.iterdir() if p.is_dir()):
                if (sub / rel).is_file():
                    return sub / rel
    return None


def require_input(sources: list[Path], rel: str, task: str) -> Path:
    path = find_input(sources, rel)
    if path is None:
        where = ", ".join(str(s) for s in sources)
        raise MissingInputs(f"{task}: no {rel} in {where} (or their subfolders)")
    return path


def clean(text: str) -> str:
    """Whitespace runs -> one space (LAMOL's files re-joined tokens with single spaces)."""
    return " ".join(text.split())


def nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def held_out(items: list[T], seed: int = HELD_OUT_SEED, fraction: float = HELD_OUT_FRACTION) -> tuple[list[T], list[T]]:
    """(train, test): a seeded random `fraction` of the items is the test split; both keep input order."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    test_idx = set(order[: round(fraction * len(items))])
    return ([x for i, x in enumerate(items) if i not in test_idx],
            [x for i, x in enumerate(items) if i in test_idx])


def numbered(task: str, split: str, rows: list[tuple[str, str, str]]) -> list[Example]:
    """Examples from (context, question, answer) rows with ids `{task}-{split}-{n}`."""
    return [Example(f"{task}-{split}-{n}", c, q, (a,), n) for n, (c, q, a) in enumerate(rows)]
