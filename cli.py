#!/usr/bin/env python
"""l2kd command line: thin subcommands over the library. Everything printed for people lives here.

    python cli.py train TRIAL.yaml         one lifelong trial, with a live progress display
    python cli.py validate FILE            check a trial config and its data without running
    python cli.py data convert SOURCE... --task TASK --out DIR    raw public data -> LAMOL files
    python cli.py ls {tasks,methods,metrics}

Bad input (a config key, a data file, a task name) is reported as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from l2kd.errors import UserError  # noqa: E402

console = Console(stderr=True)
out = Console()


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
            shown = {k: round(v, 1) for k, v in e["scores"].items()}
            p.console.print(f"  eval ({e['tag']}) {e['task']}: {shown}", markup=False, highlight=False)
        elif name == "teacher":
            p.console.print(f"training the teacher of {e['task']} -> {e['path']}", markup=False, soft_wrap=True)
        elif name == "resume":
            p.console.print(f"  resuming after stage {e['stages_done']}")


# --------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    from l2kd.config import load_trial_config
    from l2kd.methods import make_method
    from l2kd.teachers import TeacherStore
    from l2kd.trial import run_trial

    cfg = load_trial_config(args.config, args.set)
    workdir = Path(args.out or Path("runs") / (cfg.name or "trial"))
    if args.fresh and workdir.exists():
        shutil.rmtree(workdir)
    start = time.perf_counter()
    with TrialProgress(args.quiet) as progress:
        teachers = {}
        if make_method(cfg.method).teachers_needed(cfg):
            store = TeacherStore(Path(args.teachers))
            teachers = store.ensure_all(cfg, on_event=progress)
        result = run_trial(cfg, workdir, teachers=teachers, on_event=progress, resume=not args.fresh)
    out.print(render_matrix(result, f"R: {cfg.name} ({cfg.method.name}, seed {cfg.seed})"))
    console.print(f"done in {time.perf_counter() - start:.1f} s; results: {workdir / 'results.json'}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    if args.explain:
        out.print(config_reference(), highlight=False)
        return 0
    if not args.config:
        raise UserError("validate: name a config file (or use --explain)")
    from l2kd.config import load_trial_config
    from l2kd.data import load_split

    cfg = load_trial_config(args.config, args.set)
    for task in cfg.tasks:
        sizes = {split: len(load_split(task, split, cfg.data)) for split in ("train", "test")}
        out.print(f"{task}: {sizes['train']} train / {sizes['test']} test examples")
    out.print(f"{args.config}: valid ({cfg.method.name}, {len(cfg.tasks)} tasks)")
    return 0


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
            doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
            params = ", ".join(f"{k}={f.default!r}" for k, f in cls.Params.model_fields.items())
            table.add_row(name, doc, params)
    else:
        from l2kd.metrics import SCORERS

        table = Table("scorer")
        for name in SCORERS:
            table.add_row(name)
    out.print(table)
    return 0


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
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("validate", help="check a trial config and its data files, run nothing")
    p.add_argument("config", nargs="?", help="trial config (YAML)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--explain", action="store_true", help="print every config key with its meaning")
    p.set_defaults(fn=cmd_validate)

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
    try:
        return args.fn(args)
    except UserError as e:
        console.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted: run the same command again to continue after the last finished stage")
        return 130


if __name__ == "__main__":
    sys.exit(main())
