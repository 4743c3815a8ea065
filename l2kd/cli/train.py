"""`cli.py train`: one lifelong trial with a live progress display, and its R matrix at the end."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from l2kd.errors import ConfigError

from .common import console, out
from .signals import raise_if_signalled


def render_matrix(result, title: str) -> Table:
    table = Table(title=title, show_lines=False)
    table.add_column("after stage")
    for t in result.tasks:
        table.add_column(f"{t}\n({result.primary[t]})", justify="right")
    if result.baseline:
        table.add_row("untrained", *[f"{result.baseline[t][result.primary[t]]:.1f}" for t in result.tasks],
                      style="dim")
    for i, row in enumerate(result.R):
        table.add_row(f"{i + 1}: {'+'.join(result.stages[i])}", *[f"{v:.1f}" for v in row])
    return table


class TrialProgress:
    """Turns trial events into a rich progress bar and log lines."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("epoch {task.fields[epoch]}"), TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), console=console,
            disable=quiet)
        self.bar = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def __call__(self, name: str, **e) -> None:
        p = self.progress
        if name == "start":
            p.console.print(f"trial {e['trial']}: {e['method']} on {' -> '.join(e['tasks'])} (seed {e['seed']}, "
                            f"{e['device']}, {e['precision']}) -> {e['workdir']}", markup=False, soft_wrap=True)
        elif name == "stage_start":
            if self.bar is not None:
                p.remove_task(self.bar)
            self.bar = p.add_task(f"stage {e['stage'] + 1}/{e['stages']} {'+'.join(e['tasks'])}",
                                  total=None, epoch="-", loss="-", speed="")
        elif name == "step" and self.bar is not None:
            p.update(self.bar, total=e["steps"], completed=e["step"], epoch=f"{e['epoch']}/{e['epochs']}",
                     loss=f"{e['loss']:.3f}", speed=f"{e['examples_per_s']:.0f} ex/s")
        elif name == "replay":
            p.console.print(f"  pseudo samples: kept {e['kept']} of {e['requested']} "
                            f"(dropped: {e['dropped']})")
        elif name == "eval" and not self.quiet:
            from l2kd.trial import describe_eval

            shown = {k: round(v, 1) for k, v in e["scores"].items()}
            p.console.print(f"  eval ({describe_eval(e['tag'])}) {e['task']}: {shown}", markup=False,
                            highlight=False)
        elif name == "teacher":
            where = " (in a background process)" if e.get("background") else ""
            p.console.print(f"training the teacher of {e['task']}{where} -> {e['path']}", markup=False,
                            soft_wrap=True)
        elif name == "teacher_ready":
            p.console.print(f"teacher of {e['task']} ready ({e['seconds']:.0f} s)")
        elif name == "teacher_wait":
            p.console.print(f"  waiting for the teacher of {e['task']}")
        elif name == "resume" and e.get("complete"):
            p.console.print(f"  already complete ({e['stages_done']} of {e['stages']} stages): nothing to run")
        elif name == "resume":
            p.console.print(f"  resuming after stage {e['stages_done']} of {e['stages']}")



def cmd_train(args: argparse.Namespace) -> int:
    from l2kd.trialconfig import load_trial_config
    from l2kd.methods import make_method
    from l2kd.teachers.background import TrialTeachers
    from l2kd.teachers.store import TeacherStore
    from l2kd.trial import run_trial, set_up_trial

    cfg = load_trial_config(args.config, args.set)
    workdir = Path(args.out or Path("runs") / (cfg.name or "trial"))
    if args.fresh and workdir.exists():
        shutil.rmtree(workdir)
    start = time.perf_counter()
    with TrialProgress(args.quiet) as progress, contextlib.ExitStack() as stack:
        teachers = {}
        if make_method(cfg.method).teachers_needed(cfg):
            store = TeacherStore(Path(args.teachers), on_damaged=args.damaged_teachers)
            teachers = stack.enter_context(TrialTeachers(store, cfg, args.teacher_workers, progress))
        def on_event(name: str, **e) -> None:
            raise_if_signalled()
            progress(name, **e)

        try:  # check every input, then start the teachers (a bad input trains none), then train
            setup = set_up_trial(cfg, workdir, resume=not args.fresh)
            if isinstance(teachers, TrialTeachers):
                teachers.start()
            result = run_trial(cfg, workdir, teachers=teachers, on_event=on_event, setup=setup,
                               tensorboard=not args.no_tensorboard)
        except ConfigError as e:  # a setting found wrong while the trial read its inputs: name the file
            raise e if e.where else ConfigError(str(e), where=args.config) from None
        raise_if_signalled()
    out.print(render_matrix(result, f"R: {cfg.name} ({cfg.method.name}, seed {cfg.seed})"))
    console.print(f"done in {time.perf_counter() - start:.1f} s; results: {workdir / 'results.json'}")
    return 0

