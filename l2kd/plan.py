"""A grid's plan: its cells, the teachers they share, what is already on disk, and the work ahead.

Pure bookkeeping, no Ray: `cli.py grid --dry-run` prints it, and the grid runner executes it.

Run folder layout (RUN_DIR = STORAGE/NAME):
    RUN_DIR/grid.yaml                     the grid as run (resolved)
    RUN_DIR/cells/<cell_id>/              one trial per cell: results.json, cell.json, predictions/,
                                          checkpoints/, trial.log, tensorboard/ (l2kd.trial.run_trial's folder)
    RUN_DIR/teachers/<task>-<key>/        one single-task LAMOL teacher per key (l2kd.teachers.store)
    RUN_DIR/tune/                         Ray Tune's experiment state (restore) and its checkpoints
    RUN_DIR/mlruns/                       MLflow's file store, when the grid's tracking names mlflow

A cell id names what the cell is, `<experiment>.<order id>.<method label>.s<seed>` (order id `all`
for order-free references), so adding seeds, methods or orders never renames an existing cell.
"""

from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import TrialConfig
from .trialconfig import trial_config
from .data import load_split
from .decode import pseudo_counts
from .errors import ArtifactError, ConfigError, DataError, UserError
from .gridspec import Experiment, GridSpec, MethodEntry
from .io import read_json, writable_problem
from .methods import SINGLE, kind_of, make_method
from .results import RESULTS_FILE
from .tasks import short_name
from .teachers.store import MANIFEST, TeacherStore, damaged_error, ready, teacher_damage
from .identity import config_hash, settings_diff

CELLS, TEACHERS, TUNE = "cells", "teachers", "tune"


@dataclass(frozen=True)
class Cell:
    id: str
    experiment: str
    order_id: str
    order: tuple[str, ...]
    method: str  # the entry's label (the row name in tables)
    seed: int
    # validated once, when the plan is built; a dict only on its way to a Ray worker (l2kd.grid)
    config: TrialConfig
    stages: int  # how many task stages its method trains (for its status, without rebuilding it)
    config_hash: str  # the identity its results.json must carry to count as this cell's
    teachers: tuple[tuple[str, str], ...] = ()  # (task, teacher folder name) pairs
    reference: bool = False  # an order-free reference row (multitask, single variants)
    overrides: dict[str, Any] = field(default_factory=dict)  # config sections its grid row sets

    def meta(self, grid: str) -> dict[str, Any]:
        """cell.json: what the report needs to place this cell's results."""
        return {"cell_id": self.id, "grid": grid, "experiment": self.experiment,
                "order_id": self.order_id, "order": list(self.order), "method": self.method,
                "seed": self.seed, "reference": self.reference, "overrides": self.overrides}


@dataclass
class TeacherJob:
    folder: str  # <task>-<key>
    task: str
    config: TrialConfig  # the validated config of a trial that needs it (the teacher derives from it)
    users: list[str] = field(default_factory=list)  # cell ids
    seq_kd_modes: set[str] = field(default_factory=set)
    reference: bool = False  # also the grid's "Single" row for its task


@dataclass
class CellStatus:
    state: str  # new | partial | done | changed
    stages_done: int
    stages: int


@dataclass
class Plan:
    spec: GridSpec
    cells: list[Cell]
    teachers: dict[str, TeacherJob]  # by folder name
    missing_data: dict[str, str] = field(default_factory=dict)  # task (or "model") -> why it cannot be read

    @property
    def run_dir(self) -> Path:
        return self.spec.run_dir

    def cell_dir(self, cell: Cell) -> Path:
        return self.run_dir / CELLS / cell.id

    def teacher_dir(self, folder: str) -> Path:
        return self.run_dir / TEACHERS / folder

    def status(self, cell: Cell) -> CellStatus:
        n = cell.stages
        f = self.cell_dir(cell) / RESULTS_FILE
        if not f.is_file():
            return CellStatus("new", 0, n)
        try:
            saved = read_json(f)
        except (OSError, ValueError):  # damaged (written atomically, so not by this tool): the trial
            return CellStatus("partial", 0, n)  # resumes from its checkpoint and rewrites it
        if not isinstance(saved, dict):
            return CellStatus("partial", 0, n)
        if saved.get("config_hash") != cell.config_hash:
            return CellStatus("changed", len(saved.get("R", [])), n)
        done = len(saved.get("R", []))
        return CellStatus("done" if saved.get("complete") else "partial", done, n)

    def check_storage(self) -> None:
        """Refuse storage the grid cannot write (a read-only mount) before anything starts, rather
        than at a trial's first write on some node."""
        why = writable_problem(self.run_dir)
        if why:
            raise ArtifactError(f"{why}: the grid's storage must be writable (--storage, or `storage` "
                                f"in {self.spec.source})")

    def check_unchanged(self) -> None:
        """Refuse cells whose folder holds a trial with other settings under the same id."""
        changed = [c for c in self.cells if self.status(c).state == "changed"]
        if changed:
            first = changed[0]
            saved = read_json(self.cell_dir(first) / RESULTS_FILE).get("config", {})
            diff = settings_diff(saved, first.config.to_dict())
            raise ArtifactError(
                f"{self.run_dir / CELLS}: {len(changed)} cell(s) ran with other settings under the same "
                f"ids ({first.id}: {diff or 'other settings'}); rename the "
                "grid, or start its cells over with --fresh")

    def unused_teachers(self) -> list[Path]:
        """Teacher folders on disk that no cell of this plan uses (kept by content: a --fresh run
        with other settings leaves the old ones), for a report of this plan's results only."""
        root = self.run_dir / TEACHERS
        return sorted(p for p in root.iterdir() if p.is_dir() and p.name not in self.teachers) \
            if root.is_dir() else []

    def teacher_ready(self, job: TeacherJob) -> bool:
        """Finished, whole and with the Seq-KD data its cells need (l2kd.teachers.store.ready): a
        damaged teacher is never counted ready (it is refused or retrained)."""
        return ready(self.teacher_dir(job.folder), job.seq_kd_modes)

    def damaged_teachers(self) -> dict[str, str]:
        """Teacher folder -> the line naming its damaged file, for the finished teachers that fail
        their content hashes."""
        out = {}
        for name in sorted(self.teachers):
            folder = self.teacher_dir(name)
            if (folder / MANIFEST).is_file():
                why = teacher_damage(folder)
                if why is not None:
                    out[name] = why
        return out

    def check_teachers(self, on_damaged: str) -> dict[str, str]:
        """Refuse a damaged teacher before anything starts (on_damaged="refuse"); otherwise return
        the damaged ones, which the run trains again."""
        damaged = self.damaged_teachers()
        if damaged and on_damaged == "refuse":
            raise damaged_error(next(iter(damaged.values())))
        return damaged

    def pending(self) -> list[Cell]:
        return [c for c in self.cells if self.status(c).state != "done"]


def build_plan(spec: GridSpec, *, strict_data: bool = True) -> Plan:
    """Every cell of the grid and every teacher it needs, with every cell's data files and tokenizer
    read once (a bad one is an error before anything runs). With strict_data=False, inputs that
    cannot be read are recorded (for a dry run) instead of raised."""
    cells: list[Cell] = []
    teachers: dict[str, TeacherJob] = {}
    missing: dict[str, str] = {}
    store = TeacherStore(spec.run_dir / TEACHERS)

    def teacher(cfg: TrialConfig, task: str, user: str | None, modes: tuple[str, ...], ref: bool) -> str:
        try:
            folder = store.folder(cfg, task).name
        except (DataError, ConfigError) as e:  # a teacher's key reads its data and tokenizer
            if strict_data:
                raise
            missing.setdefault(task if isinstance(e, DataError) else "model", str(e))
            folder = f"{task}-?"
        job = teachers.setdefault(folder, TeacherJob(folder, task, cfg))
        if user:
            job.users.append(user)
        job.seq_kd_modes.update(modes)
        job.reference |= ref
        return folder

    unreadable: set[tuple[str, str]] = set()  # inputs found unreadable (lru_cache keeps only successes)

    def check_inputs(cfg: TrialConfig, source: str) -> None:
        """The cell's data files and tokenizer can be read (each read once for the whole grid)."""
        data_json, model_json = _data_json(cfg), _model_json(cfg)
        checks = [((t, data_json), functools.partial(_check_data, t, data_json)) for t in cfg.tasks]
        checks.append((("model", model_json), functools.partial(_check_model_source, model_json)))
        for key, check in checks:
            if key in unreadable:  # a dry run's cells ask again; the answer was recorded already
                continue
            try:
                check()
            except UserError as e:
                if strict_data:
                    raise type(e)(str(e), where=None if isinstance(e, DataError) else source) from None
                unreadable.add(key)
                missing.setdefault(key[0], str(e))

    def add(exp: Experiment, entry: MethodEntry, order_id: str, tasks: tuple[str, ...], seed: int,
            reference: bool) -> None:
        cid = f"{exp.name}.{order_id}.{entry.label}.s{seed}"
        cfg = trial_config(spec.trial_dict(exp, entry, tasks, seed, cid), f"{spec.source}: cell {cid}")
        check_inputs(cfg, f"{spec.source}: cell {cid}")
        method = make_method(cfg.method)
        modes = method.seq_kd_modes(cfg)
        needs = tuple((t, teacher(cfg, t, cid, modes, False)) for t in method.teachers_needed(cfg))
        cells.append(Cell(cid, exp.name, order_id, tasks, entry.label, seed, cfg, len(method.stages(list(tasks))),
                          config_hash(cfg), needs, reference, entry.overrides))

    for exp in spec.experiments:
        for seed in spec.seeds:
            for order in spec.orders(exp):
                for entry in spec.methods:
                    add(exp, entry, order.id, order.tasks, seed, False)
            for entry in spec.references:
                if kind_of(entry.name) == SINGLE and _is_teacher(entry):
                    for task in exp.tasks:  # the Single (QA+LM) row is the task's teacher itself
                        base = trial_config(spec.trial_dict(exp, entry, (task,), seed, "single"), spec.source)
                        check_inputs(base, spec.source)
                        teacher(base, task, None, (), True)
                elif kind_of(entry.name) == SINGLE:
                    for task in exp.tasks:
                        add(exp, entry, short_name(task), (task,), seed, True)
                else:
                    add(exp, entry, "all", tuple(exp.tasks), seed, True)
    return Plan(spec, cells, teachers, missing)


def _is_teacher(entry: MethodEntry) -> bool:
    """A plain `single` reference is exactly the L2KD teacher (single-task QA+LM LAMOL)."""
    return not entry.overrides and not entry.params.get("qa_only", False)


# --------------------------------------------------------------------------- inputs
def _data_json(cfg: TrialConfig) -> str:
    import json

    return json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True)


def _model_json(cfg: TrialConfig) -> str:
    import json

    return json.dumps(cfg.model.model_dump(mode="json"), sort_keys=True)


@functools.lru_cache(maxsize=256)
def _check_data(task: str, data_json: str) -> None:
    """Both splits of the task read and validated as the trial will read them (raises DataError)."""
    import json

    from .config import DataConfig

    data = DataConfig(**json.loads(data_json))
    for split in ("train", "test"):
        load_split(task, split, data)


@functools.lru_cache(maxsize=64)
def _check_model_source(model_json: str) -> None:
    import json

    from .config import ModelConfig
    from .backbone import check_model_source

    check_model_source(ModelConfig(**json.loads(model_json)))


# --------------------------------------------------------------------------- work estimate
@dataclass(frozen=True)
class RowLengths:
    """Per training example of a task: the QA row (cqa) length; the LM row (gen_X) is one longer."""

    qa: tuple[int, ...]

    @property
    def n(self) -> int:
        return len(self.qa)

    def tokens(self, with_lm: bool) -> int:
        return sum(self.qa) + (sum(self.qa) + self.n if with_lm else 0)


@functools.lru_cache(maxsize=256)
def _row_lengths(task: str, data_json: str, tokenizer: tuple, max_len: int) -> RowLengths:
    import json

    from .config import DataConfig
    from .tokenizer import Tokenizer

    examples = load_split(task, "train", DataConfig(**json.loads(data_json)))
    tok = Tokenizer.load(*tokenizer)
    c = tok.encode_batch([e.context for e in examples])
    q = tok.encode_batch([e.question for e in examples])
    a = tok.encode_batch([" ".join(e.answers) for e in examples])
    return RowLengths(tuple(min(len(x) + len(y) + len(z) + 1, max_len) for x, y, z in zip(c, q, a)))


def _max_len(cfg: TrialConfig) -> int:
    if cfg.model.pretrained:
        return 1024
    kw = cfg.model.arch_kwargs()
    return int(kw.get("n_positions", kw.get("max_position_embeddings", 1024)))


def cell_tokens(cfg: TrialConfig) -> int:
    """Tokens the trial trains on (forward + backward through the student): real rows of every stage,
    pseudo-replay rows (sized like the task they imitate), times epochs. Teachers are counted apart."""
    method = make_method(cfg.method)
    data_json = _data_json(cfg)
    tok = (cfg.model.tokenizer, cfg.model.pretrained, cfg.model.builtin_vocab_size)
    lengths = {t: _row_lengths(t, data_json, tok, _max_len(cfg)) for t in cfg.tasks}
    gen_ratio = getattr(method.p, "gen_ratio", 0.0)
    total = 0
    for stage in method.stages(list(cfg.tasks)):
        per_epoch = sum(lengths[t].tokens(method.uses_lm) for t in stage)
        previous = list(cfg.tasks[: cfg.tasks.index(stage[0])])
        if gen_ratio and previous and len(stage) == 1:
            counts = pseudo_counts(lengths[stage[0]].n, previous, gen_ratio)
            for t, n in counts.items():
                mean = statistics.fmean(lengths[t].qa) if lengths[t].n else 0
                per_epoch += int(n * (2 * mean + 1 if method.uses_lm else mean))
        total += per_epoch * cfg.training.epochs
    return total


def work(plan: Plan) -> dict[str, Any]:
    """Trained tokens per cell and per teacher (None where data is missing), the totals, and what of
    them a run would still train (cells not finished, teachers not on disk)."""
    from .teachers.store import teacher_config

    cells, teachers = {}, {}
    for c in plan.cells:
        try:
            cells[c.id] = cell_tokens(c.config)
        except UserError:
            cells[c.id] = None
    for name, job in plan.teachers.items():
        try:
            teachers[name] = cell_tokens(teacher_config(job.config, job.task))
        except UserError:
            teachers[name] = None
    known = [v for v in list(cells.values()) + list(teachers.values()) if v is not None]
    ahead = sum(v or 0 for c in plan.cells if plan.status(c).state != "done" for v in [cells[c.id]]) \
        + sum(v or 0 for name, v in teachers.items() if not plan.teacher_ready(plan.teachers[name]))
    return {"cells": cells, "teachers": teachers, "total": sum(known), "ahead": ahead,
            "unknown": sum(v is None for v in list(cells.values()) + list(teachers.values()))}
