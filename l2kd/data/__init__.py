"""Data: LAMOL JSON files, encoding, batching and the built-in synthetic benchmark."""

from __future__ import annotations

import random
from pathlib import Path

from ..config import DataConfig
from ..errors import DataError
from ..tasks import TASKS
from .gold import attach_gold, gold_file, read_gold
from .lamol_json import Example, read_lamol
from .synthetic import ensure_builtin_files

__all__ = ["Example", "data_dir", "split_path", "load_split", "cap_examples"]


def data_dir(cfg: DataConfig) -> Path:
    """The folder the task files are read from; 'builtin' generates the synthetic benchmark."""
    if cfg.dir == "builtin":
        return ensure_builtin_files()
    return Path(cfg.dir).expanduser()


def split_path(task: str, split: str, cfg: DataConfig) -> Path:
    spec = TASKS.get(task)
    if cfg.dir == "builtin" and spec.family != "synthetic":
        raise DataError(f"data.dir: 'builtin' holds only the synthetic tasks, not {task!r}; "
                        "point data.dir at a folder with its LAMOL files")
    folder = Path(cfg.distil_dir).expanduser() if split == "distil" and cfg.distil_dir else data_dir(cfg)
    path = folder / spec.file(split)  # type: ignore[arg-type]
    if not path.is_file():
        hint = " (`python cli.py data convert` makes it from raw data)" if spec.converter not in (None, "lamol") else ""
        raise DataError(f"{path}: no such file (task {task}, {split} split){hint}")
    return path


def cap_examples(examples: list[Example], cap: int | None, seed: int) -> list[Example]:
    """Keep a seeded random subset of `cap` examples, in file order (files may be grouped)."""
    if cap is None or cap >= len(examples):
        return examples
    keep = sorted(random.Random(seed).sample(range(len(examples)), cap))
    return [examples[i] for i in keep]


def load_split(task: str, split: str, cfg: DataConfig) -> list[Example]:
    path = split_path(task, split, cfg)
    examples = read_lamol(path)
    spec = TASKS.get(task)
    if split == "test" and spec.gold:  # WOZ/WikiSQL: their metrics need the answers file too
        gold_path = path.parent / gold_file(task)
        examples = attach_gold(examples, read_gold(gold_path, spec.gold), gold_path)
    cap = cfg.max_test_examples if split == "test" else cfg.max_train_examples
    return cap_examples(examples, cap, cfg.subset_seed)
