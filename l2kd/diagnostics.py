"""Teacher and distillation diagnostics: is a teacher's signal worth distilling, and was it learnt?

A Word-KD teacher trained from scratch on a few hundred rows can be degenerate: token ids it never
saw keep their random-init logits, and at T = 2 a 50k-word vocabulary of such ids carries most of
the probability, so the student distils near-uniform targets and learns little (seen on a 2-layer
GPT-2 with the real GPT-2 BPE: 94% of the target mass on unseen ids, entropy 10.74 of 10.82 nats).
These figures make that visible, per teacher (its manifest) and per KD stage (results.json):

- entropy_ratio: the mean entropy of the teacher's target distribution at temperature T over the KD
  positions (answer + EOS of the QA rows and every LM position), divided by log V (1 = uniform);
- unseen_mass: the mean probability those targets put on token ids that occur nowhere in the
  teacher's training rows (its task's training set, gold answers);
- distinct_predictions: distinct test predictions of the teacher / distinct test references (how
  much its answers depend on the input), with the share of its most common prediction;
- agreement: the student's top-1 agreement with the teacher at the KD positions after the stage.

A teacher is flagged degenerate when one of THRESHOLDS is crossed; the report states them.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from .data.batching import collate
from .data.encoding import TrainRow

# figure -> (comparison, threshold): a teacher crossing any one is flagged degenerate
THRESHOLDS: dict[str, tuple[str, float]] = {
    "entropy_ratio": (">=", 0.8),  # targets within 20% of uniform over the whole vocabulary
    "unseen_mass": (">=", 0.5),  # half the target mass on ids absent from its training data
    "distinct_predictions": ("<=", 0.2),  # one distinct answer per five distinct references or fewer
}
SAMPLE_ROWS = 64  # training rows measured per teacher / stage (a few forward passes)
CHUNK_ROWS = 8  # rows per forward: bounds the (positions x vocabulary) tensors


def thresholds_line() -> str:
    return "; ".join(f"{k} {op} {v:g}" for k, (op, v) in THRESHOLDS.items())


def degenerate_flags(figures: dict[str, Any]) -> list[str]:
    """The names of the thresholds `figures` crosses (missing or None figures are not flagged)."""
    out = []
    for key, (op, limit) in THRESHOLDS.items():
        v = figures.get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        if (op == ">=" and v >= limit) or (op == "<=" and v <= limit):
            out.append(key)
    return out


# --------------------------------------------------------------------------- pure figures
def teacher_targets(teacher_logits: torch.Tensor, temperature: float,
                    teacher_to_student: torch.Tensor | None = None,
                    n_student: int | None = None) -> torch.Tensor:
    """softmax(teacher / T) on the student's columns: column k of the teacher goes to
    `teacher_to_student[k]`; student columns no teacher column maps to get 0 (as the KD loss)."""
    p = torch.softmax(teacher_logits.float() / temperature, dim=-1)
    if teacher_to_student is None:
        return p
    out = p.new_zeros(p.shape[0], n_student if n_student is not None else int(teacher_to_student.max()) + 1)
    out[:, teacher_to_student] = p
    return out


def seen_ids(rows: Iterable[TrainRow], vocab: int) -> torch.Tensor:
    """(vocab,) bool: the token ids that occur in `rows` (inputs and targets)."""
    seen = torch.zeros(vocab, dtype=torch.bool)
    for r in rows:
        for seq in (r.cqa, r.gen_X, r.gen_Y):
            ids = torch.tensor([i for i in seq if 0 <= i < vocab], dtype=torch.long)
            seen[ids] = True
    return seen


def target_sums(probs: torch.Tensor, seen: torch.Tensor) -> dict[str, float]:
    """Sums over positions of the target entropy (nats) and of the mass on unseen columns."""
    ent = -(probs * probs.clamp_min(1e-30).log()).sum(-1)
    unseen = probs[:, ~seen.to(probs.device)].sum(-1)
    return {"entropy": float(ent.sum()), "unseen_mass": float(unseen.sum())}


def agreement_count(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                    teacher_to_student: torch.Tensor | None = None) -> int:
    """Positions where the student's top-1 column is the teacher's top-1 (mapped to student columns)."""
    t_top = teacher_logits.argmax(-1)
    if teacher_to_student is not None:
        t_top = teacher_to_student[t_top]
    return int((student_logits.argmax(-1) == t_top).sum())


def prediction_spread(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """distinct predictions / distinct references (first reference of each item; capped at 1), and
    the share of the most common prediction."""
    if not predictions:
        return {"distinct_predictions": float("nan"), "top_prediction_share": float("nan")}
    norm = [" ".join(p.split()) for p in predictions]
    refs = {" ".join(r[0].split()) if r else "" for r in references}
    top = Counter(norm).most_common(1)[0][1]
    return {"distinct_predictions": min(1.0, len(set(norm)) / max(1, len(refs))),
            "top_prediction_share": top / len(norm)}


def read_predictions(path: Path) -> tuple[list[str], list[list[str]]]:
    preds, refs = [], []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            preds.append(str(rec.get("prediction", "")))
            refs.append([str(r) for r in rec.get("references", [])])
    return preds, refs


def teacher_test_spread(teacher_dir: Path, task: str) -> dict[str, float]:
    """The spread of a (single-stage) teacher's test predictions, from its predictions file."""
    path = Path(teacher_dir) / "predictions" / "stage-00" / f"{task}.jsonl"
    if not path.is_file():
        return {"distinct_predictions": None, "top_prediction_share": None}
    return prediction_spread(*read_predictions(path))


# --------------------------------------------------------------------------- measuring models
def sample_rows(rows: list[TrainRow], n: int, seed: int) -> list[TrainRow]:
    real = [r for r in rows if not r.is_pseudo]
    if len(real) <= n:
        return real
    pick = np.random.default_rng(seed).choice(len(real), n, replace=False)
    return [real[i] for i in sorted(pick)]


@torch.no_grad()
def measure(teacher, rows: list[TrainRow], pad: int, seen: torch.Tensor, temperature: float, *,
            device: torch.device, amp_ctx=None, student=None, input_map: torch.Tensor | None = None,
            col_map: torch.Tensor | None = None, n_student: int | None = None) -> dict[str, Any]:
    """Teacher target figures (and the student's agreement, when `student` is given) over the KD
    positions of `rows`. `teacher` / `student`: modules called as (input_ids, flat positions) ->
    logits, as TargetLogits; the student's inputs go to the teacher through `input_map`, its columns
    come back through `col_map` (the Word-KD maps); `seen` is over the student's columns."""
    from contextlib import nullcontext

    sums = {"entropy": 0.0, "unseen_mass": 0.0}
    agree = positions = 0
    vocab_t = None
    for k in range(0, len(rows), CHUNK_ROWS):
        batch = collate(rows[k:k + CHUNK_ROWS], pad, with_lm=True).to(device)
        t_inputs = input_map[batch.inputs] if input_map is not None else batch.inputs
        with amp_ctx if amp_ctx is not None else nullcontext():
            t_logits = teacher(t_inputs, batch.positions).float()
            s_logits = student(batch.inputs, batch.positions).float() if student is not None else None
        vocab_t = t_logits.shape[-1]
        probs = teacher_targets(t_logits, temperature, col_map, n_student)
        for key, v in target_sums(probs, seen).items():
            sums[key] += v
        if s_logits is not None:
            agree += agreement_count(s_logits, t_logits, col_map)
        positions += len(batch.positions)
    n = max(positions, 1)
    out: dict[str, Any] = {
        "temperature": float(temperature), "rows": len(rows), "positions": positions,
        "entropy": sums["entropy"] / n,
        "entropy_ratio": sums["entropy"] / n / math.log(vocab_t) if vocab_t else None,
        "unseen_mass": sums["unseen_mass"] / n,
        "seen_ids": int(seen.sum()), "vocab": vocab_t,
    }
    if student is not None:
        out["agreement"] = agree / n
    return out
