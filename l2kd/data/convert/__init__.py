"""Converters from raw public data to the LAMOL format (`python cli.py data convert`).

Each task names its converter (TaskSpec.converter, the source kind): `woz`, `wikisql`,
`cnn_dailymail`, `classification`, or `lamol` for files already in LAMOL format (validated, not
written). For every converted task the output folder gets, named as the reference names them:

    {task}_to_squad-train-v2.0.json, {task}_to_squad-test-v2.0.json
    {task}_answers.json        the gold records the WOZ/WikiSQL metrics need (l2kd/data/gold.py)
    {task}_conversion.json     what was read, written and skipped (and why), the choices made, and
                               the SHA-256 of every input file

Outputs are deterministic (the same inputs give the same bytes), an existing output is replaced only
with `force`, and nothing is written until every asked-for task has converted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ...errors import ArtifactError, ConfigError, DataError
from ...io import file_in_the_way, file_sha256, write_json
from ...registry import Registry
from ...tasks import TASKS
from ..gold import gold_file
from ..lamol_json import Example, to_lamol
from . import classification, cnn, lamol, wikisql, woz
from .base import Converted, ConvertReport, MissingInputs

ConvertFn = Callable[[str, list[Path]], Converted]
CONVERTERS: Registry[ConvertFn] = Registry("converter")
CONVERTERS.register("woz", woz.convert)
CONVERTERS.register("wikisql", wikisql.convert)
CONVERTERS.register("cnn_dailymail", cnn.convert)
CONVERTERS.register("classification", classification.convert)
CONVERTERS.register("lamol", lamol.validate)

__all__ = ["CONVERTERS", "ConvertOutcome", "ConvertReport", "convert_sources", "convertible_tasks"]


@dataclass
class ConvertOutcome:
    reports: list[ConvertReport]
    not_found: dict[str, str] = field(default_factory=dict)  # task -> why (only with task 'all')


def convertible_tasks() -> list[str]:
    return [t for t in TASKS if TASKS.get(t).converter]


def _tasks(task: str) -> list[str]:
    if task == "all":
        return convertible_tasks()
    spec = TASKS.get(task, where="--task")
    if not spec.converter:
        raise ConfigError(f"--task: {task} has no converter (choose from {', '.join(convertible_tasks())} or all)")
    return [task]


def _lowered(examples: list[Example]) -> list[Example]:
    return [Example(e.id, e.context.lower(), e.question.lower(), tuple(a.lower() for a in e.answers), e.index)
            for e in examples]


def _outputs(c: Converted, lower: bool) -> dict[str, object]:
    """File name -> JSON content of one converted task."""
    spec = TASKS.get(c.task)
    train, test = (_lowered(c.train), _lowered(c.test)) if lower else (c.train, c.test)
    files: dict[str, object] = {spec.file("train"): to_lamol(train), spec.file("test"): to_lamol(test)}
    if c.gold is not None:
        files[gold_file(c.task)] = c.gold
    if lower:
        c.report.notes.append("lower-cased (context, question, answers; not the gold file), as "
                              "LAMOL's decaNLP export")
    c.report.files = sorted(files) + [f"{c.task}_conversion.json"]
    summary = c.report.to_dict()
    summary["inputs"] = {name: {"sha256": file_sha256(path)} for name, path in sorted(c.report.inputs.items())}
    files[f"{c.task}_conversion.json"] = summary
    return files


def convert_sources(sources: list[str | Path], task: str, out: str | Path | None, *, force: bool = False,
                    lower: bool = False) -> ConvertOutcome:
    """Convert `task` (or every task whose raw files are found, for 'all') from the raw folders
    `sources` into `out`; return what each converter read, wrote and skipped."""
    paths = [Path(s).expanduser() for s in sources]
    for p in paths:
        if not p.is_dir():
            raise DataError(f"{p}: no such folder")
    outcome = ConvertOutcome([])
    done: list[Converted] = []
    for t in _tasks(task):
        try:
            done.append(CONVERTERS.get(TASKS.get(t).converter)(t, paths))
        except MissingInputs as e:
            if task != "all":
                raise
            outcome.not_found[t] = str(e)
    if not done:
        raise DataError(f"no task's raw files found in {', '.join(map(str, paths))}")
    to_write = {c.task: _outputs(c, lower) for c in done if c.write}
    if to_write and out is None:
        raise ConfigError("--out: name the folder the converted files go to")
    folder = Path(out).expanduser() if out is not None else None
    blocking = file_in_the_way(folder) if folder is not None and to_write else None
    if blocking is not None:
        raise ConfigError(f"--out: {blocking} is a file, not a folder")
    if folder is not None and not force:
        for files in to_write.values():
            for name in files:
                if (folder / name).exists():
                    raise ArtifactError(f"{folder / name}: exists; add --force to replace it")
    for files in to_write.values():
        for name, content in files.items():
            write_json(folder / name, content)  # type: ignore[operator]
    outcome.reports = [c.report for c in done]
    return outcome
