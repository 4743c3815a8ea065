#!/usr/bin/env python
"""l2kd command line: thin subcommands over the library. Everything printed for people lives here.

    python cli.py grid GRID.yaml           every (order x method x seed) cell of a grid, on Ray Tune
    python cli.py train TRIAL.yaml         one lifelong trial, with a live progress display
    python cli.py pretrain BASE.yaml --out DIR   a GPT-2 base on plain text, for model.pretrained
    python cli.py bench TRIAL.yaml         its speed here, against the reference's way
    python cli.py validate FILE            check a trial config and its data without running
    python cli.py report RUN_DIR           the paper's tables, CL figures and curves of a run folder
    python cli.py data convert SOURCE... --task TASK --out DIR    raw public data -> LAMOL files
    python cli.py ls {tasks,methods,metrics}

Bad input (a config key, a data file, a task name) is reported as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import typing
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rich.markup import escape  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from l2kd.errors import ConfigError, UserError  # noqa: E402

from l2kd.cli.common import console, out  # noqa: E402
from l2kd.cli.bench import cmd_bench, bench_parts  # noqa: E402


# --------------------------------------------------------------------------- helpers
def config_reference() -> str:
    """Every trial-config key with its default and description, from the config models."""
    from pydantic import BaseModel

    from l2kd.config import TrialConfig

    lines: list[str] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            key = f"{prefix}{name}"
            if isinstance(ann, type) and issubclass(ann, BaseModel) and name != "method":
                walk(ann, key + ".")
                continue
            default = "required" if field.is_required() else repr(field.get_default(call_default_factory=True))
            lines.append(f"  {key:28s} {field.description or ''} [{default}]")
            inner = [a for a in typing.get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
            if inner:  # an optional section (model.lora): its own keys, used once it is set
                walk(inner[0], key + ".")

    walk(TrialConfig, "")
    return "trial config keys (YAML; override any with --set key=value):\n" + "\n".join(lines)


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


# --------------------------------------------------------------------------- commands
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
            _raise_if_signalled()
            progress(name, **e)

        try:  # check every input, then start the teachers (a bad input trains none), then train
            setup = set_up_trial(cfg, workdir, resume=not args.fresh)
            if isinstance(teachers, TrialTeachers):
                teachers.start()
            result = run_trial(cfg, workdir, teachers=teachers, on_event=on_event, setup=setup,
                               tensorboard=not args.no_tensorboard)
        except ConfigError as e:  # a setting found wrong while the trial read its inputs: name the file
            raise e if e.where else ConfigError(str(e), where=args.config) from None
        _raise_if_signalled()
    out.print(render_matrix(result, f"R: {cfg.name} ({cfg.method.name}, seed {cfg.seed})"))
    console.print(f"done in {time.perf_counter() - start:.1f} s; results: {workdir / 'results.json'}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from l2kd.pretrain import load_pretrain_config, run_pretrain

    cfg = load_pretrain_config(args.config, args.set)
    start = time.perf_counter()
    progress = Progress(TextColumn("[bold]pretraining"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]}"),
                        TimeElapsedColumn(), console=console, disable=args.quiet)
    bar = None

    def on_event(name: str, **e) -> None:
        nonlocal bar
        if name == "start":
            progress.console.print(f"pretraining {e['params'] / 1e6:.1f}M parameters on {e['blocks']} "
                                   f"sequences ({e['device']}, {e['precision']}) -> {e['out']}",
                                   markup=False, soft_wrap=True)
            bar = progress.add_task("", total=e["steps"], completed=e["step"], loss="-", speed="")
        elif name == "resume":
            progress.console.print(f"  resuming at step {e['step']}")
        elif name == "step" and bar is not None:
            progress.update(bar, completed=e["step"], loss=f"{e['loss']:.3f}",
                            speed=f"{e['tokens_per_s']:.0f} tok/s")
        elif name == "done_already":
            progress.console.print(f"{e['out']}: already pretrained with these settings", markup=False)

    with progress:
        manifest = run_pretrain(cfg, args.out, fresh=args.fresh, on_event=on_event)
    seen, loss = manifest["seen"], manifest["loss"]
    overlap = manifest["corpus"].get("disjoint_from")
    console.print(f"done in {time.perf_counter() - start:.1f} s: {seen['steps']} steps, {seen['tokens']:,} "
                  f"tokens ({seen['passes']:.2f} passes over {manifest['corpus']['tokens']:,}), loss "
                  f"{loss['first']:.3f} -> {loss['last']:.3f}"
                  + (f"; {overlap['shared_ngrams']} of {overlap['corpus_ngrams']:,} corpus 8-grams in "
                     "the held-out tasks" if overlap else "")
                  + f"; base: {args.out} (model.pretrained)")
    return 0


def _fmt_tokens(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def render_plan(plan, work) -> list:
    """The dry run: cells, teachers and who shares them, what a run would do now, the work."""
    cells = Table(title=f"grid {plan.spec.name}: {len(plan.cells)} cells -> {plan.run_dir}")
    for col in ("experiment", "order", "method", "seed", "status", "teachers", "trained tokens"):
        cells.add_column(col, justify="right" if col in ("seed", "trained tokens") else "left",
                         no_wrap=col in ("order", "status"))
    counts: dict[str, int] = {}
    for c in plan.cells:
        st = plan.status(c)
        counts[st.state] = counts.get(st.state, 0) + 1
        shown = {"partial": f"partial {st.stages_done}/{st.stages}", "changed": "CHANGED"}.get(st.state, st.state)
        cells.add_row(c.experiment, c.order_id, c.method, str(c.seed), shown, str(len(c.teachers)),
                      _fmt_tokens(work["cells"][c.id]))
    teachers = Table(title=f"teachers: {len(plan.teachers)} (trained once, shared)")
    for col in ("teacher", "used by", "single row", "seq-kd data", "status", "trained tokens"):
        teachers.add_column(col, no_wrap=col == "teacher")
    damaged = plan.damaged_teachers()
    for name, job in sorted(plan.teachers.items()):
        state = "DAMAGED" if name in damaged else "ready" if plan.teacher_ready(job) else "to train"
        teachers.add_row(name, f"{len(job.users)} cells", "yes" if job.reference else "",
                         ", ".join(sorted(job.seq_kd_modes)), state, _fmt_tokens(work["teachers"][name]))
    to_train = sum(not plan.teacher_ready(j) for j in plan.teachers.values())
    partial = counts.get("partial", 0)
    lines = [cells, teachers,
             f"a run now would: train {to_train} teacher(s), run {counts.get('new', 0)} new cell(s), "
             f"resume {partial} partial cell(s) at their next task, skip {counts.get('done', 0)} finished"
             + (f"; refuse {counts['changed']} CHANGED cell(s) (other settings under the same id)"
                if counts.get("changed") else ""),
             f"work: {_fmt_tokens(work['total'])} trained tokens "
             f"(cells {_fmt_tokens(sum(v for v in work['cells'].values() if v))}, teachers "
             f"{_fmt_tokens(sum(v for v in work['teachers'].values() if v))}), "
             f"{_fmt_tokens(work['ahead'])} of them still to train"
             + (f"; {work['unknown']} item(s) unknown: inputs missing" if work["unknown"] else "")]
    for name, why in damaged.items():
        lines.append(f"  damaged teacher {name}: {why}; a run refuses it (--damaged-teachers retrain "
                     "trains it again)")
    for what, err in sorted(plan.missing_data.items()):
        lines.append(f"  cannot read {'the model inputs' if what == 'model' else f'the data of {what}'}: {err}")
    return lines


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def render_cost(plan, planned, rate, devices: float | None) -> str:
    """The dry run's cost lines: device-hours and wall time of the work ahead, and their source."""
    from l2kd.cost import project

    res = plan.spec.resources
    if devices is None:  # this machine's devices of the kind the grid asks for
        import torch

        devices = float(torch.cuda.device_count() if res.gpu > 0 else (os.cpu_count() or 1))
        counted = "this machine's"
    else:
        counted = "--devices"
    c = project(plan, planned, rate, devices)
    kind = "GPU" if res.gpu > 0 else "CPU"
    per = res.gpu if res.gpu > 0 else res.cpu
    h = lambda x: f"{x:,.1f}" if x >= 10 else f"{x:.2g}"  # noqa: E731 - small grids keep 2 figures
    return (f"cost of the work ahead: {h(c['device_hours'])} {c['unit']} ({h(c['trial_hours'])} trial-hours x "
            f"{per:g} {kind} each); wall time about {_hours(c['wall_s'])} on {c['devices']:g} {kind}(s) "
            f"({counted}; {c['slots']} trial(s) at once)"
            + (f"; {c['unknown']} item(s) not counted: inputs missing" if c["unknown"] else "")
            + f"\n  rate {c['source']}; every trained token taken at this rate (other methods and shapes "
              "than the benchmarked one are estimates)")


def plan_problems(plan, damaged_teachers: str = "refuse") -> list[str]:
    """What the dry run lists that would stop a run: inputs it cannot read, cells that ran with other
    settings under the same id, damaged teachers (unless they are to be retrained)."""
    problems = [f"cannot read {'the model inputs' if what == 'model' else f'the data of {what}'}"
                for what in sorted(plan.missing_data)]
    changed = sum(plan.status(c).state == "changed" for c in plan.cells)
    if changed:
        problems.append(f"{changed} CHANGED cell(s) (run again with --fresh, or rename the grid)")
    if damaged_teachers == "refuse":
        problems += [f"a damaged teacher: {why}" for why in plan.damaged_teachers().values()]
    return problems


class GridProgress:
    """The grid's cells (state, task, progress, latest score) fed by grid events: a live table on a
    terminal; elsewhere (a log file, CI, `ray exec`) one line per event (a cell started, a stage
    finished with its score, a cell done, failed or retried) and a progress line per running cell
    at most every LOG_EVERY_S seconds, since a live table is invisible there until the grid ends."""

    LOG_EVERY_S = 60.0

    def __init__(self, plan, quiet: bool = False):
        from rich.live import Live

        self.plan, self.quiet = plan, quiet
        self.lines = not console.is_terminal  # progress as log lines instead of a live table
        self.rows: dict[str, dict] = {}
        self.logged: dict[str, float] = {}  # cell id -> when its last progress line was printed
        for c in plan.cells:
            st = plan.status(c)
            self.rows[c.id] = {"state": "done" if st.state == "done" else "pending",
                               "stage": f"{st.stages_done}/{st.stages}"}
        self.live = None if quiet or self.lines else Live(
            self.table(), console=console, refresh_per_second=2, transient=False)
        self.started = time.perf_counter()

    def __enter__(self):
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc):
        if self.live:
            self.live.update(self.table())
            self.live.__exit__(*exc)
        elif self.lines and not self.quiet:  # the final state, whole, as the last thing in the log
            console.print(self.table())

    def elapsed(self) -> float:
        return time.perf_counter() - getattr(self, "started", time.perf_counter())

    def table(self) -> Table:
        t = Table(title=f"{self.plan.spec.name}: {self.elapsed():.0f} s")
        for col in ("cell", "state", "stage", "task", "epoch", "step", "loss", "avg score"):
            t.add_column(col, no_wrap=col == "cell")
        style = {"done": "green", "error": "red", "retrying": "yellow", "running": "cyan"}
        for cid, r in self.rows.items():
            t.add_row(cid, r["state"], r.get("stage", ""), r.get("task", ""), str(r.get("epoch", "")),
                      f"{r['step']}/{r['steps']}" if "step" in r else "",
                      f"{r['loss']:.3f}" if "loss" in r else "", f"{r['avg']:.1f}" if "avg" in r else "",
                      style=style.get(r["state"]))
        return t

    def say(self, text: str) -> None:
        if self.lines:
            text = f"[{self.elapsed():6.0f} s] {text}"
        (self.live.console if self.live else console).print(text, markup=False, highlight=False,
                                                            soft_wrap=True)

    def log_cell(self, cid: str, before: dict, e: dict) -> None:
        """One line for what changed in a cell (off a terminal)."""
        row = self.rows[cid]
        if e["state"] != before.get("state") and e["state"] != "running":
            self.say(f"{cid}: {e['state']}" + (f" (stage {row['stage']})" if e["state"] != "done" else ""))
        elif e["state"] == "running" and before.get("state") != "running" and "avg" not in e:
            self.say(f"{cid}: started")
        if "avg" in e:  # a stage finished (its number counts finished stages)
            self.say(f"{cid}: stage {row['stage']} finished ({row.get('task', '')}), avg score {e['avg']:.1f}")
            self.logged[cid] = time.monotonic()
        elif "step" in e and time.monotonic() - self.logged.get(cid, 0.0) >= self.LOG_EVERY_S:
            self.logged[cid] = time.monotonic()
            self.say(f"{cid}: stage {row['stage']} ({row.get('task', '')}), epoch {row.get('epoch', '')}, "
                     f"step {row['step']}/{row['steps']}, loss {row['loss']:.3f}")

    def __call__(self, name: str, **e) -> None:
        if name == "ray":
            where = "a local Ray" if e["local"] else f"the Ray cluster at {e['address']}"
            self.say(f"running on {where}" + (f"; dashboard: {e['dashboard']}" if e.get("dashboard") else ""))
        elif name == "teacher_start":
            self.say(f"teacher {e['teacher']}: training (used by {e['users']} cells)")
        elif name == "teacher_done":
            self.say(f"teacher {e['teacher']}: {'trained' if e['trained'] else 'ready'} in {e['seconds']:.0f} s")
        elif name == "restore":
            self.say(f"restoring the Tune experiment {e['experiment']}")
        elif name == "fault":
            self.say(fault_line(e))
        elif name == "teacher_damaged":
            self.say(f"teacher {e['teacher']}: {e['why']}; training it again")
        elif name == "cell":
            row = self.rows.setdefault(e["id"], {})
            before = dict(row)
            row["state"] = e["state"]
            if "stage" in e:
                row["stage"] = f"{e['stage']}/{e['stages']}" if "stages" in e else str(e["stage"])
            if "avg" in e:  # a task boundary: its scores replace the last task's progress
                for k in ("epoch", "step", "steps", "loss"):
                    row.pop(k, None)
            for k in ("task", "epoch", "step", "steps", "loss", "avg"):
                if k in e:
                    row[k] = e[k]
            if self.lines and not self.quiet:
                self.log_cell(e["id"], before, e)
        if self.live:
            self.live.update(self.table())


def _kept(e: dict) -> str:
    k = e["tasks_kept"]
    return "nothing kept" if not k else f"task{'s 1-' if k > 1 else ' '}{k} kept"


def fault_line(e: dict) -> str:
    """One line for a failed attempt of a cell: what failed, what was lost, what happens next."""
    k, n, total = e["attempt"], e["retries"], e.get("tasks") or "?"
    lost = f"lost: the unfinished task {e['tasks_kept'] + 1} of {total} ({_kept(e)})"
    if not e["final"]:
        where = f"at task {e['tasks_kept'] + 1}" if e["tasks_kept"] else "from the start"
        return f"cell {e['cell']}: {e['cause']}; {lost}; retry {k} of {n}, resuming {where}"
    return (f"cell {e['cell']}: {e['cause']}; {lost}; no retry left ({n} allowed): run the same command "
            f"again to continue it (log: {e['log']})")


def cmd_grid(args: argparse.Namespace) -> int:
    from l2kd.gridspec import load_grid
    from l2kd.plan import build_plan, work

    spec = load_grid(args.grid, storage=args.storage, address=args.address)
    rate = None
    if args.throughput or args.devices:
        if not args.dry_run:
            raise UserError("--throughput/--devices: only with --dry-run (they project a plan's cost)")
        if not args.throughput:
            raise UserError("--devices: name a rate with --throughput (a bench JSON file or tokens/s)")
        from l2kd.cost import read_throughput

        rate = read_throughput(args.throughput)  # before the plan: a bad one is the only line
    if args.no_dashboard:
        spec = spec.model_copy(update={"ray": spec.ray.model_copy(update={"dashboard": False})})
    plan = build_plan(spec, strict_data=not args.dry_run)
    if args.dry_run:
        planned = work(plan)
        for item in render_plan(plan, planned):
            out.print(item, soft_wrap=isinstance(item, str))  # lines naming files: paths unbroken
        if rate:
            out.print(render_cost(plan, planned, rate, args.devices), markup=False, highlight=False,
                      soft_wrap=True)
        problems = plan_problems(plan, args.damaged_teachers)
        if problems:  # a pre-flight check a script can trust: the run would stop on these
            console.print(f"error: a run would stop: {'; '.join(problems)}", markup=False, highlight=False,
                          soft_wrap=True)
            return 2
        return 0
    if args.resume and not (plan.run_dir / "cells").is_dir():
        raise UserError(f"--resume: nothing to resume in {plan.run_dir}")
    plan.check_storage()  # before the live table: a refusal is then the only line
    if not args.fresh:
        plan.check_unchanged()
    plan.check_teachers(args.damaged_teachers)
    from l2kd import grid

    try:
        with GridProgress(plan, args.quiet) as progress:
            outcome = grid.run_grid(plan, on_event=progress, fresh=args.fresh,
                                    damaged_teachers=args.damaged_teachers)
    finally:
        grid.shutdown()
    bad = {k: v for k, v in outcome.cells.items() if v != "done"}
    console.print(f"grid {spec.name}: {len(outcome.cells) - len(bad)}/{len(outcome.cells)} cells done in "
                  f"{outcome.wall_s:.0f} s; teachers trained {outcome.teachers_trained}, reused "
                  f"{outcome.teachers_reused}; results in {plan.run_dir / 'cells'}")
    for cid, err in outcome.errors.items():
        console.print(f"  {cid}: {err} (log: {plan.run_dir / 'cells' / cid / 'trial.log'})", markup=False)
    retried = [f for f in outcome.faults if not f["final"]]
    if retried:  # also in each cell's cell.json, under "faults"
        console.print(f"retries: {len(retried)}", markup=False)
        for f in retried:
            console.print(f"  {f['cell']}: retry {f['attempt']} of {f['retries']} after {f['cause']} "
                          f"(resumed with {_kept(f)})", markup=False, highlight=False, soft_wrap=True)
    if not args.no_report:  # the grid's last step: the paper's tables from what is on disk
        from l2kd.report import build_report

        try:
            print_report(build_report(plan.run_dir, skip=plan.unused_teachers()))
        except UserError as e:
            console.print(f"report: {e}", markup=False, highlight=False, soft_wrap=True)
            return 1
    return 0 if outcome.ok else 1


def cmd_validate(args: argparse.Namespace) -> int:
    if args.explain:
        out.print(config_reference(), highlight=False)
        return 0
    if not args.config:
        raise UserError("validate: name a config file (or use --explain)")
    from l2kd.trialconfig import load_trial_config
    from l2kd.data import load_split

    from l2kd.model import check_model_source

    cfg = load_trial_config(args.config, args.set)
    for task in cfg.tasks:
        sizes = {split: len(load_split(task, split, cfg.data)) for split in ("train", "test")}
        out.print(f"{task}: {sizes['train']} train / {sizes['test']} test examples")
    try:
        check_model_source(cfg.model)
    except ConfigError as e:
        raise ConfigError(str(e), where=args.config) from None
    out.print(f"{args.config}: valid ({cfg.method.name}, {len(cfg.tasks)} tasks)")
    return 0


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


def cmd_data_convert(args: argparse.Namespace) -> int:
    from l2kd.data.convert import convert_sources

    outcome = convert_sources(args.sources, args.task, args.out, force=args.force, lower=args.lower)
    table = Table("task", "train", "test", "read", "skipped (why)", title="data convert")
    for r in outcome.reports:
        verb = "" if r.files else " (validated)"
        skipped = "\n".join(f"{n:,} {why}" for why, n in sorted(r.skipped.items())) or "-"
        table.add_row(r.task + verb, f"{r.written.get('train', 0):,}", f"{r.written.get('test', 0):,}",
                      f"{sum(r.read.values()):,}", skipped)
    out.print(table)
    for r in outcome.reports:
        for note in r.notes:
            out.print(f"  {r.task}: {note}", markup=False, highlight=False, soft_wrap=True)
    for task, why in outcome.not_found.items():
        out.print(f"  {task}: not converted: {why}", markup=False, highlight=False, soft_wrap=True)
    written = [r for r in outcome.reports if r.files]
    if written:
        console.print(f"wrote {sum(len(r.files) for r in written)} files for {len(written)} tasks into {args.out}")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    if args.what == "tasks":
        from l2kd.tasks import TASKS

        table = Table("task", "family", "primary metric", "paper train/test", "notes")
        for name in TASKS:
            s = TASKS.get(name)
            sizes = f"{s.paper_sizes[0]:,} / {s.paper_sizes[1]:,}" if s.paper_sizes else ""
            table.add_row(name, s.family, s.primary_metric, sizes, s.notes)
    elif args.what == "methods":
        from l2kd.methods import METHODS, method_class

        table = Table("method", "what it does", "parameters")
        for name in METHODS:
            cls = method_class(name)
            doc = (cls.__dict__.get("__doc__") or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
            params = ", ".join(f"{k}={f.default!r}" for k, f in cls.Params.model_fields.items())
            table.add_row(name, doc, params)
    else:
        from l2kd.metrics import SCORER_METRICS, SCORERS
        from l2kd.tasks import TASKS

        table = Table("scorer", "keys (figures it returns)", "direction", "primary score of")
        for name in SCORERS:
            keys = SCORER_METRICS.get(name, ())
            primary = [f"{k.name}: " + ", ".join(t for t in TASKS if TASKS.get(t).primary_metric == k.name)
                       for k in keys if any(TASKS.get(t).primary_metric == k.name for t in TASKS)]
            direction = ", ".join(sorted({"higher is better" if k.higher_is_better else "lower is better"
                                          for k in keys}))
            table.add_row(name, ", ".join(k.name for k in keys), direction, "\n".join(primary) or "-")
    out.print(table)
    return 0


def _count(text: str, least: int = 0) -> int:
    """An argparse type: a whole number, `least` or more."""
    try:
        n = int(text)
    except ValueError:
        n = least - 1
    if n < least:
        raise argparse.ArgumentTypeError(f"expected a whole number, {least} or more, got {text!r}")
    return n


def _positive_count(text: str) -> int:
    return _count(text, least=1)


def _positive(text: str) -> float:
    """An argparse type: a number above 0."""
    try:
        x = float(text)
    except ValueError:
        x = 0.0
    if not x > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return x


def _damaged_teachers_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--damaged-teachers", choices=["refuse", "retrain"], default="refuse",
                   help="a stored teacher whose files no longer match the content hashes in its "
                   "manifest (truncated, altered, half-copied): refuse it, naming the file, before "
                   "anything starts (default), or train it again")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cli.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log library messages to the console")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="run one lifelong trial from a YAML config",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=config_reference())
    p.add_argument("config", help="trial config (YAML)")
    p.add_argument("--out", help="output folder (default: runs/NAME)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set training.epochs=3 (repeatable)")
    p.add_argument("--fresh", action="store_true",
                   help="discard what the output folder holds instead of resuming from it")
    p.add_argument("--teachers", default="runs/teachers", metavar="DIR",
                   help="where L2KD teachers are kept: reused when present, trained when not "
                   "(default: runs/teachers)")
    p.add_argument("--teacher-workers", type=_count, default=0, metavar="N",
                   help="train missing teachers N at a time in background processes while the trial "
                   "runs, which waits only for the teacher its next stage needs; pays where one "
                   "process leaves the device idle (see `bench --packing`), not on a CPU that one "
                   "process already fills (default: 0, all teachers first, in this process)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--no-tensorboard", action="store_true",
                   help="write no TensorBoard event files (default: OUT/tensorboard)")
    _damaged_teachers_option(p)
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("pretrain", help="pretrain a GPT-2 base (causal LM) on plain text for model.pretrained",
                       description="Causal-LM pretraining of a GPT-2 built from the config's model "
                       "shape on plain text files or folders (each non-empty line a document), through "
                       "the trial's DeepSpeed engine. Writes a Hugging Face folder (config.json, "
                       "model.safetensors, tokenizer.json) with manifest.json (corpus hashes, tokens and "
                       "steps seen); running it again resumes from the last save.")
    p.add_argument("config", help="pretraining config (YAML), e.g. grids/bases/claims-cpu.yaml")
    p.add_argument("--out", required=True, help="the base's folder (name it in model.pretrained)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set training.steps=200 (repeatable)")
    p.add_argument("--fresh", action="store_true", help="discard what --out holds instead of resuming")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(fn=cmd_pretrain)

    p = sub.add_parser("grid", help="run a whole grid (orders x methods x seeds) on Ray Tune",
                       description="Schedules every cell of a grid file as a Ray Tune trial: teachers "
                       "first (trained once, shared), then one trial per cell. Running the same grid "
                       "again continues it: finished cells are kept, unfinished ones resume at their "
                       "next task, new cells (more seeds, methods or orders) run.")
    p.add_argument("grid", help="grid file (YAML), e.g. grids/demo.yaml")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (cells, teachers and their users, what a run would redo, the "
                   "work in trained tokens) and run nothing; exit code 2 when a problem it lists "
                   "(inputs it cannot read, CHANGED cells) would stop the run")
    p.add_argument("--throughput", metavar="BENCH.json|TOKENS_PER_S",
                   help="with --dry-run: project GPU-hours (CPU-hours) and wall time from a `cli.py bench "
                   "--out` file or a stated rate in trained tokens/s per trial")
    p.add_argument("--devices", type=_positive, metavar="N",
                   help="with --throughput: GPUs (CPUs for a CPU grid) the grid will have (default: "
                   "this machine's)")
    p.add_argument("--address", help="Ray cluster to join (overrides the file and RAY_ADDRESS)")
    p.add_argument("--storage", metavar="DIR", help="storage folder (overrides the file's `storage`)")
    p.add_argument("--resume", action="store_true",
                   help="insist on continuing an earlier run of this grid (the default when one exists)")
    p.add_argument("--fresh", action="store_true",
                   help="start every cell over (teachers, keyed by content, are kept)")
    p.add_argument("--no-dashboard", action="store_true", help="do not start the Ray dashboard")
    p.add_argument("--no-report", action="store_true",
                   help="skip the report at the end (python cli.py report RUN_DIR makes it later)")
    p.add_argument("--quiet", action="store_true", help="no live table")
    _damaged_teachers_option(p)
    p.set_defaults(fn=cmd_grid)

    p = sub.add_parser("bench", help="measure a trial's speed here against the reference's way",
                       description="Training tokens/s and MFU (fast path, fast path on the paper's "
                       "batches, reference-style path), loss faithfulness, Word-KD's extra cost, "
                       "generation and evaluation decoding tokens/s, the projected wall time of the "
                       "whole trial; optionally trial packing and a profile. A benchmark, not a test.")
    p.add_argument("config", help="a trial config, or a grid file (its first cell is measured)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--steps", type=_positive_count, default=10, help="timed training steps per path (default 10)")
    p.add_argument("--peak-tflops", type=_positive, help="the device's peak TFLOP/s for MFU (known GPUs "
                   "are looked up; a CPU needs this)")
    p.add_argument("--packing", type=_positive_count, default=1, metavar="K",
                   help="also run K trials' training at once on this device and report the gain")
    p.add_argument("--profile", action="store_true",
                   help="print the top operators of the fast training path and of a decoding batch")
    p.add_argument("--parts", type=bench_parts, default="training,decoding", metavar="PARTS",
                   help="what to measure: training, decoding or both (default training,decoding)")
    p.add_argument("--no-decode-graphs", action="store_true",
                   help="decode eagerly on a GPU (CUDA graphs are on by default there)")
    p.add_argument("--out", metavar="FILE.json", help="also write every figure as JSON")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("validate", help="check a trial config and its data files, run nothing")
    p.add_argument("config", nargs="?", help="trial config (YAML)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--explain", action="store_true", help="print every config key with its meaning")
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("report", help="tables, CL figures and learning curves of every result in a run folder")
    p.add_argument("run_dir", help="a grid's run folder, or any folder holding trial results.json files")
    p.add_argument("--out", help="report folder (default: RUN_DIR/report); replaced as a whole")
    p.add_argument("--group-by", nargs="+", action="extend", default=[], metavar="FIELD",
                   help="split the report by these config fields (e.g. training.epochs) instead of "
                   "refusing results whose settings differ (name RUN_DIR before this option)")
    p.add_argument("--rescore", action="store_true",
                   help="first score every stored prediction again with today's metrics (no training), "
                   "write results.rescored.json beside each results.json, and report those "
                   "(default folder: RUN_DIR/report-rescored)")
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser("data", help="data tools")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser(
        "convert", help="convert raw public data into LAMOL-format task files",
        description="Convert raw public data (e.g. ../shared/data/woz2.0-nbt) into the LAMOL files "
        "{task}_to_squad-{train,test}-v2.0.json, the gold {task}_answers.json the WOZ/WikiSQL metrics "
        "need, and {task}_conversion.json (counts, choices, input hashes). Files already in LAMOL "
        "format (E2E, RNNLG) are validated and counted, not copied.")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="raw data folder(s), or a folder holding them (e.g. ../shared/data)")
    p.add_argument("--task", required=True,
                   help="the task to make (woz.en, wikisql, cnn_dailymail, ag, ...), or 'all' for every "
                   "task whose raw files are among the sources")
    p.add_argument("--out", help="folder the converted files go to")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    p.add_argument("--lower", action="store_true",
                   help="lower-case contexts, questions and answers, as LAMOL's decaNLP export did")
    p.set_defaults(fn=cmd_data_convert)

    p = sub.add_parser("ls", help="list registered tasks, methods or metrics")
    p.add_argument("what", choices=["tasks", "methods", "metrics"])
    p.set_defaults(fn=cmd_ls)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # trial.log files get INFO; the console less
        handler.setLevel(logging.INFO if args.verbose else logging.WARNING)
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed", "transformers"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # SIGTERM (a scheduler, `timeout`, a cluster taking the node back) and SIGHUP (a lost SSH
    # session) unwind like Ctrl-C, so what the command started is stopped on the way out: teachers
    # training in background processes too
    signal.signal(signal.SIGTERM, _terminated)
    signal.signal(signal.SIGHUP, _terminated)
    try:
        return args.fn(args)
    except UserError as e:
        console.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt as e:
        # a library may catch the signal's exception and raise a plain KeyboardInterrupt (ray.wait does)
        signum = getattr(e, "signum", _signalled[-1] if _signalled else signal.SIGINT)
        how = "" if signum == signal.SIGINT else f" ({signal.Signals(signum).name})"
        console.print(f"interrupted{how}: run the same command again to continue after the last finished "
                      "stage", markup=False, soft_wrap=True)
        return 128 + signum  # 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where the program is, like Ctrl-C's KeyboardInterrupt."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__()
        self.signum = signum


_signalled: list[int] = []


def _terminated(signum, frame) -> None:
    _signalled.append(signum)
    raise Terminated(signum)


def _raise_if_signalled() -> None:
    """Raise a signal's Terminated again: raised inside a finaliser (a `__del__` the garbage collector
    ran when the signal came), Python prints it and goes on, and the command would not stop."""
    if _signalled:
        raise Terminated(_signalled[-1])


if __name__ == "__main__":
    sys.exit(main())
