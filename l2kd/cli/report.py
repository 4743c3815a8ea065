"""`cli.py report`: a run folder's report (l2kd.report builds it; this prints its main tables)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from .common import console, out


def render_frame(df, digits: int = 1) -> list[Table]:
    """A report table (a DataFrame, maybe in blocks) as rich tables: one per block (an order, a
    mean or STD section), titled by it, with the same column widths throughout."""
    from l2kd.report.render import numeric_columns, rows

    header, body = rows(df, digits)
    numeric = numeric_columns(df)
    widths = [max([len(h)] + [len(c[i]) for b, c in body if b is None]) for i, h in enumerate(header)]
    if sum(widths) + 3 * len(widths) + 1 > out.width:  # too wide: let rich wrap rather than crop
        widths = [None] * len(widths)
    tables: list[Table] = []
    for block, cells in body:
        if block is not None or not tables:
            tables.append(Table(title=block, title_justify="left"))
            tables[-1].add_column(header[0], min_width=widths[0])
            for name, col, w in zip(header[1:], df.columns, widths[1:]):
                tables[-1].add_column(name, justify="right" if col in numeric else "left", min_width=w)
        if block is None:
            tables[-1].add_row(*[escape(c) for c in cells])
    return tables


def cmd_report(args: argparse.Namespace) -> int:
    from l2kd.report import build_report

    if args.rescore:
        from l2kd.rescore import RESCORED_FILE, rescore_run

        done = rescore_run(args.run_dir, skip=tuple(Path(args.run_dir).glob("report*")))
        kept = sorted({k for r in done for k in r.kept})
        console.print(f"rescored {sum(r.scored for r in done)} evaluations of {len(done)} trial(s) from their "
                      f"stored predictions -> {RESCORED_FILE} beside each results.json"
                      + (f"; kept as they were: {'; '.join(kept[:3])}" + ("; ..." if len(kept) > 3 else "")
                         if kept else ""), markup=False, highlight=False, soft_wrap=True)
        print_report(build_report(args.run_dir, out_dir=args.out, group_by=args.group_by,
                                  results_name=RESCORED_FILE))
        return 0
    print_report(build_report(args.run_dir, out_dir=args.out, group_by=args.group_by))
    return 0


def heading(title: str) -> None:
    """A section rule on a terminal; a plain line elsewhere (a rule would span the whole width)."""
    if out.is_terminal:
        out.rule(title)
    else:
        out.print(f"== {title} ==", markup=False, highlight=False)


def print_report(report) -> None:
    for sec in report.sections:
        if sec.title:
            heading(sec.title)
        for t in sec.tables:
            if t.main:
                out.print(f"\n[bold]{escape(t.title)}[/bold]")
                for table in render_frame(t.df, t.digits):
                    out.print(table)
        for note in dict.fromkeys(sec.notes):
            console.print(f"note: {note}", markup=False, highlight=False)
    from l2kd.report.write import tensorboard_dirs

    n = len(report.trials)
    boards = tensorboard_dirs(report)
    if boards:
        console.print(f"TensorBoard: {len(boards)} trial(s) wrote event files: tensorboard --logdir {report.run_dir}",
                      markup=False, highlight=False, soft_wrap=True)
    console.print(f"{n} trial result(s) -> {len(report.files)} files in {report.out_dir} "
                  f"(start with {report.out_dir / 'report.md'})", markup=False, soft_wrap=True)
