"""The grid on a local Ray with CPUs: every cell written, teachers trained once, a failed trial
retried from its task boundary with the same R, a stopped driver resumed without rerunning cells."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from l2kd.gridspec import parse_grid
from l2kd.plan import build_plan
from l2kd.results import TrialResult

from conftest import REPO
from test_gridspec import grid

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray  # one at a time, in one test process (tests/conftest.py)
from l2kd.grid import FaultInjection, run_cells, run_grid  # noqa: E402


@pytest.fixture(scope="module")
def ray_address():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def demo_sized(ray_address, tmp_path_factory):
    """2 orders x 2 methods (lamol, word_kd) x 1 seed: word_kd needs a teacher per task."""
    storage = tmp_path_factory.mktemp("store")
    spec = parse_grid(grid(name="e2e"), "e2e.yaml", storage=str(storage))
    plan = build_plan(spec)
    events = []
    outcome = run_grid(plan, on_event=lambda n, **e: events.append((n, e)))
    return plan, outcome, events


def test_grid_completes_every_cell_and_trains_each_teacher_once(demo_sized):
    plan, outcome, events = demo_sized
    assert outcome.ok, outcome
    assert sorted(outcome.cells) == ["e2e.nlg-sent.lamol.s3", "e2e.nlg-sent.word_kd.s3",
                                     "e2e.sent-nlg.lamol.s3", "e2e.sent-nlg.word_kd.s3"]
    for cell in plan.cells:
        result = TrialResult.load(plan.cell_dir(cell))
        assert result.complete and len(result.R) == 2
        meta = json.loads((plan.cell_dir(cell) / "cell.json").read_text())
        assert meta["order"] == list(cell.order) and meta["method"] == cell.method
    # two teachers, each used by both word_kd cells, each trained exactly once
    assert outcome.teachers_trained == 2
    assert sorted(len(j.users) for j in plan.teachers.values()) == [2, 2]
    trained = [e["teacher"] for n, e in events if n == "teacher_done" and e["trained"]]
    assert sorted(trained) == sorted(plan.teachers)
    # the cells report to the driver as they go
    assert {e["id"] for n, e in events if n == "cell" and e["state"] == "done"} == set(outcome.cells)
    # a second run has nothing left to do: no Ray work at all
    again = run_grid(plan, on_event=lambda n, **e: events.append(("again", n)))
    assert again.ok and again.teachers_trained == 0 and ("again", "ray") not in events


def test_a_failed_trial_is_retried_from_its_task_boundary_with_the_same_R(demo_sized, tmp_path):
    plan, _, _ = demo_sized
    g = grid(name="fault", methods=["lamol"], orders="forward")
    g["training"]["log_every"] = 2  # progress events (where the fault fires) mid-task
    spec = parse_grid(g, "f.yaml", storage=str(tmp_path))
    faulty = build_plan(spec)
    (cell,) = faulty.cells
    marker = tmp_path / "fired"
    events = []
    outcome = run_grid(faulty, fault=FaultInjection(cell.id, stage=1, step=1, marker=str(marker)),
                       on_event=lambda n, **e: events.append((n, e)))
    assert marker.exists() and outcome.ok, outcome
    # one event for the failed attempt: the cell, the cause, what was kept, which retry of how many
    (fault,) = [e for n, e in events if n == "fault"]
    assert fault["cell"] == cell.id and fault["attempt"] == 1 and fault["retries"] == spec.ray.max_failures
    assert fault["cause"] == f"RuntimeError: injected fault in {cell.id} at stage 1", fault
    assert fault["tasks_kept"] == 1 and fault["tasks"] == 2 and not fault["final"]
    assert outcome.faults == [fault]  # the final summary's list
    recorded = json.loads((faulty.cell_dir(cell) / "cell.json").read_text())["faults"]
    assert [(f["attempt"], f["cause"]) for f in recorded] == [(1, fault["cause"])]  # kept by the retry
    from l2kd.cli.grid import fault_line

    assert fault_line(fault) == (f"cell {cell.id}: {fault['cause']}; lost: the unfinished task 2 of 2 "
                                 f"(task 1 kept); retry 1 of {spec.ray.max_failures}, resuming at task 2")
    log = (faulty.cell_dir(cell) / "trial.log").read_text()
    assert "resuming" in log and "after stage 1 of 2" in log
    uninterrupted = TrialResult.load(plan.cell_dir(next(c for c in plan.cells if c.id == "e2e.nlg-sent.lamol.s3")))
    assert TrialResult.load(faulty.cell_dir(cell)).R == uninterrupted.R


def test_stopping_the_driver_and_running_again_finishes_only_unfinished_cells(ray_address, tmp_path):
    g = grid(name="stop", methods=["finetune", "lamol"], storage=str(tmp_path / "store"))
    g["ray"] = {"max_concurrent": 1}
    g["training"]["epochs"] = 2
    path = tmp_path / "stop.yaml"
    path.write_text(yaml.safe_dump(g))
    plan = build_plan(parse_grid(g, str(path)))
    driver = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "grid", str(path), "--address",
                               ray_address, "--quiet"], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 400
    while time.time() < deadline and not any(plan.status(c).state == "done" for c in plan.cells):
        time.sleep(1)
    driver.send_signal(signal.SIGINT)
    said, _ = driver.communicate(timeout=120)
    # Tune stops its trials and returns; the driver says it was interrupted and builds no report
    assert driver.returncode == 130 and "interrupted: run the same command again" in said, said[-2000:]
    assert not (plan.run_dir / "report").exists()
    done = {c.id: os.path.getmtime(plan.cell_dir(c) / "results.json")
            for c in plan.cells if plan.status(c).state == "done"}
    assert done and len(done) < len(plan.cells), "stop the driver mid-grid"
    events = []
    outcome = run_grid(plan, on_event=lambda n, **e: events.append((n, e)))
    assert outcome.ok, outcome
    assert any(n == "restore" for n, _ in events)  # the same grid: Tune's experiment is restored
    started = {e["id"] for n, e in events if n == "cell" and e["state"] == "running"}
    assert not started & set(done)  # finished cells were not run again
    for cid, mtime in done.items():
        assert os.path.getmtime(plan.run_dir / "cells" / cid / "results.json") == mtime


def test_a_cell_that_finished_on_disk_after_tune_saved_its_state_is_not_an_error(ray_address, tmp_path):
    """An interrupted run can leave a cell finished on disk that Tune's saved experiment still
    lists as unfinished. The restored experiment reruns that trial: it must report the cell from
    disk (it failed with a KeyError, the trials receiving only the pending cells)."""
    from l2kd.trial import run_trial

    g = grid(name="lag", methods=["lamol"])
    g["training"]["log_every"] = 2  # progress events (where the fault fires) mid-task
    g["ray"] = {"max_failures": 0}
    plan = build_plan(parse_grid(g, "lag.yaml", storage=str(tmp_path)))
    first = plan.cells[0]
    marker = tmp_path / "fired"
    outcome = run_grid(plan, fault=FaultInjection(first.id, stage=1, step=1, marker=str(marker)))
    assert marker.exists() and not outcome.ok and first.id in outcome.errors
    run_trial(first.config, plan.cell_dir(first))  # finishes on disk; Tune's state says errored
    # what the next run does with such a trial: restores the experiment, which reruns it
    events = []
    errors = run_cells(plan, [], {}, lambda n, **e: events.append((n, e)))
    assert any(n == "restore" for n, _ in events)
    assert errors == {} and plan.status(first).state == "done"


def test_ray_cluster_yaml_is_a_valid_cluster_launcher_config():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load((REPO / "ray_cluster.yaml").read_text()))
    validate_config(config)  # Ray's own schema, after its defaults are merged (as `ray up` does)
    assert config["provider"]["type"] == "local" and config["head_start_ray_commands"]


def test_a_checkpoint_a_killed_driver_left_named_but_missing_is_recreated_empty(tmp_path):
    """Tune refuses to restore a trial whose snapshot names a deleted checkpoint (num_to_keep=1 and a
    driver SIGKILLed before its next snapshot); the folder comes back empty and the cell resumes from
    its own task-boundary checkpoint."""
    from l2kd.gridrun import newest_checkpoint, restore_missing_checkpoints

    exp = tmp_path / "exp"
    trial = exp / "cell-a"
    (trial / "checkpoint_000001").mkdir(parents=True)
    (trial / "params.json").write_text("{}")
    (exp / "experiment_state-1.json").write_text('{"a": "cell-a/checkpoint_000000", "b": "checkpoint_000001"}')
    made = restore_missing_checkpoints(exp)
    assert made == [trial / "checkpoint_000000"] and not any(made[0].iterdir())
    assert newest_checkpoint(str(made[0]), tmp_path / "cell-folder") is None  # the cell folder decides
