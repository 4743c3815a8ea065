"""The aggregator: every trial result under a run folder -> the paper's tables, CL figures and curves.

    report = build_report(run_dir)            # what `cli.py report RUN_DIR` and a grid's end call
    report.sections[0].tables                 # DataFrames (cli.py renders the main ones with rich)

It reads result files only (nothing from trial or grid). Modules: `load` (find, label, check that
results belong together, group), `figures` (pure CL math), `tables` and `agreement` (DataFrames),
`plots` (PNG curves), `render` (Markdown/LaTeX), `write` (the report folder, written atomically).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from ..errors import ArtifactError
from ..methods import BASELINE, LOWER_BOUND
from ..results import RESULTS_FILE
from . import agreement as A
from . import claims as C
from . import tables as T
from .compute import compute_table
from .load import (Trial, assign_labels, canonical_tasks, check_together, grid_tasks, group_trials,
                   load_trials, split_experiments)
from .tables import Table

__all__ = ["Report", "Section", "Table", "build_report", "collect"]
log = logging.getLogger(__name__)
REPORT_DIR = "report"
REPORT_FILE = "report.md"


@dataclass
class Section:
    title: str  # "" without --group-by, else "field=value, ..."
    folder: str  # where its files go, relative to the report folder
    tasks: list[str]
    trials: list[Trial]
    tables: list[Table] = field(default_factory=list)
    curves: pd.DataFrame | None = None
    singles: dict[str, float] = field(default_factory=dict)  # task -> Single score, for the plots
    notes: list[str] = field(default_factory=list)

    def table(self, key: str) -> Table | None:
        return next((t for t in self.tables if t.key == key), None)

    @property
    def epochs(self) -> int:
        return int(next((t.result.config.get("training", {}).get("epochs", 1) for t in self.trials), 1))

    @property
    def primary(self) -> dict[str, str]:
        return {k: v for t in self.trials for k, v in t.result.primary.items()}


@dataclass
class Report:
    run_dir: Path
    out_dir: Path
    sections: list[Section]
    group_by: tuple[str, ...] = ()
    files: list[str] = field(default_factory=list)  # written, relative to out_dir

    @property
    def trials(self) -> list[Trial]:
        return [t for s in self.sections for t in s.trials]


def _slug(title: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", title).strip("_") or "all"


def build_section(title: str, trials: list[Trial], preferred: list[str]) -> Section:
    tasks = canonical_tasks(trials, preferred)
    sec = Section(title=title, folder=_slug(title) if title else "", tasks=tasks, trials=trials)
    long = T.finals(trials)
    n_orders = long[long.role == "lifelong"].order_id.nunique()
    sec.tables.append(Table("trials", "Trials in this report", _inventory(trials), digits=1))
    if n_orders:
        sec.tables.append(Table(
            "per_order", "Final score of every task after the last stage, per order (Table 2's shape)",
            T.per_order(long, tasks), latex=True, main=True,
            note="Each cell: the task's score in the trial's R after its last stage; Avg: mean over "
                 "tasks. Several seeds: the mean over seeds (`seeds` column)."))
    sec.tables.append(Table(
        "over_orders", f"References, and lifelong methods over {n_orders} order(s) (Table 3's shape)",
        T.over_orders(long, tasks), latex=True, main=True,
        note="Mean and STD over orders of the per-order scores (STD with n-1, as the paper); the Avg "
             "of a STD row is the mean of the task STDs, as the paper's Table 3. Single: the task "
             "trained alone (the teachers); Multi: one stage over all tasks."))
    seeds = T.over_seeds(long, tasks)
    if seeds is not None:
        sec.tables.append(Table(
            "over_seeds", "Mean and STD over SEEDS (not orders): each seed first averaged over orders",
            seeds, latex=True,
            note="This STD measures seed noise; the STD over orders (previous table) measures order "
                 "sensitivity. Do not compare one with the other."))
    trial_figs, task_figs = T.cl_figures(trials, long)
    if not trial_figs.empty:
        sec.tables.append(Table("cl_summary", "Continual-learning figures per method (mean over orders)",
                                T.cl_summary(trial_figs), main=True))
        sec.tables.append(Table("cl_trials", "Continual-learning figures per trial",
                                trial_figs.set_index("method")))
        sec.tables.append(Table("cl_tasks", "Per-task figures of every trial (position: place in its order)",
                                task_figs.set_index("method")))
        sec.tables.append(Table("forgetting", "Forgetting of each task (mean over the orders where it "
                                "was not last)", T.forgetting_by_task(task_figs, tasks)))
    spent = compute_table(trials)
    if not spent.empty:
        sec.tables.append(Table("compute", "Compute per method beside its score (mean over orders)", spent,
                                main=True, digits=2,  # hours of small runs need two decimals
                                note="Device-seconds per phase: train (Word-KD's teacher forward "
                                     "included), pseudo (LAMOL's pseudo samples), eval, teacher (Seq-KD "
                                     "decoding inside the trial); training a teacher is its Single row. "
                                     "Peak memory: the GPU's peak allocation, or the process's peak "
                                     "resident size on a CPU. Blank: a result written before compute "
                                     "was recorded."))
    _claims_tables(sec, trials)
    rows = A.agreement_rows(trials, sec.notes)
    if not rows.empty:
        t8 = A.by_task(rows)
        sec.tables.append(Table("teacher_agreement", "Accuracy on the items the teacher got right (A) "
                                "and wrong (B), averaged over classification tasks (Table 6's shape)",
                                A.averaged(t8), latex=True, main=True, digits=2,
                                note="Each figure: mean over seeds, then orders, then tasks."))
        sec.tables.append(Table("teacher_agreement_by_task", "Teacher agreement per task (Table 8's shape)",
                                t8, latex=True, digits=2))
    bad = T.incomplete(trials)
    if not bad.empty:
        sec.tables.append(Table("incomplete", "Incomplete trials (listed, not averaged)", bad.set_index("trial")))
        sec.notes.append(f"{len(bad)} incomplete trial(s) are listed, not averaged")
    sec.curves = T.curve_points(trials)
    singles = T.single_scores(long)
    sec.singles = {task: v for (seed, task), v in singles.items() if seed is None}
    return sec


def _claims_tables(sec: Section, trials: list[Trial]) -> None:
    """The claims table where LAMOL and a method a claim compares it with ran; the teacher and
    KD-stage diagnostics wherever they were recorded."""
    methods = {t.base_label for t in trials if t.role == "lifelong"}
    if BASELINE in methods and methods & {LOWER_BOUND, *C.KD_METHODS}:
        sec.tables.append(Table(
            "claims", "The paper's claims: what it reports, what these results measured, a verdict",
            C.claims_table(trials), main=True,
            note="Measured: mean ± STD over (seed, order) cells of the final average (or forgetting); "
                 "paired: the difference in the same seed and order (STD claim: per seed), with an exact "
                 f"two-sided sign-flip p; holds / does not hold at p <= {C.ALPHA}, else cannot tell. "
                 "Diagnostics: the KD stages' teacher figures (header: thresholds)."))
    stages = C.stage_diagnostics(trials)
    if not stages.empty:
        flagged = int((stages["flags"] != "—").sum())
        if flagged:
            sec.notes.append(f"{flagged} of {len(stages)} KD stages had a degenerate teacher (see "
                             "kd_stages; thresholds in the header): their KD rows measure a weak teacher")
        below = stages.teacher_gap.dropna()
        if (below < 0).any():
            sec.notes.append(f"{int((below < 0).sum())} of {len(below)} KD stages had a teacher that scores below "
                             "LAMOL's student on the stage's task (teacher_gap in kd_stages): distilling it "
                             "teaches a weaker model than the gold answers do")
        sec.tables.append(Table("kd_stages", "Teacher and distillation diagnostics per KD stage",
                                stages.set_index(["method", "order", "seed", "stage"]), digits=3,
                                note="student_score: the KD student on the stage's task right after it "
                                     "(R[s][s]); teacher_score: the stage's teacher on its task (its Single row, same "
                                     "seed); lamol_score: LAMOL's score on the task right after learning it "
                                     "(R[s][s], same seed and order); teacher_gap: teacher_score minus lamol_score"))
    teachers = C.teacher_diagnostics(trials)
    if not teachers.empty:
        sec.tables.append(Table("teacher_diagnostics", "Teacher diagnostics (from each teacher's manifest)",
                                teachers.set_index(["task", "seed", "T"]), digits=3))


def _inventory(trials: list[Trial]) -> pd.DataFrame:
    rows = [{"trial": t.rel, "role": t.role, "method": t.label, "order": T.order_label(t.order),
             "seed": t.seed, "complete": "yes" if t.complete else "no", "config_hash": t.result.config_hash}
            for t in sorted(trials, key=lambda t: t.rel)]
    return pd.DataFrame(rows).set_index("trial")


def collect(run_dir: str | Path, group_by: Iterable[str] = (), skip: Iterable[Path] = (),
            results_name: str = RESULTS_FILE) -> list[Section]:
    """Load, check and tabulate, without writing anything; results below the folders `skip` are
    left out; `results_name`: which result files (results.rescored.json for a rescored run)."""
    run_dir = Path(run_dir)
    trials = load_trials(run_dir, skip=skip, name=results_name)
    several = len(split_experiments(trials)) > 1
    sections = []
    for experiment, exp_trials in split_experiments(trials).items():
        preferred = grid_tasks(run_dir, experiment)
        for title, members in group_trials(exp_trials, group_by).items():
            if several:  # one section per experiment of the grid (the paper's Tables 2-3, 4, 5)
                title = f"experiment={experiment}" + (f", {title}" if title else "")
            assign_labels(members)  # per section: a suffix only where rows of one table need it
            check_together(members, f"{run_dir}" + (f" ({title})" if title else ""))
            sections.append(build_section(title, members, preferred))
    return sections


def build_report(run_dir: str | Path, out_dir: str | Path | None = None,
                 group_by: Iterable[str] = (), skip: Iterable[Path] = (),
                 results_name: str = RESULTS_FILE) -> Report:
    """Read every result under `run_dir` (but below the folders `skip`) and write the report folder
    (default RUN_DIR/report, or RUN_DIR/report-rescored for rescored results)."""
    run_dir = Path(run_dir)
    default = REPORT_DIR if results_name == RESULTS_FILE else f"{REPORT_DIR}-rescored"
    out = Path(out_dir) if out_dir else run_dir / default
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / REPORT_FILE).is_file())):
        raise ArtifactError(f"{out}: exists and is not a report folder; name another --out")
    report = Report(run_dir, out, collect(run_dir, group_by, skip=[out, *skip], results_name=results_name),
                    tuple(group_by))
    from .write import write_report  # matplotlib is loaded only once there is something to draw

    write_report(report)
    return report
