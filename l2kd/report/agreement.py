"""Teacher agreement (the paper's Tables 6 and 8) for classification tasks.

Each task's test set is split by its teacher's (the QA+LM single-task model's) per-example exact
match: group A, the items the teacher got right; group B, those it got wrong. A lifelong model's
accuracy after the last stage is then read on each group. Per-example values come from the
`predictions/stage-NN/TASK.jsonl` files (`em` is 0 or 1 per item), matched by example index.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ArtifactError
from ..methods import BASELINE, SINGLE
from ..tasks import TASKS
from .load import Trial
from .tables import label_key, order_label

log = logging.getLogger(__name__)
TEACHER = "Teacher"


def is_classification(task: str) -> bool:
    """A task whose answers are class labels (the synthetic sentiment task counts)."""
    return task in TASKS and bool(TASKS.get(task).label_words)


def prediction_file(trial: Trial, stage: int, task: str) -> Path:
    return trial.path / "predictions" / f"stage-{stage:02d}" / f"{task}.jsonl"


def read_em(path: Path) -> pd.Series:
    """Per-example exact match (0/1) by example index."""
    values = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                values[int(rec["index"])] = float(rec["em"])
            except (ValueError, KeyError, TypeError) as e:
                raise ArtifactError(f"{path}: line {n}: no usable 'index'/'em' ({e})") from None
    return pd.Series(values, dtype=float)


def _teacher_for(task: str, seed: int, singles: list[Trial]) -> Trial | None:
    """The task's teacher: a complete QA+LM single (what L2KD trains as teacher), of the same seed
    where one exists; a QA-only single only when there is no QA+LM one."""
    cands = [t for t in singles if t.order == (task,) and t.complete]
    cands.sort(key=lambda t: (bool(t.result.method_params.get("qa_only", False)), t.seed != seed, t.rel))
    return cands[0] if cands else None


def agreement_rows(trials: list[Trial], notes: list[str]) -> pd.DataFrame:
    """One row per (lifelong trial or teacher, classification task): Acc, Acc in A, Acc in B."""
    singles = [t for t in trials if t.role == SINGLE]
    rows, teachers_done = [], set()
    for t in trials:
        if t.role != "lifelong" or not t.complete:
            continue
        for task in t.order:
            if not is_classification(task):
                continue
            teacher = _teacher_for(task, t.seed, singles)
            if teacher is None:
                notes.append(f"teacher agreement: no single-task result for {task}; skipped")
                continue
            t_file = prediction_file(teacher, 0, task)
            s_file = prediction_file(t, len(t.result.R) - 1, task)
            if not t_file.is_file() or not s_file.is_file():
                notes.append(f"teacher agreement: {task}: no predictions in "
                             f"{teacher.rel if not t_file.is_file() else t.rel}; skipped")
                continue
            right = read_em(t_file) == 1.0
            student = read_em(s_file)
            if set(right.index) != set(student.index):
                raise ArtifactError(f"{s_file}: its test items differ from the teacher's {t_file}")
            student = student.reindex(right.index)
            if (teacher.rel, task) not in teachers_done:
                teachers_done.add((teacher.rel, task))
                rows.append(_row(TEACHER, "", teacher.seed, task, read_em(t_file).reindex(right.index), right))
            rows.append(_row(t.label, order_label(t.order), t.seed, task, student, right))
    return pd.DataFrame(rows, columns=["method", "order", "seed", "task", "acc", "acc_A", "acc_B", "n_A", "n_B"])


def _row(method: str, order: str, seed: int, task: str, em: pd.Series, right: pd.Series) -> dict:
    def acc(mask) -> float:
        return float(100.0 * em[mask].mean()) if mask.any() else np.nan

    return {"method": method, "order": order, "seed": seed, "task": task, "acc": acc(right | ~right),
            "acc_A": acc(right), "acc_B": acc(~right), "n_A": int(right.sum()), "n_B": int((~right).sum())}


def _method_key(label: str) -> tuple:
    return (0, ()) if label == TEACHER else (1, label_key(label))


def by_task(rows: pd.DataFrame) -> pd.DataFrame:
    """Table 8: rows (task, method); each figure the mean over seeds, then orders."""
    figs = ["acc", "acc_A", "acc_B", "n_A", "n_B"]
    per_order = rows.groupby(["task", "method", "order"], sort=False)[figs].mean()
    out = per_order.groupby(level=["task", "method"], sort=False).mean()
    tasks = list(dict.fromkeys(rows.task))
    keys = sorted(out.index, key=lambda k: (tasks.index(k[0]), _method_key(k[1])))
    return out.reindex(pd.MultiIndex.from_tuples(keys, names=["task", "method"])).rename(
        columns={"acc": "Acc", "acc_A": "Acc (A)", "acc_B": "Acc (B)", "n_A": "n (A)", "n_B": "n (B)"})


def averaged(table8: pd.DataFrame, reference: str = BASELINE) -> pd.DataFrame:
    """Table 6: each method's figures averaged over the classification tasks, with the change in
    groups A and B against `reference` (LAMOL in the paper) where that row exists."""
    figs = ["Acc", "Acc (A)", "Acc (B)"]
    out = table8[figs].groupby(level="method").mean()
    out = out.reindex(sorted(out.index, key=_method_key))
    out["tasks"] = table8.groupby(level="method").size()
    if reference in out.index:
        for g in ("A", "B"):
            out[f"Δ ({g}) vs {reference}"] = out[f"Acc ({g})"] - out.loc[reference, f"Acc ({g})"]
        out.loc[TEACHER, [c for c in out.columns if c.startswith("Δ")]] = np.nan
    return out
