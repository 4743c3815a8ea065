"""Tasks already in LAMOL format (L2KD's E2E and RNNLG files, `l2kd-nlg/`): validated, not rewritten.

Each split is read with the LAMOL reader (every malformed item is a DataError naming it) and counted,
with the references per test item (RNNLG tests have two, E2E one). A distil file, where present, must
hold the train file's ids and contexts in the same order (Seq-KD pairs them by position). The sizes are
compared with the paper's Table 1. Point `data.dir` at the source folder itself.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ...errors import DataError
from ...tasks import TASKS
from ..lamol_json import read_lamol
from .base import Converted, ConvertReport, find_input, require_input


def validate(task: str, sources: list[Path]) -> Converted:
    spec = TASKS.get(task)
    report = ConvertReport(task, "lamol")
    splits = {}
    for split in ("train", "test"):
        path = require_input(sources, spec.file(split), task)
        report.inputs[path.name] = str(path)
        splits[split] = read_lamol(path)
        report.read[path.name] = report.written[split] = len(splits[split])
    refs = Counter(len(e.answers) for e in splits["test"])
    report.notes.append("references per test item: " + ", ".join(f"{n} x{k}" for k, n in sorted(refs.items())))
    distil = find_input(sources, spec.file("distil"))
    if distil is not None:
        rows = read_lamol(distil)
        report.inputs[distil.name] = str(distil)
        report.read[distil.name] = len(rows)
        same = [(e.id, e.context) for e in rows] == [(e.id, e.context) for e in splits["train"]]
        if not same:
            raise DataError(f"{distil}: its ids and contexts differ from the train file's (Seq-KD pairs "
                            "them by position)")
        report.notes.append("distil file: same ids and contexts as the train file, in order")
    sizes = (report.written["train"], report.written["test"])
    if spec.paper_sizes:
        verdict = "as" if sizes == spec.paper_sizes else "DIFFERENT from"
        report.notes.append(f"{sizes[0]:,} / {sizes[1]:,}: {verdict} the paper's Table 1 "
                            f"({spec.paper_sizes[0]:,} / {spec.paper_sizes[1]:,})")
    report.notes.append(f"validated in place: use data.dir: {path.parent}")
    return Converted(task, splits["train"], splits["test"], report, write=False)
