"""Continual-learning figures of one accuracy matrix: pure functions on numpy arrays.

R is T x T: R[i, j] is the score on task j (position j in the trial's own order) after training
stage i, both 0-based; b[j] is the untrained model's score on task j. Undefined figures are NaN
(one task has no BWT; no baseline, no FWT), never 0, so a table shows a blank instead of a claim.

    final average      mean_j R[T-1, j]
    BWT (GEM)          1/(T-1) sum_{j<T-1} (R[T-1, j] - R[j, j])      the last task has no BWT term
    FWT (GEM)          1/(T-1) sum_{j>=1}  (R[j-1, j] - b[j])          the first task has no FWT term
    forgetting         f_j = max_{l<T-1} R[l, j] - R[T-1, j] for j < T-1, averaged (Chaudhry 2018:
                       every earlier stage, also those before j was trained; the last task has none)
    avg incremental    mean_i of mean_{j<=i} R[i, j]: the average over the tasks seen so far,
                       after every stage (Rebuffi et al. 2017)
    gap to single      R[T-1, j] - S[j], S the single-task score of task j

Public BWT/forgetting code often gets these indices wrong (the last task included, the diagonal
skipped); tests/test_report.py pins every one on hand-computed matrices.
"""

from __future__ import annotations

import warnings

import numpy as np

# For people: stages and tasks counted from 1, as every table, log and message (the code is 0-based)
DEFINITIONS = {
    "final_avg": "final average: mean over tasks of the score after the last stage, mean_j R[T][j]",
    "avg_incremental": "average incremental score: after every stage i, the mean over the tasks "
                       "seen so far (j <= i), averaged over stages",
    "bwt": "BWT (backward transfer, GEM): 1/(T-1) sum over j < T of (R[T][j] - R[j][j]); "
           "negative = forgetting; the last task has no term",
    "fwt": "FWT (forward transfer, GEM): 1/(T-1) sum over j >= 2 of (R[j-1][j] - b_j), b_j the "
           "untrained model's score; the first task has no term; blank without b",
    "forgetting": "forgetting (Chaudhry et al. 2018): f_j = max over stages l < T of R[l][j] "
                  "minus R[T][j], for j < T, averaged; the last task has none",
    "gap_to_single": "gap to single: R[T][j] - Single_j (the same task trained alone with QA+LM "
                     "loss, of the same seed where one exists, else the mean over seeds), averaged "
                     "over tasks with a Single score",
}


def _square(R) -> np.ndarray:
    R = np.asarray(R, dtype=float)
    if R.ndim != 2 or R.shape[0] != R.shape[1] or R.shape[0] == 0:
        raise ValueError(f"R must be a non-empty square matrix (one stage per task), got shape {R.shape}")
    return R


def _mean(values: np.ndarray) -> float:
    with warnings.catch_warnings():  # the mean of nothing is NaN, on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(values)) if values.size else float("nan")


def final_scores(R) -> np.ndarray:
    return _square(R)[-1].copy()


def final_average(R) -> float:
    return float(final_scores(R).mean())


def backward_transfer_per_task(R) -> np.ndarray:
    """R[T-1, j] - R[j, j]; NaN for the last task (it was never revisited)."""
    R = _square(R)
    out = R[-1] - np.diag(R)
    out[-1] = np.nan
    return out


def backward_transfer(R) -> float:
    R = _square(R)
    return float("nan") if len(R) < 2 else float(backward_transfer_per_task(R)[:-1].mean())


def forward_transfer_per_task(R, baseline) -> np.ndarray:
    """R[j-1, j] - b[j]: the score on task j just before it is trained, over the untrained model's.
    NaN for the first task (nothing came before it) and wherever b is missing."""
    R = _square(R)
    out = np.full(len(R), np.nan)
    if baseline is None:
        return out
    b = np.asarray(baseline, dtype=float)
    out[1:] = R[np.arange(len(R) - 1), np.arange(1, len(R))] - b[1:]
    return out


def forward_transfer(R, baseline) -> float:
    R = _square(R)
    if len(R) < 2 or baseline is None:
        return float("nan")
    per_task = forward_transfer_per_task(R, baseline)[1:]
    return float("nan") if np.isnan(per_task).any() else float(per_task.mean())


def forgetting_per_task(R) -> np.ndarray:
    """max_{l<T-1} R[l, j] - R[T-1, j] for j < T-1; NaN for the last task."""
    R = _square(R)
    out = np.full(len(R), np.nan)
    if len(R) >= 2:
        out[:-1] = R[:-1, :-1].max(axis=0) - R[-1, :-1]
    return out


def forgetting(R) -> float:
    R = _square(R)
    return float("nan") if len(R) < 2 else float(forgetting_per_task(R)[:-1].mean())


def average_incremental(R) -> float:
    R = _square(R)
    return float(np.mean([R[i, : i + 1].mean() for i in range(len(R))]))


def gap_to_single_per_task(R, single) -> np.ndarray:
    """R[T-1, j] - S[j]; NaN where no single-task score exists."""
    s = np.asarray([np.nan if v is None else v for v in single], dtype=float)
    return final_scores(R) - s


def gap_to_single(R, single) -> float:
    return _mean(gap_to_single_per_task(R, single))


def figures(R, baseline=None, single=None) -> dict[str, float]:
    """Every trial-level figure of one lifelong trial's R, by the names of DEFINITIONS."""
    R = _square(R)
    return {
        "final_avg": final_average(R),
        "avg_incremental": average_incremental(R),
        "bwt": backward_transfer(R),
        "fwt": forward_transfer(R, baseline),
        "forgetting": forgetting(R),
        "gap_to_single": gap_to_single(R, single) if single is not None else float("nan"),
    }
