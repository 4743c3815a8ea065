"""Grid files as written: a file may start from others (`include:`), merged before it is validated.

    include: base.yaml            # or a list, applied in order; paths relative to this file
    experiments:
      - include: nlg.yaml         # that grid's experiment: its name, tasks, orders and data
      - {name: tc, tasks: [...]}

A top-level `include` starts from the named files' keys (each with its own includes resolved); this
file's keys override them: mappings are merged key by key, lists and other values are replaced. Two
keys are never taken from an included file: `name` (a grid is named by its own file, so its run
folder is its own), and the experiments in the other spelling: a file that lists `experiments`
replaces an included `tasks`/`orders`, and one that gives `tasks` replaces included `experiments`.
An `experiments` entry with `include` is the experiment of that grid file (for a file written with
top-level `tasks`: its name, tasks, orders and `data` section; for one with `experiments`: the entry
of the same `name`, or its only one), the entry's other keys merged over it. A missing file or a
cycle is one line naming the including file and the key. Paths inside the files (data, tokenizer,
storage) keep their meaning: relative to the directory the command runs from, as without include.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import load_yaml
from .errors import ConfigError

INCLUDE = "include"
SHORTHAND = ("tasks", "orders")  # a one-experiment grid's experiment, written at the top level
EXPERIMENT_KEYS = ("name", *SHORTHAND, "data")  # what a grid's experiment is made of


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on `base`: mappings merged key by key (recursively), anything else replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def read_grid_file(path: str | Path, *, known_keys: frozenset[str] = frozenset(),
                   _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The grid file at `path` with every include resolved (not yet validated). `known_keys`: the
    top-level keys a grid may hold, checked in each file so an error names the file that has it."""
    path = Path(path)
    raw = load_yaml(path)
    chain = (*_chain, path.resolve())
    base: dict[str, Any] = {}
    for name in _include_list(raw.pop(INCLUDE, None), f"{path}: {INCLUDE}"):
        target = _target(path, name, INCLUDE, chain)
        included = read_grid_file(target, known_keys=known_keys, _chain=chain)
        included.pop("name", None)
        base = merged(base, included)
    if known_keys:
        unknown = sorted(set(raw) - known_keys)
        if unknown:
            from .registry import did_you_mean

            known = sorted(known_keys | {INCLUDE})
            raise ConfigError(f"{path}: {unknown[0]}: unknown key; {did_you_mean(unknown[0], known)}")
    if "experiments" in raw:
        raw["experiments"] = _experiments(raw["experiments"], path, chain, known_keys)
        for key in SHORTHAND:
            base.pop(key, None)
    if "tasks" in raw:
        base.pop("experiments", None)
    return merged(base, raw)


def _experiments(entries: Any, path: Path, chain: tuple[Path, ...], known_keys: frozenset[str]) -> Any:
    """The `experiments` list with each `include:` entry replaced by the experiment it names."""
    if not isinstance(entries, list):
        return entries  # the grid's validation says what is wrong with it
    out = []
    for k, entry in enumerate(entries):
        if isinstance(entry, dict) and INCLUDE in entry:
            where = f"experiments[{k}].{INCLUDE}"
            entry = dict(entry)
            name = entry.pop(INCLUDE)
            if not isinstance(name, str):
                raise ConfigError(f"{path}: {where}: expected a grid file name, got {name!r}")
            target = _target(path, name, where, chain)
            grid = read_grid_file(target, known_keys=known_keys, _chain=chain)
            entry = merged(_experiment_of(grid, target, entry.get("name"), f"{path}: {where}"), entry)
        out.append(entry)
    return out


def _experiment_of(grid: dict[str, Any], source: Path, wanted: Any, where: str) -> dict[str, Any]:
    """The experiment a grid file defines: its top-level one, or its entry named `wanted`."""
    if "experiments" not in grid:
        if "tasks" not in grid:
            raise ConfigError(f"{where}: {source} names no experiment (no tasks, no experiments)")
        exp = {k: grid[k] for k in EXPERIMENT_KEYS if k in grid}
        exp.setdefault("name", source.stem)
        return exp
    exps = [e for e in grid["experiments"] if isinstance(e, dict)]
    names = [e.get("name") for e in exps]
    if wanted is None and len(exps) == 1:
        return exps[0]
    if wanted in names:
        return exps[names.index(wanted)]
    raise ConfigError(f"{where}: {source} has the experiments {names}; name one of them (name: ...)")


def _include_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{where}: expected a grid file name or a list of them, got {value!r}")
    return names


def _target(path: Path, name: str, where: str, chain: tuple[Path, ...]) -> Path:
    """The included file, relative to the including one; a missing one or a cycle refused."""
    target = path.parent / Path(name).expanduser()
    if not target.is_file():
        raise ConfigError(f"{path}: {where}: {name}: no such file ({target})")
    if target.resolve() in chain:
        cycle = " -> ".join(p.name for p in (*chain, target.resolve()))
        raise ConfigError(f"{path}: {where}: {name}: a cycle of includes ({cycle})")
    return target
