"""The report's tables as DataFrames, by task name in one canonical column order.

Averaging follows the paper: a lifelong method's score in one order is its final score (the R row
after the last stage), first averaged over seeds; Table 3's mean and STD are taken over orders, the
STD with n-1 (sample STD: the paper's Table 3 STD rows follow from its Table 2 that way), and the
Avg of an STD row is the mean of the task STDs (the paper's too, not the STD of the Avg). Where
several seeds exist, a separate table gives mean and STD over seeds, each seed first averaged over
orders. Only complete trials are averaged; incomplete ones are listed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..methods import SINGLE, paper_order
from . import figures as F
from .load import Trial, natural_key

# Column names of the CL figures in every output.
FIGURE_NAMES = {"final_avg": "final avg", "avg_incremental": "avg incremental", "bwt": "BWT", "fwt": "FWT",
                "forgetting": "forgetting", "gap_to_single": "gap to single"}
# Row order of the paper's tables; other labels follow alphabetically.
METHOD_ORDER = paper_order()
REFERENCE_ORDER = ["Single (QA)", "Single (QA+LM)", "Multi (QA)", "Multi (QA+LM)"]
AVG = "Avg"


@dataclass
class Table:
    key: str  # file stem
    title: str
    df: pd.DataFrame  # index: rows, or (block, row) where the table has blocks
    note: str = ""
    latex: bool = False  # paper-shaped: also written as LaTeX
    main: bool = False  # printed on the console
    digits: int = 1


def label_key(label: str) -> tuple:
    base = label.split("(", 1)[0]
    for i, names in enumerate((REFERENCE_ORDER, METHOD_ORDER)):
        if label in names or base in names:
            return (i, names.index(label if label in names else base), label)
    return (2, 0, label)


def order_label(order: tuple[str, ...]) -> str:
    return " → ".join(order)


def _with_avg(wide: pd.DataFrame, tasks: list[str], std_rows: bool = False) -> pd.DataFrame:
    wide = wide.reindex(columns=tasks)
    # An average over some of the tasks would not compare with the others: blank unless all exist.
    avg = wide.mean(axis=1).where(wide.notna().all(axis=1))
    return wide.assign(**{AVG: avg})


# --------------------------------------------------------------------------- long forms
def finals(trials: list[Trial]) -> pd.DataFrame:
    """One row per (complete trial, task): the score after the last stage."""
    rows = [{"role": t.role, "method": t.label, "order_id": t.order_id, "order": order_label(t.order),
             "seed": t.seed, "task": task, "score": score, "trial": t.rel}
            for t in trials if t.complete for task, score in t.final().items()]
    return pd.DataFrame(rows, columns=["role", "method", "order_id", "order", "seed", "task", "score", "trial"])


def _sorted_orders(df: pd.DataFrame) -> list[str]:
    return sorted(df["order_id"].unique(), key=natural_key)


def _sort_methods(labels) -> list[str]:
    return sorted(set(labels), key=label_key)


# --------------------------------------------------------------------------- Table 2
def per_order(long: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """Rows (order, method), columns each task's final score (mean over seeds) and their Avg."""
    ll = long[long.role == "lifelong"]
    if ll.empty:
        return pd.DataFrame(columns=tasks + [AVG])
    blocks = []
    for oid in _sorted_orders(ll):
        part = ll[ll.order_id == oid]
        wide = part.pivot_table(index="method", columns="task", values="score", aggfunc="mean")
        wide = _with_avg(wide, tasks).reindex(_sort_methods(part.method))
        seeds = part.groupby("method")["seed"].nunique()
        if ll.groupby(["method", "order_id"])["seed"].nunique().max() > 1:
            wide["seeds"] = seeds.reindex(wide.index)
        wide.index = pd.MultiIndex.from_product([[part.order.iloc[0]], wide.index], names=["order", "method"])
        blocks.append(wide)
    return pd.concat(blocks)


# --------------------------------------------------------------------------- Table 3
def _per_order_means(ll: pd.DataFrame) -> pd.DataFrame:
    return ll.groupby(["method", "order_id", "task"], as_index=False)["score"].mean()


def reference_rows(long: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """Single and Multi rows: each task's score, the mean over seeds (and over task orders for Multi)."""
    ref = long[long.role != "lifelong"]
    if ref.empty:
        return pd.DataFrame(columns=tasks + [AVG])
    wide = ref.pivot_table(index="method", columns="task", values="score", aggfunc="mean")
    return _with_avg(wide, tasks).reindex(_sort_methods(ref.method))


def over_orders(long: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """Table 3: references; lifelong mean over orders; lifelong STD over orders."""
    blocks = []
    ref = reference_rows(long, tasks)
    if not ref.empty:
        blocks.append(("References (not lifelong)", ref.assign(orders=pd.NA)))
    ll = long[long.role == "lifelong"]
    if not ll.empty:
        per = _per_order_means(ll)
        methods = _sort_methods(per.method)
        mean = _with_avg(per.pivot_table(index="method", columns="task", values="score", aggfunc="mean"), tasks)
        std = per.pivot_table(index="method", columns="task", values="score", aggfunc=lambda s: s.std(ddof=1))
        std = std.reindex(columns=tasks)
        std[AVG] = std.mean(axis=1).where(std.notna().all(axis=1))
        n = per.groupby("method")["order_id"].nunique()
        blocks.append(("Lifelong: mean over orders", mean.reindex(methods).assign(orders=n)))
        blocks.append(("Lifelong: STD over orders", std.reindex(methods).assign(orders=n)))
    return _blocks(blocks, "method")


def over_seeds(long: pd.DataFrame, tasks: list[str]) -> pd.DataFrame | None:
    """Mean and STD over seeds (each seed first averaged over orders); None with one seed each."""
    if long.empty or long.groupby("method")["seed"].nunique().max() < 2:
        return None
    per_seed = long.groupby(["method", "seed", "task"], as_index=False)["score"].mean()
    methods = _sort_methods(per_seed.method)
    mean = _with_avg(per_seed.pivot_table(index="method", columns="task", values="score", aggfunc="mean"), tasks)
    std = per_seed.pivot_table(index="method", columns="task", values="score",
                               aggfunc=lambda s: s.std(ddof=1)).reindex(columns=tasks)
    std[AVG] = std.mean(axis=1).where(std.notna().all(axis=1))
    n = per_seed.groupby("method")["seed"].nunique()
    return _blocks([("Mean over seeds", mean.reindex(methods).assign(seeds=n)),
                    ("STD over seeds", std.reindex(methods).assign(seeds=n))], "method")


def _blocks(blocks: list[tuple[str, pd.DataFrame]], row_name: str) -> pd.DataFrame:
    if not blocks:
        return pd.DataFrame()
    parts = []
    for title, df in blocks:
        df = df.copy()
        df.index = pd.MultiIndex.from_product([[title], df.index], names=["block", row_name])
        parts.append(df)
    out = pd.concat(parts)
    out.columns.name = None
    for count in ("orders", "seeds"):
        if count in out:
            out[count] = out[count].astype("Int64")
    return out


# --------------------------------------------------------------------------- CL figures
def single_scores(long: pd.DataFrame) -> dict[tuple[int | None, str], float]:
    """Single_j for the gap: the QA+LM single (the teacher) if any, else any single; by (seed, task)
    and, averaged over seeds, by (None, task)."""
    singles = long[long.role == SINGLE]
    if singles.empty:
        return {}
    preferred = singles[singles.method.str.startswith("Single (QA+LM)")]
    singles = preferred if not preferred.empty else singles
    out: dict[tuple[int | None, str], float] = {
        (int(s), t): v for (s, t), v in singles.groupby(["seed", "task"])["score"].mean().items()}
    out.update({(None, t): v for t, v in singles.groupby("task")["score"].mean().items()})
    return out


def cl_figures(trials: list[Trial], long: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per complete lifelong trial: the trial-level figures, and the per-task ones (long form)."""
    singles = single_scores(long)
    rows, per_task = [], []
    for t in sorted((t for t in trials if t.role == "lifelong" and t.complete),
                    key=lambda t: (label_key(t.label), natural_key(t.order_id), t.seed)):
        R = t.R
        if R.shape != (len(t.order), len(t.order)):
            continue  # not one stage per task: stage-task figures are undefined
        s = [singles.get((t.seed, task), singles.get((None, task))) for task in t.order]
        b = t.baseline()
        figs = F.figures(R, b, s)
        rows.append({"method": t.label, "order": order_label(t.order), "seed": t.seed, **figs, "trial": t.rel})
        cols = {"final": F.final_scores(R), "learned": np.diag(R), "bwt": F.backward_transfer_per_task(R),
                "fwt": F.forward_transfer_per_task(R, b), "forgetting": F.forgetting_per_task(R),
                "gap_to_single": F.gap_to_single_per_task(R, s)}
        for j, task in enumerate(t.order):
            per_task.append({"method": t.label, "order": order_label(t.order), "seed": t.seed, "task": task,
                             "position": j + 1, **{k: float(v[j]) for k, v in cols.items()}})
    trial_df = pd.DataFrame(rows, columns=["method", "order", "seed", *F.DEFINITIONS, "trial"])
    task_df = pd.DataFrame(per_task, columns=["method", "order", "seed", "task", "position", "final", "learned",
                                              "bwt", "fwt", "forgetting", "gap_to_single"])
    return trial_df.rename(columns=FIGURE_NAMES), task_df.rename(columns=FIGURE_NAMES)


def cl_summary(trial_df: pd.DataFrame) -> pd.DataFrame:
    """Each method's figures: mean over seeds within an order, then mean over orders."""
    figs = list(FIGURE_NAMES.values())
    if trial_df.empty:
        return pd.DataFrame(columns=figs + ["orders"])
    per_order = trial_df.groupby(["method", "order"])[figs].mean()
    out = per_order.groupby("method").mean()
    out["orders"] = per_order.groupby("method").size()
    return out.reindex(_sort_methods(out.index))


def forgetting_by_task(task_df: pd.DataFrame, tasks: list[str]) -> pd.DataFrame:
    """Each method's forgetting of each task, mean over the orders where it was not last."""
    if task_df.empty:
        return pd.DataFrame(columns=tasks)
    per_order = task_df.groupby(["method", "order", "task"])["forgetting"].mean().reset_index()
    wide = per_order.pivot_table(index="method", columns="task", values="forgetting", aggfunc="mean")
    wide = wide.reindex(columns=tasks)
    wide[AVG] = wide.mean(axis=1)
    return wide.reindex(_sort_methods(wide.index))


# --------------------------------------------------------------------------- learning curves
def curve_points(trials: list[Trial]) -> pd.DataFrame:
    """Each task's primary score along the stream, x in epochs: per epoch where the trial recorded
    it (eval.every_epoch), else after every stage; x = 0 is the untrained model where known."""
    rows = []
    for t in trials:
        if t.role != "lifelong" or not t.complete:
            continue
        r, epochs = t.result, int(t.result.config.get("training", {}).get("epochs", 1))
        base = dict(method=t.label, order_id=t.order_id, order=order_label(t.order), seed=t.seed)
        if r.baseline:
            for task in r.tasks:
                rows.append({**base, "x": 0, "stage": 0, "epoch": 0, "task": task,
                             "score": r.baseline[task][r.primary[task]]})
        if r.curves:
            points = [(c["stage"], c["epoch"], c["scores"]) for c in r.curves]
        else:
            points = [(s, epochs, scores) for s, scores in enumerate(r.metrics)]
        for stage, epoch, scores in points:
            for task in r.tasks:
                rows.append({**base, "x": stage * epochs + epoch, "stage": stage + 1, "epoch": epoch,
                             "task": task, "score": scores[task][r.primary[task]]})
    return pd.DataFrame(rows, columns=["method", "order_id", "order", "seed", "x", "stage", "epoch", "task", "score"])


# --------------------------------------------------------------------------- bookkeeping
def incomplete(trials: list[Trial]) -> pd.DataFrame:
    rows = [{"trial": t.rel, "method": t.label, "order": order_label(t.order), "seed": t.seed,
             "stages done": len(t.result.R), "stages": len(t.result.stages)}
            for t in trials if not t.complete]
    return pd.DataFrame(rows, columns=["trial", "method", "order", "seed", "stages done", "stages"])
