#!/usr/bin/env python
"""l2kd command line: thin subcommands over the library.

    python cli.py grid GRID.yaml           every (order x method x seed) cell of a grid, on Ray Tune
    python cli.py train TRIAL.yaml         one lifelong trial, with a live progress display
    python cli.py pretrain BASE.yaml --out DIR   a GPT-2 base on plain text, for model.pretrained
    python cli.py bench TRIAL.yaml         its speed here, against the reference's way
    python cli.py validate FILE            check a trial config and its data without running
    python cli.py report RUN_DIR           the paper's tables, CL figures and curves of a run folder
    python cli.py data convert SOURCE... --task TASK --out DIR    raw public data -> LAMOL files
    python cli.py ls {tasks,methods,metrics}

Bad input (a config key, a data file, a task name) is reported as one line, exit code 2.

This file is the parser and `main` (errors and signals -> exit codes); each subcommand, with all it
prints for people, is a module of l2kd/cli/.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from l2kd.errors import UserError  # noqa: E402

from l2kd.cli import signals  # noqa: E402
from l2kd.cli.bench import bench_parts, cmd_bench  # noqa: E402
from l2kd.cli.common import console, fit_to_streams  # noqa: E402
from l2kd.cli.grid import cmd_grid  # noqa: E402
from l2kd.cli.inputs import cmd_data_convert, cmd_ls, cmd_validate, config_reference  # noqa: E402
from l2kd.cli.pretrain import cmd_pretrain  # noqa: E402
from l2kd.cli.report import cmd_report  # noqa: E402
from l2kd.cli.train import cmd_train  # noqa: E402


# --------------------------------------------------------------------------- the parser
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
    fit_to_streams()
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # trial.log files get INFO; the console less
        handler.setLevel(logging.INFO if args.verbose else logging.WARNING)
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed", "transformers"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # SIGTERM (a scheduler, `timeout`, a cluster taking the node back) and SIGHUP (a lost SSH
    # session) unwind like Ctrl-C, so what the command started is stopped on the way out: teachers
    # training in background processes too
    signal.signal(signal.SIGTERM, signals.terminated)
    signal.signal(signal.SIGHUP, signals.terminated)
    try:
        return args.fn(args)
    except UserError as e:
        console.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt as e:
        # a library may catch the signal's exception and raise a plain KeyboardInterrupt (ray.wait does)
        signum = getattr(e, "signum", signals.signalled[-1] if signals.signalled else signal.SIGINT)
        how = "" if signum == signal.SIGINT else f" ({signal.Signals(signum).name})"
        console.print(f"interrupted{how}: run the same command again to continue after the last finished "
                      "stage", markup=False, soft_wrap=True)
        return 128 + signum  # 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP


if __name__ == "__main__":
    sys.exit(main())
