"""Experiment trackers. Per trial, TensorBoard event files (on by default) written by the trial
itself: every evaluation's scores (the untrained model, after every epoch when evaluated, after every
stage), the R row's average after every stage, and the losses, learning rate and speed at
`training.log_every`. The x axis is the trial's optimiser steps counted over the whole stream, so a
resumed trial continues its curves. Weights & Biases and MLflow go through Ray Tune's own logger
callbacks in the grid (l2kd.grid); this module knows nothing of Ray.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
TENSORBOARD_DIR = "tensorboard"


class TensorBoardEvents:
    """A trial event listener writing TensorBoard scalars under `folder`."""

    def __init__(self, folder: Path, steps_before: int = 0):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        self.writer = SummaryWriter(log_dir=str(folder))
        self.offset = steps_before  # optimiser steps of the stages finished before this run
        self.step = steps_before

    def __call__(self, name: str, **e: Any) -> None:
        w = self.writer
        if name == "step":
            self.step = self.offset + e["step"]
            w.add_scalar("loss/total", e["loss"], self.step)
            for term, value in e.get("terms", {}).items():
                w.add_scalar(f"loss/{term}", value, self.step)
            w.add_scalar("train/lr", e["lr"], self.step)
            w.add_scalar("train/tokens_per_s", e["tokens_per_s"], self.step)
        elif name == "eval":
            section = "untrained" if e["tag"] == "initial" else "epoch" if "-epoch" in e["tag"] else "stage"
            for metric, value in e["scores"].items():
                w.add_scalar(f"eval_{section}/{e['task']}/{metric}", value, self.step)
        elif name == "stage_end":
            row = e["R_row"]
            w.add_scalar("R/avg", sum(row) / len(row), self.step)
            for task, value in zip(e["result"].tasks, row):
                w.add_scalar(f"R/{task}", value, self.step)
            self.offset = self.step = self.offset + e["result"].stage_info[-1]["train"]["steps"]
            w.flush()

    def close(self) -> None:
        self.writer.close()


def tensorboard_listener(workdir: Path, steps_before: int) -> TensorBoardEvents | None:
    """The trial's TensorBoard writer, or None (with a warning) where tensorboard is not installed."""
    try:
        return TensorBoardEvents(Path(workdir) / TENSORBOARD_DIR, steps_before)
    except ImportError:
        log.warning("TensorBoard events not written: the tensorboard package is missing (pip install tensorboard)")
        return None


def fan_out(*listeners):
    """One event function calling each listener that is not None, in order."""
    active = [f for f in listeners if f is not None]

    def emit(name: str, **e: Any) -> None:
        for f in active:
            f(name, **e)
    return emit
