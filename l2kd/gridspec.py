"""Grid files: what a user writes to ask for a whole table of trials, validated on load.

A grid crosses task orders x methods x seeds, per experiment (the paper has three experiment
families: WOZ/CNN/WikiSQL, the five NLG domains, the five classification tasks). A grid with
top-level `tasks` is one experiment named after the grid. Shape (every key but `tasks` optional):

    name: nlg
    tasks: [e2enlg, rnnlg.rest, ...]            # or `experiments: [{name, tasks, orders, data}, ...]`
    orders: forward_reverse                     # forward | forward_reverse | all_permutations |
                                                # {random: N, seed: S} | [[task, ...], ...]
    methods: [finetune, lamol, {name: word_kd, temperature: 2.0}]     # one cell per order
    references: [single, {name: multitask, label: multi_qa, qa_only: true}]   # order-free cells
    seeds: [42]
    data: {...}  model: {...}  training: {...}  eval: {...}   # the trial config's sections
    resources: {cpu: 1, gpu: 0.5}               # per trial (fractions of a GPU allowed)
    storage: runs/grids                         # the run folder is STORAGE/NAME
    ray: {address: null, dashboard: true, max_concurrent: null, max_failures: 2}
    tracking: {tensorboard: true, wandb: {project: p, mode: offline}, mlflow: {}}   # wandb/mlflow optional
    include: base.yaml                          # start from another grid file (l2kd.gridfile)

A method entry is a name or a mapping: `name`, an optional `label` (its row name and part of its
cells' ids), trial-config sections overriding the grid's (`training: {epochs: 27}`), and the
method's own parameters. Every cell's trial config is built and validated here, so a bad key, task,
method or value is refused with the file and the key before anything starts. Relative paths (data,
tokenizer, storage) are resolved against the directory the command runs from, as in trial configs.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from .config import DataConfig, EvalConfig, MethodSpec, ModelConfig, Strict, TrainingConfig, validate
from .errors import ConfigError
from .gridfile import INCLUDE, SHORTHAND, read_grid_file
from .methods import SINGLE, kind_of, make_method, method_params
from .tasks import TASKS, short_name
from .trialconfig import trial_config

SECTIONS = ("data", "model", "training", "eval")
SECTION_MODELS = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig, "eval": EvalConfig}


class MethodEntry(Strict):
    """One row of the grid: a method, its parameters, and trial-config overrides."""

    name: str
    label: str
    params: dict[str, Any] = Field(default_factory=dict)
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @classmethod
    def parse(cls, raw: Any, where: str) -> "MethodEntry":
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise ConfigError(f"{where}: expected a method name or a mapping with 'name'")
        raw = dict(raw)
        name = raw.pop("name")
        label = raw.pop("label", name)
        if not isinstance(label, str) or not label or any(c in label for c in "/. "):
            raise ConfigError(f"{where}.label: {label!r} must be a non-empty name without '/', '.' or spaces")
        overrides = {k: raw.pop(k) for k in SECTIONS if k in raw}
        for key, section in overrides.items():
            if not isinstance(section, dict):
                raise ConfigError(f"{where}.{key}: expected a mapping")
            validate(SECTION_MODELS[key], section, f"{where}.{key}")
        try:
            method_params(MethodSpec(name=name, params=raw))
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        return cls(name=name, label=label, params=raw, overrides=overrides)

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}


class Order(Strict):
    id: str  # stable: built from the tasks' short names, so adding orders never renames one
    tasks: tuple[str, ...]


def expand_orders(spec: Any, tasks: list[str], where: str) -> list[Order]:
    """The task orders an `orders` value names, each with its stable id."""
    if spec is None or spec == "forward":
        orders = [tuple(tasks)]
    elif spec == "forward_reverse":
        orders = [tuple(tasks), tuple(reversed(tasks))]
    elif spec == "all_permutations":
        orders = list(itertools.permutations(tasks))
    elif isinstance(spec, dict) and set(spec) <= {"random", "seed"} and "random" in spec:
        n, seed = spec["random"], spec.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"{where}.seed: expected a whole number, got {seed!r}")
        total = _factorial(len(tasks))
        if not isinstance(n, int) or not 1 <= n <= total:
            raise ConfigError(f"{where}.random: expected a count from 1 to {total} (the number of orders "
                              f"of {len(tasks)} tasks), got {n!r}")
        pool = list(itertools.permutations(tasks))
        orders = random.Random(seed).sample(pool, n)
    elif isinstance(spec, list) and spec and all(isinstance(o, list) for o in spec):
        orders = []
        for k, o in enumerate(spec):
            for t in o:  # a misspelt task: name it, with the experiment's closest task
                if isinstance(t, str) and t not in tasks:
                    from .registry import did_you_mean

                    raise ConfigError(f"{where}[{k}]: {t!r} is not one of the tasks {tasks}; "
                                      f"{did_you_mean(t, tasks)}")
            if not all(isinstance(t, str) for t in o) or sorted(o) != sorted(tasks):
                raise ConfigError(f"{where}[{k}]: {o} is not an order of the tasks {tasks}")
            orders.append(tuple(o))
    else:
        raise ConfigError(f"{where}: expected forward, forward_reverse, all_permutations, "
                          f"{{random: N, seed: S}} or a list of task lists; got {spec!r}")
    seen: set[tuple[str, ...]] = set()
    out = []
    for o in orders:
        if o in seen:
            raise ConfigError(f"{where}: the order {list(o)} appears twice")
        seen.add(o)
        out.append(Order(id="-".join(short_name(t) for t in o), tasks=o))
    return out


def _factorial(n: int) -> int:
    out = 1
    for k in range(2, n + 1):
        out *= k
    return out


class Experiment(Strict):
    name: str
    tasks: list[str] = Field(..., min_length=1)
    orders: Any = "forward"
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _plain(cls, v: str) -> str:
        if not v or any(c in v for c in "/. "):
            raise ValueError(f"{v!r} must be a non-empty name without '/', '.' or spaces")
        return v

    @field_validator("tasks")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for t in v:
            try:
                TASKS.get(t)  # raises with a did-you-mean
            except ConfigError as e:  # reported by pydantic with the key's location
                raise ValueError(str(e)) from None
        if len(set(v)) != len(v):
            raise ValueError(f"a task appears twice: {v}")
        return v


class Resources(Strict):
    cpu: float = Field(1.0, gt=0, description="CPUs per trial (and per teacher)")
    gpu: float = Field(0.0, ge=0, description="GPUs per trial; fractions pack several trials on one GPU")


class RayOptions(Strict):
    address: str | None = Field(None, description="Ray cluster to join ('auto', host:port, ray://...); "
                                "unset: RAY_ADDRESS, else a local Ray is started")
    dashboard: bool = Field(True, description="start the Ray dashboard with a local Ray")
    max_concurrent: int | None = Field(None, ge=1, description="most trials at once (default: as resources allow)")
    max_failures: int = Field(2, ge=0, description="retries of a failed trial, each from its last finished task")


TRACKER_PACKAGES = {"wandb": "wandb", "mlflow": "mlflow"}  # tracker -> the module it needs


class Tracking(Strict):
    """Experiment trackers. TensorBoard: event files in every cell's folder, written by the trial.
    wandb / mlflow: Ray Tune's WandbLoggerCallback / MLflowLoggerCallback, given these keyword
    arguments (wandb's go on to wandb.init: `mode: offline` needs no account; mlflow's default
    `tracking_uri` is a file store, RUN_DIR/mlruns, and its `experiment_name` the grid's name)."""

    tensorboard: bool = Field(True, description="TensorBoard event files per trial (CELL/tensorboard)")
    wandb: dict[str, Any] | None = Field(None, description="Weights & Biases: WandbLoggerCallback arguments")
    mlflow: dict[str, Any] | None = Field(None, description="MLflow: MLflowLoggerCallback arguments")

    @model_validator(mode="after")
    def _installed(self) -> "Tracking":
        import importlib.util

        for key, module in TRACKER_PACKAGES.items():
            if getattr(self, key) is not None and importlib.util.find_spec(module) is None:
                extra = "mlflow-skinny" if key == "mlflow" else key
                raise ValueError(f"{key}: needs the {module} package, not installed here (pip install {extra}, "
                                 f"or pip install 'l2kd[{key}]')")
        return self


class GridSpec(Strict):
    name: str
    experiments: list[Experiment]
    methods: list[MethodEntry] = Field(default_factory=list)
    references: list[MethodEntry] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [42], min_length=1)
    # a grid file writes the trial config's sections at its top level; `source` is where it was read
    base: dict[str, dict[str, Any]] = Field(default_factory=dict, json_schema_extra={"grid_keys": SECTIONS})
    resources: Resources = Field(default_factory=Resources)
    storage: str = "runs/grids"
    ray: RayOptions = Field(default_factory=RayOptions)
    tracking: Tracking = Field(default_factory=Tracking)
    source: str = Field("<grid>", json_schema_extra={"grid_keys": ()})

    @model_validator(mode="after")
    def _checks(self) -> "GridSpec":
        names = [e.name for e in self.experiments]
        if len(set(names)) != len(names):
            raise ValueError(f"experiments: two experiments share a name ({names})")
        labels = [m.label for m in self.methods + self.references]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ValueError(f"methods/references: {dup} appear twice; give each entry its own 'label'")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: a seed appears twice ({self.seeds})")
        if not self.methods and not self.references:
            raise ValueError("methods: the grid names no method")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.storage).expanduser().resolve() / self.name

    def orders(self, exp: Experiment) -> list[Order]:
        return expand_orders(exp.orders, exp.tasks, f"{self.source}: experiments.{exp.name}.orders")

    def trial_dict(self, exp: Experiment, entry: MethodEntry, tasks: tuple[str, ...], seed: int,
                   name: str) -> dict[str, Any]:
        """The trial config of one cell: grid sections < experiment data < method overrides."""
        d: dict[str, Any] = {k: dict(self.base.get(k, {})) for k in SECTIONS}
        d["data"].update(exp.data)
        for k, v in entry.overrides.items():
            d[k].update(v)
        _absolute_paths(d)
        d.update(name=name, tasks=list(tasks), method=entry.spec(), seed=seed)
        return d


def _grid_keys() -> frozenset[str]:
    """The top-level keys of a grid file: GridSpec's fields as a file writes them (a field's
    `grid_keys` mark names the keys it is written as), plus a one-experiment grid's tasks/orders."""
    keys = set(SHORTHAND)
    for name, f in GridSpec.model_fields.items():
        keys.update((f.json_schema_extra or {}).get("grid_keys", (name,)))
    return frozenset(keys)


GRID_KEYS = _grid_keys()


def _absolute_paths(d: dict[str, Any]) -> None:
    """Data and tokenizer paths as absolute paths: trials run in other working directories."""
    data, model = d["data"], d["model"]
    for key in ("dir", "distil_dir"):
        if data.get(key) and data[key] != "builtin":
            data[key] = str(Path(data[key]).expanduser().resolve())
    for key in ("tokenizer", "pretrained"):
        v = model.get(key)
        if v and v not in ("builtin", "auto") and Path(v).expanduser().exists():
            model[key] = str(Path(v).expanduser().resolve())


def parse_grid(raw: dict[str, Any], source: str, *, storage: str | None = None,
               address: str | None = None) -> GridSpec:
    """Validate a grid mapping (its includes resolved: load_grid); every error names `source` and the key."""
    if INCLUDE in raw:
        raise ConfigError(f"{source}: {INCLUDE}: resolved where a grid is read from its file (load_grid)")
    unknown = sorted(set(raw) - GRID_KEYS)
    if unknown:
        from .registry import did_you_mean

        raise ConfigError(f"{source}: {unknown[0]}: unknown key; {did_you_mean(unknown[0], sorted(GRID_KEYS))}")
    if "experiments" in raw and ("tasks" in raw or "orders" in raw):
        raise ConfigError(f"{source}: give either top-level tasks/orders or experiments, not both")
    name = raw.get("name") or Path(source).stem
    exps_raw = raw.get("experiments")
    top_level = exps_raw is None  # errors then name the keys as written: tasks, orders
    if exps_raw is None:
        if "tasks" not in raw:
            raise ConfigError(f"{source}: tasks: required (or experiments)")
        exps_raw = [{"name": name, "tasks": raw["tasks"], "orders": raw.get("orders", "forward")}]
    if not isinstance(exps_raw, list) or not exps_raw:
        raise ConfigError(f"{source}: experiments: expected a non-empty list")
    where = [source if top_level else f"{source}: experiments[{k}]" for k in range(len(exps_raw))]
    experiments = [validate(Experiment, e, where[k]) for k, e in enumerate(exps_raw)]
    for k, exp in enumerate(experiments):
        expand_orders(exp.orders, exp.tasks, f"{source}: orders" if top_level else f"{where[k]}.orders")
        if exp.data:
            validate(DataConfig, exp.data, f"{source}: experiments[{k}].data")
    base = {}
    for key in SECTIONS:
        section = raw.get(key, {}) or {}
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: {key}: expected a mapping")
        validate(SECTION_MODELS[key], section, f"{source}: {key}")
        base[key] = section
    entries = {}
    for key in ("methods", "references"):
        items = raw.get(key, []) or []
        if not isinstance(items, list):
            raise ConfigError(f"{source}: {key}: expected a list")
        entries[key] = [MethodEntry.parse(m, f"{source}: {key}[{k}]") for k, m in enumerate(items)]
    fields = {"name": name, "experiments": experiments, **entries, "base": base, "source": source}
    for key in ("seeds", "resources", "storage", "ray", "tracking"):
        if key in raw:
            fields[key] = raw[key]
    if storage:
        fields["storage"] = storage
    spec = validate(GridSpec, fields, source)
    if address:
        spec = spec.model_copy(update={"ray": spec.ray.model_copy(update={"address": address})})
    _check_cells(spec)
    return spec


def load_grid(path: str | Path, *, storage: str | None = None, address: str | None = None) -> GridSpec:
    return parse_grid(read_grid_file(path, known_keys=GRID_KEYS), str(path), storage=storage, address=address)


def _check_cells(spec: GridSpec) -> None:
    """Build one trial config per kind of cell so any remaining error surfaces now, with its key."""
    for exp in spec.experiments:
        orders = spec.orders(exp)
        for k, entry in enumerate(spec.methods):
            where = f"{spec.source}: methods[{k}] ({entry.label})"
            if is_order_free(entry, exp.tasks):
                raise ConfigError(f"{where}: {entry.name} trains every task at once and is the same for "
                                  "every order; list it under references")
            trial_config(spec.trial_dict(exp, entry, orders[0].tasks, spec.seeds[0], "check"), where)
        for k, entry in enumerate(spec.references):
            where = f"{spec.source}: references[{k}] ({entry.label})"
            tasks = tuple(exp.tasks[:1]) if kind_of(entry.name) == SINGLE else tuple(exp.tasks)
            trial_config(spec.trial_dict(exp, entry, tasks, spec.seeds[0], "check"), where)


def is_order_free(entry: MethodEntry, tasks: list[str]) -> bool:
    """A method that trains all tasks in one stage (multitask and its variants) ignores the order."""
    if kind_of(entry.name) == SINGLE:
        return True
    method = make_method(MethodSpec(name=entry.name, params=entry.params))
    return len(tasks) > 1 and len(method.stages(list(tasks))) == 1
