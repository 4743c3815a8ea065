"""The report folder: CSV + Markdown per table, LaTeX for the paper-shaped ones, PNG learning curves,
and `report.md` tying them together with the definitions in its header.

The whole folder is built under a temporary name and renamed into place (l2kd.io.atomic_dir): a
crash leaves the previous report, never half of a new one.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from ..io import atomic_dir, write_text
from .claims import ALPHA
from .figures import DEFINITIONS
from .plots import plot_order
from .render import to_latex, to_markdown
from .tables import Table

HEADER = """# Report: {run_dir}

Generated {when} from {n} trial result(s){grouped}.

## Definitions

R[i][j] is task j's primary score (the `primary` metric of its results.json) after training stage i,
both counted from 1 as in every table and log (stage i's files are in `stage-NN` folders numbered
from 0: `stage-00` holds stage 1), j in the trial's own order; T tasks; b_j the untrained model's score.
Tables are by task name, in the grid's task order, not by position in each order.

- Final score: a task's entry in the last row of R. Several seeds of one method and order are first
  averaged; incomplete trials are listed, never averaged.
- Mean / STD over orders (Table 3): over the per-order final scores; STD with n-1; a STD row's Avg is
  the mean of its task STDs (both as the paper). Mean / STD over seeds is a separate table.
- Single (QA+LM) = the task trained alone with QA and LM loss (the L2KD teacher); Single (QA) = QA loss
  only; Multi = one stage over all tasks together.
{definitions}
- Teacher agreement (classification tasks): group A = test items the task's teacher (its Single
  (QA+LM) model, same seed where one exists) answered right, B = those it got wrong; Acc (A)/(B) = the
  lifelong model's accuracy after the last stage on each group.
- Teacher diagnostics (KD rows, `kd_stages`, `teacher_diagnostics`): entropy_ratio = the teacher's
  mean target entropy at the stage's temperature over the KD positions / log V; unseen_mass = the
  target mass on token ids absent from the teacher's training rows; distinct_predictions = distinct
  test predictions of the teacher / distinct references; agreement = the student's top-1 agreement
  with the teacher after the stage. A teacher is flagged degenerate when {thresholds}.
- Claims: a per-(seed, order) difference the paper says is positive; exact two-sided sign-flip test;
  holds / does not hold at p <= {alpha}, else cannot tell at this size.
- Results belong together when their model, training (but log_every/threads/device), evaluation (but
  which extra evaluations run and decode batch sizes), data caps and each task's primary metric agree.
"""


def _thresholds() -> str:
    from ..diagnostics import THRESHOLDS

    return " or ".join(f"{k} {op} {v:g}" for k, (op, v) in THRESHOLDS.items())


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "order"


def _write_table(folder: Path, table: Table, files: list[Path]) -> str:
    md = to_markdown(table.df, table.digits)
    files.append(write_text(folder / f"{table.key}.csv", table.df.to_csv()))
    files.append(write_text(folder / f"{table.key}.md", f"## {table.title}\n\n{md}"
                            + (f"\n{table.note}\n" if table.note else "")))
    if table.latex:
        files.append(write_text(folder / f"{table.key}.tex", to_latex(table.df, table.title, table.digits)))
    return md


def _section_md(sec, root: Path, folder: Path, files: list[Path]) -> list[str]:
    rel = f"{sec.folder}/" if sec.folder else ""
    lines = [f"## {sec.title}\n" if sec.title else ""]
    if sec.notes:
        lines += ["Notes:", *[f"- {n}" for n in dict.fromkeys(sec.notes)], ""]
    for table in sec.tables:
        if table.key == "trials":
            continue  # long; linked at the end
        md = _write_table(folder, table, files)
        links = ", ".join(f"[{ext}]({rel}{table.key}.{ext})" for ext in ("csv", "md", "tex")
                          if ext != "tex" or table.latex)
        lines += [f"### {table.title}\n", md, *([table.note, ""] if table.note else []), f"Files: {links}\n"]
    if sec.curves is not None and not sec.curves.empty:
        files.append(write_text(folder / "curves.csv", sec.curves.to_csv(index=False)))
        lines.append("### Learning curves (Figure 3's shape)\n")
        lines.append("Each task's score along the stream (x = epochs; per epoch where the trial recorded "
                     "it, else after every stage), one line per method, mean over seeds; dashed: Single. "
                     f"Data: [curves.csv]({rel}curves.csv)\n")
        for order_id, points in sec.curves.groupby("order_id", sort=False):
            name = f"curves-{_slug(str(order_id))}.png"
            order = points.order.iloc[0].split(" → ")  # panels in training order, as Figure 3
            files.append(plot_order(points, order, sec.epochs, sec.singles, sec.primary, folder / name))
            lines.append(f"![{points.order.iloc[0]}]({rel}{name})\n")
    inv = sec.table("trials")
    if inv is not None:
        _write_table(folder, inv, files)
        lines.append(f"Trials: [{len(inv.df)} listed]({rel}trials.md)\n")
    return lines


def tensorboard_dirs(report) -> list[Path]:
    """The trials' TensorBoard folders (l2kd.tracking writes them), for the report to point at."""
    return [t.path / "tensorboard" for t in report.trials if (t.path / "tensorboard").is_dir()]


def write_report(report) -> None:
    files: list[Path] = []

    def fill(tmp: Path) -> None:
        grouped = f", grouped by {', '.join(report.group_by)}" if report.group_by else ""
        definitions = "\n".join(f"- {text[0].upper()}{text[1:]}." for text in DEFINITIONS.values())
        lines = [HEADER.format(run_dir=report.run_dir, when=time.strftime("%Y-%m-%d %H:%M"),
                               n=len(report.trials), grouped=grouped, definitions=definitions,
                               thresholds=_thresholds(), alpha=ALPHA)]
        boards = tensorboard_dirs(report)
        if boards:
            lines.append(f"TensorBoard: {len(boards)} trial(s) wrote event files (each trial's `tensorboard/` "
                         f"folder): `tensorboard --logdir {report.run_dir}`\n")
        for sec in report.sections:
            folder = tmp / sec.folder if sec.folder else tmp
            folder.mkdir(parents=True, exist_ok=True)
            lines += _section_md(sec, tmp, folder, files)
        files.append(write_text(tmp / "report.md", "\n".join(lines)))
        report.files = sorted(str(p.relative_to(tmp)) for p in files)

    atomic_dir(report.out_dir, fill)
