"""`cli.py grid`: the dry run's plan and cost, the live table (or log lines) of a running grid, its
summary and faults, and the report at its end."""

from __future__ import annotations

import argparse
import os
import time

from rich.table import Table

from l2kd.errors import UserError

from .common import console, out
from .report import print_report


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
