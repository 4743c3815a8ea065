"""The grid on Ray: teachers once as Ray tasks, then every cell as a Ray Tune trial. The only Ray import.

Stage one trains each teacher the pending cells need (l2kd.teachers.jobs says which), once, as a
Ray task with the trial resources (the store keeps it on disk, keyed by content, with its Seq-KD
data), then puts its weights in the object store so every student trial receives it by reference.
Stage two runs one Tune trial per pending cell: the trial runs `run_trial` in its cell folder and,
after every task, reports its scores with a checkpoint of that task boundary. A failed trial is
retried (FailureConfig) from that checkpoint; a broken run is restored (Tuner.restore) when the same
cells are run again; a grid grown by seeds, methods or orders runs only the cells not done on disk.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

# The driver's console belongs to cli.py's live table: Tune's own status output off, and its timing
# warnings only for real stalls (read when ray.tune is imported). num_to_keep=1 forces an experiment
# snapshot at every task boundary on purpose (restore must not point at a deleted checkpoint).
# A failed trial is one line of the driver's (cell, cause, retry k of n, the task it resumes at), not
# Tune's traceback on the console: that stays in the error.txt of Tune's trial folder.
for _var, _value in (("RAY_AIR_NEW_OUTPUT", "0"), ("TUNE_WARN_THRESHOLD_S", "30"),
                     ("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0"),
                     ("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")):
    os.environ.setdefault(_var, _value)

import ray
import yaml
from ray import tune

from .trialconfig import trial_config
from .errors import ArtifactError
from .gridrun import (ATTEMPT_ERROR, STOP_SIGNALS, FaultInjection, GridInterrupted, GridOutcome,
                      attempt_cause, newest_checkpoint, read_cell_json, recorded_faults,
                      restore_missing_checkpoints)
from .io import stable_hash, write_json, write_text
from .plan import CELLS, TUNE, Cell, Plan
from .teachers.jobs import job_failed, teacher_stage, train_job
from .teachers.store import pack_teacher

log = logging.getLogger(__name__)
EventFn = Callable[..., None]
CURRENT = "current.json"  # which Tune experiment holds the cells of the last run
PROGRESS_EVERY_S = 20.0  # how often a trial tells the driver its epoch/step between task boundaries


# --------------------------------------------------------------------------- Ray session
def connect(address: str | None, *, dashboard: bool, num_cpus: int | None = None) -> dict[str, Any]:
    """Join the cluster at `address` ('auto', host:port, ray://...), else start a local Ray."""
    if ray.is_initialized():
        ctx = ray.get_runtime_context()
        return {"address": ctx.gcs_address, "dashboard": None, "local": False}
    kwargs: dict[str, Any] = {"log_to_driver": False, "configure_logging": False}
    # ray.init replaces the caller's SIGTERM handler twice: with a Python one (sys.exit) and, in its
    # core worker, a native one that aborts the process (exit 134, raw stack addresses); both are
    # handed back, so the driver stops its trials and teachers on the way out
    main = threading.current_thread() is threading.main_thread()
    keep = {s: signal.getsignal(s) for s in STOP_SIGNALS} if main else {}
    if address:
        info = ray.init(address=address, **kwargs)
    else:
        info = ray.init(include_dashboard=dashboard, num_cpus=num_cpus, **kwargs)
    for signum, handler in keep.items():
        if handler is not None:
            signal.signal(signum, handler)
    url = getattr(info, "dashboard_url", None)
    return {"address": info.address_info.get("gcs_address") or address,
            "dashboard": f"http://{url}" if url and not url.startswith("http") else url,
            "local": not address}


# --------------------------------------------------------------------------- stage one: teachers
def train_teachers(plan: Plan, cells: list[Cell], emit: EventFn, outcome: GridOutcome,
                   on_damaged: str = "refuse") -> dict[str, Any]:
    """Every teacher `cells` need (and the Single references), trained once as Ray tasks; then into
    the object store. Returns teacher folder name -> ObjectRef of its PackedCheckpoint."""
    stage = teacher_stage(plan, cells)
    outcome.teachers_reused += stage.reused
    res = plan.spec.resources
    remote = ray.remote(train_job).options(num_cpus=res.cpu, num_gpus=res.gpu, retry_exceptions=True,
                                           max_retries=plan.spec.ray.max_failures)
    todo = {}
    for job in stage.to_run:
        emit("teacher_start", teacher=job.folder, users=len(job.users))
        todo[remote.remote(*stage.job_args(plan, job, on_damaged))] = job
    try:
        while todo:
            done, _ = ray.wait(list(todo), num_returns=1)
            job = todo.pop(done[0])
            try:
                info = ray.get(done[0])
            except Exception as e:  # noqa: BLE001 - a failed teacher stops the grid with its error
                raise job_failed(plan, job, _first_line(e)) from None
            outcome.teachers_trained += info["trained"]
            emit("teacher_done", teacher=job.folder, seconds=info["s"], trained=bool(info["trained"]))
    finally:
        for ref in todo:
            ray.cancel(ref, force=True)
    return {folder: ray.put(pack_teacher(plan.teacher_dir(folder))) for folder in stage.wanted}


# --------------------------------------------------------------------------- stage two: the cells
def cell_payloads(plan: Plan) -> dict[str, dict[str, Any]]:
    """What the Tune trials are given of each cell. The Ray boundary is the one place a cell's
    config is a dict (plain JSON data, as Tune's trial parameters and the teachers' Ray tasks are);
    the trial makes it a validated config again, once, on its side (_cell_trainable)."""
    return {c.id: {"config": c.config.to_dict(), "teachers": list(c.teachers), "meta": c.meta(plan.spec.name)}
            for c in plan.cells}


def _cell_trainable(config: dict, *, cells: dict[str, dict], teacher_refs: dict[str, Any],
                    run_dir: str, fault: FaultInjection | None = None, tensorboard: bool = True) -> None:
    """One Tune trial: one cell's trial, resumed from its last finished task when there is one."""
    from .trial import run_trial

    cell = cells[config["cell"]]
    cfg = trial_config(cell["config"], f"cell {config['cell']}")
    workdir = Path(run_dir) / CELLS / config["cell"]
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / "cell.json", cell["meta"] | {"faults": recorded_faults(workdir)})
    # a cell finished on disk needs no teachers (only the pending cells' ones were shipped)
    teachers = {task: ray.get(teacher_refs[folder]) for task, folder in cell["teachers"] if folder in teacher_refs}
    seen = {"progress_t": 0.0, "stages_run": 0}

    def on_event(name: str, **e: Any) -> None:
        if fault and fault.cell == config["cell"] and name == "step" and e["stage"] == fault.stage \
                and e["step"] >= fault.step and not os.path.exists(fault.marker):
            Path(fault.marker).write_text("fired")
            raise RuntimeError(f"injected fault in {fault.cell} at stage {fault.stage}")
        if name == "stage_end":
            seen["stages_run"] += 1
            tune.report(_stage_metrics(e["result"], e["tasks"]),
                        checkpoint=tune.Checkpoint.from_directory(str(e["checkpoint"])))
        elif name == "step" and time.monotonic() - seen["progress_t"] > PROGRESS_EVERY_S:
            seen["progress_t"] = time.monotonic()
            tune.report({"stage": e["stage"] + 1, "task": "+".join(e["tasks"]),
                         "epoch": e["epoch"], "step": e["step"], "steps": e["steps"], "loss": e["loss"]})

    ckpt = tune.get_checkpoint()
    try:
        with (ckpt.as_directory() if ckpt else contextlib.nullcontext(None)) as tune_dir:
            resume_from = newest_checkpoint(tune_dir, workdir)
            result = run_trial(cfg, workdir, teachers=teachers, on_event=on_event, resume_from=resume_from,
                               tensorboard=tensorboard)
    except Exception as e:  # the driver's line names it (Tune's callbacks are not given the error)
        with contextlib.suppress(OSError):  # a full disk must not hide the error it caused
            write_json(workdir / ATTEMPT_ERROR, {"cause": _first_line(e)})
        raise
    if not seen["stages_run"]:  # finished on disk before this attempt: tell Tune its scores once
        tune.report(_stage_metrics(result, result.stages[-1]))


def _stage_metrics(result, tasks) -> dict[str, Any]:
    row = result.R[-1]
    return {"stage": result.stages_done, "stages": len(result.stages), "task": "+".join(tasks),
            "avg": sum(row) / len(row), "complete": result.complete,
            **{f"score/{t}": v for t, v in zip(result.tasks, row)}}


def _record_fault(trial, final: bool) -> None:
    """The driver's account of a failed attempt: an event (one line on the console), the run's
    list of faults, and the cell's cell.json."""
    from .checkpoint import latest_checkpoint

    ctx = _fault_context
    cid = trial.config["cell"]
    workdir = Path(ctx["run_dir"]) / CELLS / cid
    try:
        ckpt = latest_checkpoint(workdir)
        kept = ckpt.stages_done if ckpt else 0
    except ArtifactError:
        kept = 0
    fault = {"cell": cid, "attempt": trial.num_failures, "retries": ctx["max_failures"],
             "cause": attempt_cause(workdir), "tasks_kept": kept, "tasks": ctx["stages"].get(cid),
             "final": final, "log": str(workdir / "trial.log"), "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if workdir.is_dir():
        meta = read_cell_json(workdir)
        if meta is not None:
            write_json(workdir / "cell.json", meta | {"faults": recorded_faults(workdir) + [fault]})
    _emit("fault", **fault)


def _no_events(*a: Any, **k: Any) -> None:
    pass


_emit: EventFn = _no_events  # the driver's event sink; the callback below reads it
_fault_context: dict[str, Any] = {"run_dir": ".", "max_failures": 0, "stages": {}}  # set by run_cells
_tune_stop: Callable | None = None  # Tune's handler of Ctrl-C in the running experiment (its quiet stop)
_stop_handler: Callable | None = None  # the driver's handler of stop signals while Tune runs


class GridMonitor(tune.Callback):
    """Trial lifecycle and reports -> the driver's events. Stateless on purpose: Tune pickles it with
    the experiment, and a restored experiment must report to the new driver's sink."""

    def setup(self, **info):
        # called once Tune has installed its stop handler (on SIGINT and SIGUSR1, one function);
        # Ctrl-C then goes through the driver's handler too, which quiets Tune's own lines about it
        global _tune_stop
        if threading.current_thread() is threading.main_thread() and _stop_handler is not None:
            handler = signal.getsignal(signal.SIGUSR1)
            _tune_stop = handler if callable(handler) else None
            signal.signal(signal.SIGINT, _stop_handler)

    def on_trial_start(self, iteration, trials, trial, **info):
        _emit("cell", id=trial.config["cell"], state="running")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        keys = ("stage", "stages", "task", "epoch", "step", "steps", "loss", "avg")
        _emit("cell", id=trial.config["cell"], state="running",
              **{k: result[k] for k in keys if result.get(k) is not None})

    def on_trial_complete(self, iteration, trials, trial, **info):
        _emit("cell", id=trial.config["cell"], state="done")

    def on_trial_error(self, iteration, trials, trial, **info):
        _record_fault(trial, final=True)
        _emit("cell", id=trial.config["cell"], state="error")

    def on_trial_recover(self, iteration, trials, trial, **info):
        _record_fault(trial, final=False)
        _emit("cell", id=trial.config["cell"], state="retrying")


def tracker_callbacks(plan: Plan) -> list:
    """Ray Tune's own logger callbacks for the trackers the grid names (spec.tracking)."""
    t, out = plan.spec.tracking, []
    if t.mlflow is not None:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        kwargs = {"tracking_uri": (plan.run_dir / "mlruns").as_uri(), "experiment_name": plan.spec.name,
                  **t.mlflow}
        if str(kwargs["tracking_uri"]).startswith("file:"):
            # MLflow 3 keeps its file store (no server, no database) only when asked to
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        out.append(MLflowLoggerCallback(**kwargs))
    if t.wandb is not None:
        from ray.air.integrations.wandb import WandbLoggerCallback

        out.append(WandbLoggerCallback(**{"project": plan.spec.name, **t.wandb}))
    return out


def run_cells(plan: Plan, cells: list[Cell], teacher_refs: dict[str, Any], emit: EventFn,
              fault: FaultInjection | None = None, stopped_by: list[int] | None = None) -> dict[str, str]:
    """One Tune trial per cell; returns the errors by cell id. Restores the Tune experiment of an
    earlier run of the same grid, so its finished trials are not run again. A SIGTERM or SIGHUP that
    stops the run is appended to `stopped_by`."""
    global _emit
    spec = plan.spec
    tune_root = plan.run_dir / TUNE
    ids = sorted(c.id for c in cells)
    # One experiment per grid content: the same grid run again restores it (Tune skips its finished
    # trials); a grid grown by seeds, methods or orders is a new experiment of its pending cells.
    name = f"cells-{stable_hash(sorted(c.id for c in plan.cells), 10)}"
    path = tune_root / name
    # every cell of the plan, not only the pending ones: a restored experiment may rerun a trial
    # whose cell finished on disk after Tune last saved its state (an interrupted run)
    payload = cell_payloads(plan)
    trainable = tune.with_resources(
        tune.with_parameters(_cell_trainable, cells=payload, teacher_refs=teacher_refs,
                             run_dir=str(plan.run_dir), fault=fault, tensorboard=spec.tracking.tensorboard),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    _emit = emit
    _fault_context.update(run_dir=str(plan.run_dir), max_failures=spec.ray.max_failures,
                          stages={c.id: plan.status(c).stages for c in cells})
    if tune.Tuner.can_restore(str(path)):
        emit("restore", experiment=str(path))
        restore_missing_checkpoints(path)
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable, param_space={"cell": tune.grid_search(ids)},
            tune_config=tune.TuneConfig(max_concurrent_trials=spec.ray.max_concurrent, reuse_actors=False,
                                        trial_dirname_creator=lambda t: t.config["cell"],
                                        trial_name_creator=lambda t: t.config["cell"]),
            run_config=tune.RunConfig(
                name=name, storage_path=str(tune_root), verbose=0, log_to_file=True,
                callbacks=[GridMonitor(), *tracker_callbacks(plan)],
                failure_config=tune.FailureConfig(max_failures=spec.ray.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    write_json(tune_root / CURRENT, {"experiment": name, "cells": ids})
    with _stop_signals_stop_tune(stopped_by):
        results = tuner.fit()
    errors = {}
    for r in results:
        if r.error is not None:
            errors[r.config["cell"]] = _first_line(r.error)
    return errors


@contextlib.contextmanager
def _stop_signals_stop_tune(received: list[int] | None):
    """SIGTERM and SIGHUP while Tune runs get Ctrl-C's quiet stop: Tune stops the trials, saves its
    state and returns (raising in its loop instead would leave trials running and the state unsaved).
    Before Tune's loop has started they unwind at once, as elsewhere in the driver."""
    global _tune_stop, _stop_handler
    received = [] if received is None else received
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if signum != signal.SIGINT:
            received.append(signum)
        if _tune_stop is None:
            raise GridInterrupted(f"stopped by signal {signum} before the trials started", signum)
        logging.getLogger("ray.tune.tune").setLevel(logging.ERROR)  # the driver says it in one line
        _tune_stop(signum, frame)  # it hands SIGINT back to the handler before it: a 2nd Ctrl-C is abrupt

    # SIGINT too: Tune leaves its handler installed after the run, where a Ctrl-C would then be lost
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, *STOP_SIGNALS)}
    for s in STOP_SIGNALS:
        signal.signal(s, handler)
    _stop_handler = handler
    try:
        yield
    finally:
        _tune_stop = _stop_handler = None
        for signum, old in before.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}"[:300]


# --------------------------------------------------------------------------- the whole grid
def run_grid(plan: Plan, *, on_event: EventFn | None = None, fresh: bool = False,
             num_cpus: int | None = None, fault: FaultInjection | None = None,
             damaged_teachers: str = "refuse") -> GridOutcome:
    """Run every cell of `plan` that is not finished on disk; return what each cell ended as. A
    teacher whose files fail their content hashes is refused before anything starts, or trained
    again (damaged_teachers="retrain")."""
    given = on_event or (lambda *a, **k: None)
    t0 = time.perf_counter()
    outcome = GridOutcome(plan.run_dir)

    def emit(name: str, **e: Any) -> None:
        if name == "fault":
            outcome.faults.append(e)
        given(name, **e)
    plan.check_storage()
    if fresh:
        for sub in (CELLS, TUNE):  # teachers are keyed by content and stay valid
            shutil.rmtree(plan.run_dir / sub, ignore_errors=True)
    plan.check_unchanged()
    for name, why in plan.check_teachers(damaged_teachers).items():
        emit("teacher_damaged", teacher=name, why=why)
    pending = plan.pending()
    write_text(plan.run_dir / "grid.yaml", yaml.safe_dump(plan.spec.model_dump(mode="json"), sort_keys=False))
    spec = plan.spec
    emit("plan", cells=len(plan.cells), pending=len(pending), run_dir=plan.run_dir)
    if pending or any(j.reference and not plan.teacher_ready(j) for j in plan.teachers.values()):
        address = spec.ray.address or os.environ.get("RAY_ADDRESS")
        emit("ray", **connect(address, dashboard=spec.ray.dashboard, num_cpus=num_cpus))
        refs = train_teachers(plan, pending, emit, outcome, damaged_teachers)
        if pending:
            emit("cells_start", cells=[c.id for c in pending])
            stopped_by: list[int] = []
            outcome.errors = run_cells(plan, pending, refs, emit, fault, stopped_by)
            # Tune answers Ctrl-C by stopping its trials, saving its state and returning as if done;
            # a cell neither finished nor failed is the mark of that: the caller is told it was
            # interrupted (cli.py then says how to continue) rather than handed a partial grid
            stopped = [c.id for c in pending if plan.status(c).state != "done" and c.id not in outcome.errors]
            if stopped:
                raise GridInterrupted(f"{len(stopped)} cell(s) stopped before finishing: {', '.join(stopped[:3])}",
                                      stopped_by[0] if stopped_by else signal.SIGINT)
    outcome.cells = {c.id: plan.status(c).state for c in plan.cells}
    outcome.wall_s = time.perf_counter() - t0
    return outcome


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()
