"""The commands about what a trial takes in, which train nothing: `cli.py validate` (a config and its
data; `--explain`: every config key), `cli.py ls` (registered tasks, methods, metrics) and
`cli.py data convert` (raw public data -> LAMOL files)."""

from __future__ import annotations

import argparse
import sys
import typing

from rich.table import Table

from l2kd.errors import ConfigError, UserError

from .common import console, out


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


def cmd_validate(args: argparse.Namespace) -> int:
    if args.explain:
        out.print(config_reference(), highlight=False)
        return 0
    if not args.config:
        raise UserError("validate: name a config file (or use --explain)")
    from l2kd.trialconfig import load_trial_config
    from l2kd.data import load_split

    from l2kd.backbone import check_model_source

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
