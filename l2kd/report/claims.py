"""The paper's claims, each a row: what L2KD reports (Tables 3-4), what these results measured, a
paired comparison over (seed, order), a verdict, and the teacher diagnostics beside it.

A claim is a per-(seed, order) difference d that the paper says is positive (e.g. Word-KD's final
average minus LAMOL's in the same seed and order). The verdict reads an exact two-sided sign-flip
test of mean(d) = 0 over the n pairs: `holds` when mean(d) > 0 and p <= ALPHA, `does not hold` when
mean(d) < 0 and p <= ALPHA, else `cannot tell at this size` (no p can reach
0.05 below 6 pairs). The STD claim pairs seeds: each seed's STD over orders. Scores are each task's primary metric.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..methods import BASELINE, GAP_CLOSER, LOWER_BOUND, MULTITASK, SINGLE, display_name, facts, kd_methods
from .load import Trial
from .tables import finals, single_scores

ALPHA = 0.05
# The methods the claims are about, their names and what the paper reports for them: l2kd/methods/catalog.py
KD_METHODS = kd_methods()
NAMES = {m: display_name(m) for m in (LOWER_BOUND, BASELINE, GAP_CLOSER, *KD_METHODS)}
PAPER_AVG = {m: facts(m).paper_avg for m in NAMES}  # method -> (Table 3 Avg, Table 4 L->R, R->L Avg)
PAPER_STD = {m: facts(m).paper_std for m in (BASELINE, *KD_METHODS)}  # Table 3, STD Avg


def sign_flip_p(d: np.ndarray) -> float:
    """Exact two-sided p of mean(d) = 0 under random signs (all 2^n flips; n <= 16)."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    if n == 0 or not np.any(d):
        return 1.0
    observed = abs(d.mean())
    signs = np.array(list(itertools.product((1, -1), repeat=n)))
    return float(np.mean(np.abs((signs * d).mean(axis=1)) >= observed - 1e-12))


def verdict(d: np.ndarray) -> tuple[str, float]:
    d = np.asarray(d, dtype=float)
    if len(d) == 0:
        return "cannot tell: not measured", float("nan")
    p = sign_flip_p(d) if len(d) <= 16 else float("nan")
    if p <= ALPHA and d.mean() > 0:
        return "holds", p
    if p <= ALPHA and d.mean() < 0:
        return "does not hold", p
    return f"cannot tell at this size ({len(d)} pairs)", p


def _ms(x: pd.Series | np.ndarray) -> str:
    x = np.asarray(x, dtype=float)
    if len(x) == 0:
        return "—"
    return f"{x.mean():.1f} ± {x.std(ddof=1):.1f}" if len(x) > 1 else f"{x.mean():.1f}"


def trial_table(trials: list[Trial]) -> pd.DataFrame:
    """One row per complete trial: method, seed, order, final average, mean forgetting."""
    from . import figures as F

    rows = []
    for t in trials:
        if not t.complete:
            continue
        R = t.R
        square = R.shape == (len(t.order), len(t.order))
        rows.append({"method": t.base_label, "role": t.role, "seed": t.seed, "order": t.order_id,
                     "avg": float(np.mean(R[-1])),
                     "forgetting": F.forgetting(R) if square and t.role == "lifelong" else np.nan})
    return pd.DataFrame(rows, columns=["method", "role", "seed", "order", "avg", "forgetting"])


def _paired(df: pd.DataFrame, a: str, b: str, col: str) -> pd.DataFrame:
    """(seed, order) pairs with both methods: columns a, b."""
    wide = df[df.role == "lifelong"].pivot_table(index=["seed", "order"], columns="method", values=col,
                                                 aggfunc="mean")
    if a not in wide or b not in wide:
        return pd.DataFrame(columns=[a, b])
    return wide[[a, b]].dropna()


def _row(claim: str, paper: str, measured: str, d: np.ndarray, diag: str = "") -> dict[str, Any]:
    v, p = verdict(d)
    wins = int((np.asarray(d) > 0).sum())
    paired = (f"Δ = {_ms(d)} ({len(d)} pairs, {wins} positive, p = {p:.3f})" if len(d) else "—")
    return {"claim": claim, "paper": paper, "measured": measured, "paired": paired, "verdict": v,
            "diagnostics": diag}


def _paper_avg(method: str) -> str:
    t3, lr, rl = PAPER_AVG[method]
    parts = [f"T3 {t3}"] + ([f"T4 {lr} / {rl}"] if lr is not None else [])
    return ", ".join(parts)


# --------------------------------------------------------------------------- diagnostics
def stage_diagnostics(trials: list[Trial]) -> pd.DataFrame:
    """One row per KD stage of every trial: the figures its results.json recorded, and the stage's
    teacher against the student it teaches: the KD student's score on the task right after the stage
    (its R[s][s]), the teacher's own score (its Single row, same seed) and LAMOL's right after learning
    the task from the gold answers (R[s][s], same seed and order). A teacher below that student pulls
    the student down whatever its diagnostics say."""
    singles = single_scores(finals(trials))  # (seed, task) -> the QA+LM Single row, the teacher
    lamol = {(t.seed, t.order_id): t.R for t in trials
             if t.role == "lifelong" and t.base_label == BASELINE and t.complete}
    rows = []
    for t in trials:
        for s, info in enumerate(t.result.stage_info):
            kd = info.get("kd") if isinstance(info, dict) else None
            if not isinstance(kd, dict):
                continue
            R = lamol.get((t.seed, t.order_id))
            rows.append({"method": t.base_label, "order": t.order_id, "seed": t.seed, "stage": s,
                         "task": kd.get("task"), "T": kd.get("temperature"),
                         "entropy_ratio": kd.get("entropy_ratio"), "unseen_mass": kd.get("unseen_mass"),
                         "distinct_predictions": kd.get("distinct_predictions"),
                         "agreement": kd.get("agreement"), "flags": ", ".join(kd.get("flags") or []) or "—",
                         "student_score": float(t.R[s, s]) if s < min(t.R.shape) else np.nan,
                         "teacher_score": singles.get((t.seed, kd.get("task")), np.nan),  # same seed only
                         "lamol_score": float(R[s, s]) if R is not None and s < min(R.shape) else np.nan})
    df = pd.DataFrame(rows, columns=["method", "order", "seed", "stage", "task", "T", "entropy_ratio",
                                     "unseen_mass", "distinct_predictions", "agreement", "flags",
                                     "student_score", "teacher_score", "lamol_score"])
    df["teacher_gap"] = df.teacher_score - df.lamol_score
    return df


def teacher_diagnostics(trials: list[Trial]) -> pd.DataFrame:
    """One row per teacher (a Single trial with a manifest beside its results) and temperature."""
    rows = []
    for t in trials:
        if t.role != SINGLE or not (Path(t.path) / "manifest.json").is_file():
            continue
        try:
            diag = json.loads((Path(t.path) / "manifest.json").read_text()).get("diagnostics") or {}
        except (OSError, ValueError):
            continue
        for T, fig in (diag.get("by_temperature") or {}).items():
            rows.append({"task": t.order[0], "seed": t.seed, "T": float(T),
                         "entropy_ratio": fig.get("entropy_ratio"), "unseen_mass": fig.get("unseen_mass"),
                         "distinct_predictions": diag.get("distinct_predictions"),
                         "top_prediction_share": diag.get("top_prediction_share"),
                         "flags": ", ".join((diag.get("flags") or {}).get(T) or []) or "—"})
    return pd.DataFrame(rows, columns=["task", "seed", "T", "entropy_ratio", "unseen_mass",
                                       "distinct_predictions", "top_prediction_share", "flags"])


def _diag_text(stages: pd.DataFrame, method: str) -> str:
    part = stages[stages.method == method]
    if part.empty:
        return "not recorded"
    flagged = int((part["flags"] != "—").sum())
    f = lambda c: float(pd.to_numeric(part[c], errors="coerce").mean())  # noqa: E731
    text = (f"T={part['T'].iloc[0]:g}: entropy/logV {f('entropy_ratio'):.2f}, unseen mass "
            f"{f('unseen_mass'):.2f}, distinct preds {f('distinct_predictions'):.2f}, agreement "
            f"{f('agreement'):.2f}; {flagged} of {len(part)} stages flagged degenerate")
    gap = pd.to_numeric(part["teacher_gap"], errors="coerce").dropna()
    if len(gap):
        text += (f"; teacher − LAMOL on the stage's task {gap.mean():+.1f} "
                 f"({int((gap < 0).sum())} of {len(gap)} stages below)")
    return text


# --------------------------------------------------------------------------- the table
def claims_table(trials: list[Trial]) -> pd.DataFrame:
    """The claims rows, for whatever methods these trials hold (rows without data say so)."""
    df = trial_table(trials)
    stages = stage_diagnostics(trials)
    ll = df[df.role == "lifelong"]
    rows = []

    low, base, closer = LOWER_BOUND, BASELINE, GAP_CLOSER
    ft = ll[ll.method == low]
    rows.append(_row("Sequential fine-tuning forgets (Finetune's forgetting > 0)",
                     f"Finetune Avg {PAPER_AVG[low][0]} against LAMOL {PAPER_AVG[base][0]} (T3)",
                     f"Finetune forgetting {_ms(ft.forgetting)}, Avg {_ms(ft.avg)}",
                     ft.groupby(["seed", "order"]).forgetting.mean().dropna().to_numpy()))
    pair = _paired(df, low, base, "forgetting")
    rows.append(_row("LAMOL retains (forgets less than Finetune)",
                     f"LAMOL {PAPER_AVG[base][0]} against Finetune {PAPER_AVG[low][0]} (T3 Avg)",
                     f"forgetting: Finetune {_ms(pair[low])}, LAMOL {_ms(pair[base])}",
                     (pair[low] - pair[base]).to_numpy()))
    for m in KD_METHODS:
        pair = _paired(df, m, base, "avg")
        rows.append(_row(f"{NAMES[m]} beats LAMOL on average",
                         f"{NAMES[m]} {_paper_avg(m)} against LAMOL {_paper_avg(base)}",
                         f"Avg: {NAMES[m]} {_ms(pair[m])}, LAMOL {_ms(pair[base])}",
                         (pair[m] - pair[base]).to_numpy(), _diag_text(stages, m)))
    for m in KD_METHODS:
        std = ll[ll.method.isin([m, base])].groupby(["seed", "method"]).avg.std(ddof=1).unstack()
        std = std.dropna() if m in std and base in std else pd.DataFrame(columns=[m, base])
        rows.append(_row(f"{NAMES[m]} lowers the STD over orders",
                         f"STD Avg LAMOL {PAPER_STD[base]} → {NAMES[m]} {PAPER_STD[m]} (T3)",
                         f"STD over orders (per seed): LAMOL {_ms(std[base])}, {NAMES[m]} {_ms(std[m])}",
                         (std[base] - std[m]).to_numpy(), _diag_text(stages, m)))
    multi = df[df.role == MULTITASK].groupby("seed").avg.mean()
    per_seed = ll.groupby(["seed", "method"]).avg.mean().unstack()
    gap = {m: (multi - per_seed[m]).dropna() for m in (base, closer) if m in per_seed}
    both = gap[base].index.intersection(gap[closer].index) if len(gap) == 2 else []
    rows.append(_row("Seq-KDsoft narrows the gap to Multi (per seed: Multi − method)",
                     "gap LAMOL 2.9 → Seq-KDsoft 0.7 (T3: Multi-long QA+LM 57.8)",
                     (f"gap: LAMOL {_ms(gap[base][both])}, Seq-KDsoft {_ms(gap[closer][both])}"
                      if len(both) else "—"),
                     (gap[base][both] - gap[closer][both]).to_numpy() if len(both) else np.array([]),
                     _diag_text(stages, closer)))
    return pd.DataFrame(rows).set_index("claim")
