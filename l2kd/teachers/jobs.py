"""A grid's teacher stage, apart from Ray: which teachers its pending cells need, which of them are
still to train (or to decode), and the job that trains one. l2kd.grid runs the jobs as Ray tasks
with the trial resources and ships the finished teachers' weights to the cells."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ArtifactError
from ..plan import TEACHERS, Cell, Plan, TeacherJob
from ..trialconfig import trial_config
from .store import TeacherStore


def train_job(config: dict, task: str, root: str, modes: list[str],
              on_damaged: str = "refuse") -> dict[str, Any]:
    """One job: the teacher of `task` for a trial config, found or trained once in the store at
    `root`, with the Seq-KD data of `modes`."""
    store = TeacherStore(Path(root), on_damaged=on_damaged)
    t0 = time.perf_counter()
    path = store.ensure(trial_config(config, f"teacher of {task}"), task, seq_kd_modes=tuple(modes))
    return {"path": str(path), "trained": store.trained, "s": time.perf_counter() - t0}


@dataclass
class TeacherStage:
    wanted: list[str]  # the teacher folders the pending cells receive
    to_run: list[TeacherJob]  # the jobs not ready (l2kd.teachers.store.ready), in plan order
    reused: int  # the jobs ready on disk

    def job_args(self, plan: Plan, job: TeacherJob, on_damaged: str) -> tuple:
        """train_job's arguments for `job` (plain values: they cross a process boundary)."""
        return job.config.to_dict(), job.task, str(plan.run_dir / TEACHERS), sorted(job.seq_kd_modes), on_damaged


def teacher_stage(plan: Plan, cells: list[Cell]) -> TeacherStage:
    """Every teacher `cells` need, and the grid's Single references (each a teacher itself)."""
    wanted = sorted({folder for c in cells for _, folder in c.teachers})
    jobs = [j for j in plan.teachers.values() if j.folder in wanted or j.reference]
    to_run = [j for j in jobs if not plan.teacher_ready(j)]
    return TeacherStage(wanted, to_run, len(jobs) - len(to_run))


def job_failed(plan: Plan, job: TeacherJob, why: str) -> ArtifactError:
    """The grid's error for a teacher whose job failed (after its retries): it stops the grid."""
    log_file = plan.teacher_dir(job.folder) / "trial.log"
    return ArtifactError(f"teacher {job.folder} failed: {why} (log: {log_file})")
