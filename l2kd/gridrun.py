"""What a grid run returns and raises, and the repairs of Tune's folders a kill leaves, apart from
Ray: l2kd.grid (the one module that imports Ray) uses them and its callers read them from there."""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoint import latest_checkpoint, read_checkpoint
from .io import read_json


@dataclass(frozen=True)
class FaultInjection:
    """Tests only: make one cell fail once at a given stage and step (the retry must resume)."""

    cell: str
    stage: int
    step: int
    marker: str  # a file created when the fault fires, so the retry runs through


class GridInterrupted(KeyboardInterrupt):
    """The run was stopped (Ctrl-C, SIGTERM or SIGHUP reached Tune, which stopped its trials) before
    every cell ended. `signum` is the signal that stopped it (the exit code is 128 + signum)."""

    def __init__(self, message: str = "", signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum


# a scheduler's time limit (SIGTERM) and a lost SSH session (SIGHUP) stop the driver as Ctrl-C does
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@dataclass
class GridOutcome:
    run_dir: Path
    cells: dict[str, str] = field(default_factory=dict)  # cell id -> new | partial | done | changed
    errors: dict[str, str] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)  # every failed attempt, in order
    teachers_trained: int = 0
    teachers_reused: int = 0
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors and all(s == "done" for s in self.cells.values())


# --------------------------------------------------------------------------- Tune's checkpoint folders
def newest_checkpoint(tune_dir: str | None, workdir: Path) -> str | None:
    """The further of Tune's checkpoint and the cell folder's own (a trial may have saved its task
    boundary and died before reporting it)."""
    if tune_dir is None:
        return None
    if not any(Path(tune_dir).iterdir()):  # recreated empty by restore_missing_checkpoints
        return None
    theirs = read_checkpoint(Path(tune_dir))
    ours = latest_checkpoint(workdir)
    return None if ours and ours.stages_done >= theirs.stages_done else tune_dir


def restore_missing_checkpoints(experiment: Path) -> list[Path]:
    """Recreate, empty, the Tune checkpoint folders the experiment's snapshots name but a kill left
    missing (num_to_keep=1 deletes the older one, and a driver killed before its next snapshot
    leaves a snapshot naming it): Tune refuses to restore such a trial, while the cell's own
    task-boundary checkpoint in its folder holds everything it needs (newest_checkpoint)."""
    names = set()
    for state in experiment.glob("experiment_state*.json"):
        names |= set(re.findall(r"checkpoint_\d{6}", state.read_text(errors="replace")))
    made = []
    for trial_dir in (d for d in experiment.iterdir() if (d / "params.json").is_file()):  # Tune's trials
        for name in sorted(names):
            if not (trial_dir / name).exists():
                (trial_dir / name).mkdir()
                made.append(trial_dir / name)
    return made


# --------------------------------------------------------------------------- a cell's faults on disk
ATTEMPT_ERROR = "attempt_error.json"  # a failed attempt's error, written by the trial for the driver


def read_cell_json(workdir: Path) -> dict | None:
    try:
        meta = read_json(workdir / "cell.json")
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def recorded_faults(workdir: Path) -> list[dict[str, Any]]:
    """The failed attempts the driver recorded in the cell's cell.json (kept when a retry rewrites it)."""
    faults = (read_cell_json(workdir) or {}).get("faults", [])
    return faults if isinstance(faults, list) else []


def attempt_cause(workdir: Path) -> str:
    """Why the attempt that just failed did: the error its trial wrote down (taken), or, when it
    could write nothing, the death of its Ray worker or node (SIGKILL, out of memory, a lost node)."""
    try:
        cause = str(read_json(workdir / ATTEMPT_ERROR)["cause"])
    except (OSError, ValueError, KeyError, TypeError):
        return "its Ray worker or node died (nothing was raised in the trial)"
    (workdir / ATTEMPT_ERROR).unlink(missing_ok=True)
    return cause
