"""Loading a run folder: every `results.json` under it, what role each trial plays, and whether
they belong in one report.

A grid writes `cells/<id>/results.json` with a `cell.json` beside it (order id, method label,
seed) and `teachers/<task>-<key>/results.json`; a folder of plain `cli.py train` runs has no
cell.json, so the order id, label and seed come from the result itself. Results are found by
globbing, at any depth.

Roles: method `single` gives the Single reference rows (teachers are exactly these); a trial with
one stage over several tasks (multitask) gives the order-free Multi rows; everything else is a
lifelong row. Rows are labelled so that variants stay apart: the paper's names for the
references, and for any label whose trials differ in method parameters, the differing ones.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import yaml

from ..errors import ArtifactError, ConfigError
from ..identity import result_identity
from ..io import read_json
from ..methods import LIFELONG, MULTITASK, SINGLE, facts, kind_of
from ..registry import did_you_mean
from ..results import RESULTS_FILE, TrialResult, find_result_files

CELL_FILE = "cell.json"
GRID_FILE = "grid.yaml"



@dataclass
class Trial:
    path: Path  # the folder holding results.json
    rel: str  # that folder relative to the run folder, for messages
    result: TrialResult
    role: str  # "single" | "multitask" | "lifelong"
    base_label: str  # cell.json's method label, or the method name
    order_id: str
    seed: int
    label: str = ""  # the row name, set once every trial is loaded
    config: dict[str, Any] = field(default_factory=dict)  # flattened full config (+ primary.*)
    experiment_name: str = ""  # the grid experiment of its cell ("" outside a grid: teachers, runs)
    overridden: frozenset[str] = frozenset()  # config fields its grid row sets on purpose

    @property
    def order(self) -> tuple[str, ...]:
        return tuple(self.result.tasks)

    @property
    def complete(self) -> bool:
        return bool(self.result.complete) and len(self.result.R) == len(self.result.stages)

    @property
    def R(self) -> np.ndarray:
        return np.asarray(self.result.R, dtype=float)

    def final(self) -> dict[str, float]:
        """Each task's score after the last stage."""
        return dict(zip(self.result.tasks, self.result.R[-1]))

    def baseline(self) -> list[float] | None:
        b = self.result.baseline
        if not b:
            return None
        return [b.get(t, {}).get(self.result.primary[t], np.nan) for t in self.result.tasks]

    def experiment(self) -> dict[str, Any]:
        """The fields that must agree for trials to share a table. Fields the trial's grid row
        overrides on purpose (e.g. the paper's 27-epoch "Multi long" rows) are its own business."""
        return {k: v for k, v in result_identity(self.config).items() if not _overridden(k, self.overridden)}


# --------------------------------------------------------------------------- reading
def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def overridden_fields(overrides: Any) -> frozenset[str]:
    """The config fields a grid row's overrides set, as `section.key` prefixes: a row's section
    replaces each key it names whole (gridspec's `trial_dict`), so a row that names `model.config`
    owns every `model.config.*` field, the ones its config leaves out included."""
    if not isinstance(overrides, dict):
        return frozenset()
    return frozenset(f"{section}.{key}" for section, keys in overrides.items() if isinstance(keys, dict)
                     for key in keys)


def _overridden(field_name: str, prefixes: frozenset[str]) -> bool:
    return any(field_name == p or field_name.startswith(p + ".") for p in prefixes)


def _read(path: Path, what: str) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path}: unreadable {what} ({e.__class__.__name__}: {e})") from None


def order_key(order: Iterable[str]) -> str:
    return ">".join(order)


def _role(r: TrialResult) -> str:
    if kind_of(r.method) == SINGLE:
        return SINGLE
    if len(r.stages) == 1 and len(r.tasks) > 1:
        return MULTITASK
    return LIFELONG


def load_trial(results_file: Path, run_dir: Path) -> Trial:
    result = TrialResult.from_dict(_read(results_file, "result file"), str(results_file))
    folder = results_file.parent
    cell_file = folder / CELL_FILE
    cell = _read(cell_file, "cell file") if cell_file.is_file() else {}
    if not isinstance(cell, dict):
        raise ArtifactError(f"{cell_file}: expected a JSON object")
    for key, ok in (("order", lambda v: isinstance(v, list)), ("seed", lambda v: isinstance(v, int)),
                    ("overrides", lambda v: v is None or isinstance(v, dict))):
        if key in cell and not ok(cell[key]):
            raise ArtifactError(f"{cell_file}: {key}: unexpected value {cell[key]!r}"[:300])
    if "order" in cell and list(cell["order"]) != list(result.tasks):
        raise ArtifactError(f"{cell_file}: order {cell['order']} differs from its results.json "
                            f"tasks {result.tasks}")
    role = _role(result)
    base = str(cell.get("method") or result.method)
    order_id = str(cell.get("order_id") or order_key(result.tasks))
    seed = int(cell.get("seed", result.seed))
    config = flatten(result.config)
    config.update({f"primary.{t}": m for t, m in result.primary.items()})
    config["seed"] = seed
    try:
        rel = str(folder.relative_to(run_dir))
    except ValueError:
        rel = str(folder)
    overrides = cell.get("overrides") or {}
    return Trial(path=folder, rel=rel if rel != "." else folder.name, result=result, role=role,
                 base_label=base, order_id=order_id, seed=seed, config=config,
                 experiment_name=str(cell.get("experiment") or ""),
                 overridden=overridden_fields(overrides))


def find_results(run_dir: Path, skip: Iterable[Path] = (), name: str = RESULTS_FILE) -> list[Path]:
    """Every result file under `run_dir`, except in hidden folders and below the folders `skip`."""
    return find_result_files(run_dir, skip, name)


def load_trials(run_dir: str | Path, skip: Iterable[Path] = (), name: str = RESULTS_FILE) -> list[Trial]:
    """Every trial's result under `run_dir`; `name`: which result file (the rescored ones too)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ArtifactError(f"{run_dir}: no such folder")
    files = find_results(run_dir, skip, name)
    if not files:
        raise ArtifactError(f"{run_dir}: no {name} under this folder (is it a run folder?)")
    return [load_trial(f, run_dir) for f in files]


# --------------------------------------------------------------------------- labels
def _show(v: Any) -> str:
    return json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else str(v)


def _reference_name(t: Trial) -> str:
    """The paper's names for plain references; a grid row's own label (e.g. `multi_long`) when it
    gave one, so two multitask rows of one grid stay two rows."""
    qa = "QA" if t.result.method_params.get("qa_only") else "QA+LM"
    if t.base_label != t.result.method:
        return f"{t.base_label} ({qa})"
    row = facts(t.result.method).reference_row if facts(t.result.method) else None  # "Single", "Multi"
    return f"{row} ({qa})" if row else t.base_label


def assign_labels(trials: list[Trial]) -> None:
    """Row names: the paper's for references, the method label otherwise; when trials under one
    name differ in method parameters, the differing ones are appended so the rows stay apart."""
    groups: dict[tuple[str, str], list[Trial]] = defaultdict(list)
    for t in trials:
        name = t.base_label if t.role == "lifelong" else _reference_name(t)
        groups[(t.role, name)].append(t)
    for (role, name), members in groups.items():
        params = [t.result.method_params for t in members]
        keys = sorted({k for p in params for k in p})
        differ = [k for k in keys if len({_show(p.get(k)) for p in params}) > 1
                  and not (role != "lifelong" and k == "qa_only")]
        for t in members:
            suffix = ", ".join(f"{k}={_show(t.result.method_params.get(k))}" for k in differ)
            t.label = f"{name}({suffix})" if suffix else name


def _check_duplicates(trials: list[Trial]) -> None:
    seen: dict[tuple, Trial] = {}
    for t in trials:
        if not t.complete:
            continue
        key = (t.role, t.label, t.order if t.role == "lifelong" else tuple(sorted(t.order)), t.seed)
        if key in seen:
            raise ArtifactError(f"{t.rel} and {seen[key].rel}: two complete results for {t.label} on "
                                f"{' -> '.join(t.order)} with seed {t.seed}; keep one of them")
        seen[key] = t
    orders: dict[str, tuple[str, ...]] = {}
    for t in trials:
        if t.role == "lifelong" and orders.setdefault(t.order_id, t.order) != t.order:
            raise ArtifactError(f"{t.rel}: order id {t.order_id!r} names two task orders: "
                                f"{' -> '.join(orders[t.order_id])} and {' -> '.join(t.order)}")


# --------------------------------------------------------------------------- belonging together
def _values_line(field_name: str, by_value: dict[str, list[Trial]]) -> str:
    parts = []
    for value, members in by_value.items():
        names = ", ".join(m.rel for m in members[:2]) + (f" +{len(members) - 2}" if len(members) > 2 else "")
        parts.append(f"{value} ({names})")
    return f"{field_name} = " + " vs ".join(parts)


def clashes(trials: list[Trial]) -> dict[str, dict[str, list[Trial]]]:
    """Experiment fields whose values differ between trials: field -> value -> trials."""
    exps = [t.experiment() for t in trials]
    out = {}
    for f in sorted({k for e in exps for k in e}):
        by_value: dict[str, list[Trial]] = defaultdict(list)
        for t, e in zip(trials, exps):
            # primary.<task> only exists where the task does; a missing task is not a clash, and a
            # field the trial's grid row overrides on purpose takes no part
            if (f.startswith("primary.") and f not in e) or _overridden(f, t.overridden):
                continue
            by_value[_show(e.get(f, "<unset>"))].append(t)
        if len(by_value) > 1:
            out[f] = dict(by_value)
    return out


def check_together(trials: list[Trial], where: str) -> None:
    """Refuse trials that do not belong in one table, naming the clashing fields and values."""
    found = clashes(trials)
    if found:
        detail = "; ".join(_values_line(f, v) for f, v in found.items())
        raise ArtifactError(f"{where}: these results do not belong together: {detail}; report them "
                            f"separately or split with --group-by {' '.join(found)}")
    sets = defaultdict(list)
    for t in trials:
        if t.role == "lifelong":
            sets[tuple(sorted(t.order))].append(t)
    if len(sets) > 1:
        detail = " vs ".join(f"{{{', '.join(k)}}} ({v[0].rel})" for k, v in sets.items())
        raise ArtifactError(f"{where}: lifelong trials over different task sets: {detail}; "
                            "report each set's folder separately")
    _check_duplicates(trials)


def group_trials(trials: list[Trial], group_by: Iterable[str]) -> dict[str, list[Trial]]:
    """Split trials by the values of `group_by` fields (dotted config keys): title -> trials."""
    group_by = list(group_by)
    if not group_by:
        return {"": trials}
    known = sorted({k for t in trials for k in t.config})
    for f in group_by:
        if f not in known:
            raise ConfigError(f"--group-by: unknown field {f!r}; {did_you_mean(f, known)}")
    groups: dict[str, list[Trial]] = defaultdict(list)
    for t in trials:
        title = ", ".join(f"{f}={_show(t.config.get(f, '<unset>'))}" for f in group_by)
        groups[title].append(t)
    return dict(sorted(groups.items(), key=lambda kv: natural_key(kv[0])))


# --------------------------------------------------------------------------- task and order order
def natural_key(s: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)]


def grid_tasks(run_dir: Path, experiment: str = "") -> list[str]:
    """The grid file's task list for `experiment` (or its only/first one), when the run folder has a
    grid file it can read: `experiments: [{name, tasks}]`, or top-level `tasks` / first of `orders`."""
    path = Path(run_dir) / GRID_FILE
    if not path.is_file():
        return []
    try:
        grid = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return []
    if not isinstance(grid, dict):
        return []
    exps = grid.get("experiments")
    if isinstance(exps, list):
        for e in exps:
            if isinstance(e, dict) and (not experiment or e.get("name") == experiment):
                tasks = e.get("tasks")
                return [str(t) for t in tasks] if isinstance(tasks, list) else []
        return []
    tasks = grid.get("tasks")
    if isinstance(tasks, list) and all(isinstance(t, str) for t in tasks):
        return tasks
    orders = grid.get("orders")
    if isinstance(orders, list) and orders and isinstance(orders[0], list):
        return [str(t) for t in orders[0]]
    return []


def split_experiments(trials: list[Trial]) -> dict[str, list[Trial]]:
    """A grid of several experiments (different task sets) -> one group each. Trials outside any
    cell (teachers, plain runs) join every experiment whose tasks include theirs."""
    names = sorted({t.experiment_name for t in trials if t.experiment_name})
    if len(names) <= 1:
        return {names[0] if names else "": trials}
    groups = {n: [t for t in trials if t.experiment_name == n] for n in names}
    tasks = {n: {task for t in members for task in t.order} for n, members in groups.items()}
    for t in trials:
        if not t.experiment_name:
            for n in names:
                if set(t.order) <= tasks[n]:
                    groups[n].append(t)
    return groups


def canonical_tasks(trials: list[Trial], preferred: list[str]) -> list[str]:
    """Table columns: the grid's task list, else the first lifelong order, then any other task."""
    present = {t for tr in trials for t in tr.order}
    lifelong = sorted((t for t in trials if t.role == "lifelong"), key=lambda t: natural_key(t.order_id))
    out = [t for t in preferred if t in present]
    for tr in lifelong + [t for t in trials if t.role != "lifelong"]:
        out += [t for t in tr.order if t not in out]
    return out
