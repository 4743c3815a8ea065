"""Learning curves (the paper's Figures 3-5): for one order, a panel per task in training order with
its score along the whole stream, one line per method (the mean over seeds), stage boundaries
dotted, and the task's Single score dashed where known.

matplotlib's object API with the Agg canvas: no pyplot, so no global backend or figure state.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .tables import label_key


def plot_order(points: pd.DataFrame, tasks: list[str], epochs: int, singles: dict[str, float],
               primary: dict[str, str], path: Path) -> Path:
    """Draw one order's curves (rows of `points` for that order) into a PNG at `path`."""
    order = points["order"].iloc[0].split(" → ")
    mean = points.groupby(["method", "task", "x"], as_index=False)["score"].mean()
    methods = sorted(mean.method.unique(), key=label_key)
    fig = Figure(figsize=(4.2 * len(tasks), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        for m in methods:
            line = mean[(mean.method == m) & (mean.task == task)].sort_values("x")
            ax.plot(line.x, line.score, marker="o", markersize=2.5, linewidth=1.3, label=m)
        for s in range(1, len(order)):
            ax.axvline(s * epochs, color="0.6", linestyle=":", linewidth=0.8)
        if task in singles:
            ax.axhline(singles[task], color="0.3", linestyle="--", linewidth=0.8, label="Single")
        ax.set_title(f"{task} ({primary.get(task, 'score')})", fontsize=10)
        ax.set_xlabel("epoch (dotted: next task)" if epochs > 1 else "stage")
        ax.set_xlim(0, len(order) * epochs)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.25)
    axes[0].set_ylabel("score")
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(" → ".join(order), fontsize=10)
    fig.savefig(path, dpi=110)
    return path
