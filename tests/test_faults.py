"""Faults a cluster user meets, injected into the grid's driver as a user would: SIGTERM (a
scheduler's time limit) and SIGHUP (a lost SSH session). Each driver is a `cli.py grid` subprocess in
a session of its own, so every process it started (its local Ray included) can be found and is
stopped even when the test fails."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from l2kd.gridspec import parse_grid
from l2kd.plan import build_plan

from conftest import REPO
from test_gridspec import grid

pytest.importorskip("ray")
pytestmark = pytest.mark.ray  # one at a time, in one test process (tests/conftest.py)


def session(sid: int) -> list[int]:
    """The processes of session `sid` (a driver started with start_new_session and what it spawned)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.getsid(int(entry)) == sid:
                pids.append(int(entry))
        except OSError:
            pass
    return pids


class Driver:
    """`cli.py grid ARGS` in its own session; `stop()` kills whatever of it is left."""

    def __init__(self, *args: str):
        env = dict(os.environ, OMP_NUM_THREADS="1", RAY_ADDRESS="")
        self.proc = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "grid", *args, "--quiet"],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True, env=env)

    def wait_for(self, condition, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            if condition():
                return
            time.sleep(0.3)
        out, err = self.finish(5)
        pytest.fail(f"{what}: not seen within {timeout:.0f} s (exit {self.proc.returncode})\n{err[-3000:]}")

    def finish(self, timeout: float) -> tuple[str, str]:
        try:
            return self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return self.proc.communicate()

    def gone(self, timeout: float = 30) -> bool:
        deadline = time.time() + timeout
        while session(self.proc.pid) and time.time() < deadline:
            time.sleep(0.5)
        return not session(self.proc.pid)

    def stop(self) -> None:
        for pid in session(self.proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture
def drivers():
    started: list[Driver] = []
    yield lambda *a: started.append(Driver(*a)) or started[-1]
    for d in started:  # even on failure: no driver, Ray or trial process outlives the test
        d.stop()
        d.finish(10)


def stderr_lines(err: str) -> list[str]:
    # Ray's own start-up notice about token authentication is the one line not ours
    return [line for line in err.splitlines() if line.strip() and "Token authentication" not in line]


@pytest.mark.slow
def test_sighup_and_sigterm_stop_the_driver_which_resumes_as_after_ctrl_c(tmp_path, drivers):
    """A lost SSH session while teachers train, then `timeout -s TERM` mid-grid: each stops the
    driver's teachers or trials, says one line and exits 129 / 143 (Ray's native handler aborted with
    exit 134 and raw stack addresses), leaving no process behind; the same command then finishes
    the grid without rerunning a finished cell or retraining a teacher."""
    g = grid(name="term", methods=["lamol", "word_kd"], orders="forward", storage=str(tmp_path / "store"))
    g["training"].update(epochs=4, log_every=5)
    g["ray"] = {"dashboard": False, "max_concurrent": 1}  # one cell at a time: one is left to stop
    path = tmp_path / "term.yaml"
    path.write_text(yaml.safe_dump(g))
    plan = build_plan(parse_grid(g, str(path)))
    teachers = plan.run_dir / "teachers"

    d = drivers(str(path))  # while the teachers train: one has started, none has finished
    d.wait_for(lambda: list(teachers.glob("*/trial.log")) and not list(teachers.glob("*/manifest.json")),
               240, "the teachers' training")
    d.proc.send_signal(signal.SIGHUP)
    out, err = d.finish(60)
    assert d.proc.returncode == 129, err[-3000:]
    assert stderr_lines(err)[-1].startswith("interrupted (SIGHUP): run the same command again"), err
    assert "Traceback" not in err, err
    assert d.gone(), "the driver left processes behind (its local Ray, a teacher)"
    # a teacher that finished while the signal was handled is kept whole; one at least was stopped
    # half-trained (no manifest), and no cell started
    assert len(list(teachers.glob("*/manifest.json"))) < 2 and not plan.damaged_teachers()
    assert not (plan.run_dir / "cells").exists()

    d = drivers(str(path))  # mid-grid: a cell has finished a task
    d.wait_for(lambda: list((plan.run_dir / "cells").glob("*/checkpoints/stage-*")), 400,
               "a cell's first task")
    d.proc.send_signal(signal.SIGTERM)
    out, err = d.finish(120)
    assert d.proc.returncode == 143, err[-3000:]
    assert stderr_lines(err)[-1].startswith("interrupted (SIGTERM): run the same command again"), err
    assert "Traceback" not in err and "SIGTERM received" not in err and "Stop signal" not in err, err
    assert d.gone(), "the driver left processes behind (its local Ray, a trial)"
    assert not (plan.run_dir / "report").exists()
    manifests = {p: p.stat().st_mtime for p in teachers.glob("*/manifest.json")}
    assert len(manifests) == 2
    done = {c.id: plan.cell_dir(c).joinpath("results.json").stat().st_mtime
            for c in plan.cells if plan.status(c).state == "done"}
    assert len(done) < len(plan.cells)

    d = drivers(str(path), "--no-report")
    out, err = d.finish(300)
    assert d.proc.returncode == 0, err[-3000:]
    assert "restoring the Tune experiment" in err and "teachers trained 0, reused 2" in err, err
    assert all(plan.status(c).state == "done" for c in plan.cells)
    assert {p: p.stat().st_mtime for p in teachers.glob("*/manifest.json")} == manifests
    for cid, mtime in done.items():  # finished cells were not run again
        assert (plan.run_dir / "cells" / cid / "results.json").stat().st_mtime == mtime


def _read(p: Path) -> str:
    return p.read_text() if p.is_file() else ""


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


# what a SIGKILLed driver's local Ray leaves behind (README, "Fault tolerance"): helpers holding no work
IDLE_RAY_HELPERS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _killed(d: Driver, whole_session: bool = False) -> None:
    """SIGKILL the driver (or, whole_session, every process of its session at once, as a scheduler
    ending a job does); its Ray's GCS, raylet and trial workers die with it within a minute, only
    idle helpers may stay (removed here, as `ray stop --force` would)."""
    if whole_session:
        d.stop()
    d.proc.send_signal(signal.SIGKILL)
    d.finish(30)
    deadline = time.time() + 60
    while time.time() < deadline:
        left = [c for c in map(_cmdline, session(d.proc.pid)) if c]
        if all(c.startswith(IDLE_RAY_HELPERS) for c in left):
            break
        time.sleep(1)
    assert all(c.startswith(IDLE_RAY_HELPERS) for c in left), left
    d.stop()


def _tables(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run_dir / "report").glob("*.csv"))
            if not any(w in p.name for w in ("time", "wall", "cost", "compute"))}


def _manifests(teachers: Path) -> dict[Path, float]:
    return {p: p.stat().st_mtime for p in teachers.glob("*/manifest.json")}


@pytest.mark.slow
def test_sigkill_of_the_driver_at_three_points_then_the_same_command_finishes(tmp_path, drivers):
    """SIGKILL while the teachers train (the driver with its whole session), then of the driver
    mid-cell, then once a cell has finished:
    the same command finishes the grid, no finished cell reruns, no teacher is trained twice (a
    teacher's manifest is written once, when it is whole; one killed half-trained has none and is
    trained by the next run), and the report's tables equal a clean run's byte for byte."""
    g = grid(name="kill", methods=["finetune", "word_kd"], orders="forward")
    g["training"].update(epochs=4, log_every=5)
    g["ray"] = {"dashboard": False, "max_concurrent": 1}
    path = tmp_path / "kill.yaml"
    path.write_text(yaml.safe_dump(g))
    plan = build_plan(parse_grid(g, str(path), storage=str(tmp_path / "store")))
    cells, teachers = plan.run_dir / "cells", plan.run_dir / "teachers"

    def run():
        return drivers(str(path), "--storage", str(tmp_path / "store"))

    d = run()  # while the teachers train: one has started, none has finished
    d.wait_for(lambda: list(teachers.glob("*/trial.log")) and not list(teachers.glob("*/manifest.json")),
               240, "the teachers' training")
    # the whole session: a teacher's Ray worker outlives a driver killed alone until its raylet
    # goes, seconds in which these tiny teachers finish (kept whole: the SIGHUP test's case)
    _killed(d, whole_session=True)
    whole = _manifests(teachers)  # one finished as the kill landed is kept as it is
    assert len(whole) < 2 and not plan.damaged_teachers() and not cells.exists()
    d = run()  # mid-cell
    d.wait_for(lambda: list(cells.glob("*/checkpoints/stage-*")), 400, "a cell's first task")
    _killed(d)
    trained = _manifests(teachers)
    assert len(trained) == 2 and all(trained[p] == t for p, t in whole.items())
    d = run()  # once a cell has finished
    d.wait_for(lambda: any(plan.status(c).state == "done" for c in plan.cells), 300, "a finished cell")
    _killed(d)
    done = {c.id: (cells / c.id / "results.json").stat().st_mtime
            for c in plan.cells if plan.status(c).state == "done"}
    assert done

    d = run()
    out, err = d.finish(300)
    assert d.proc.returncode == 0, err[-3000:]
    assert "teachers trained 0, reused 2" in err, err
    for cid, mtime in done.items():
        assert (cells / cid / "results.json").stat().st_mtime == mtime
    assert _manifests(teachers) == trained
    # the clean run: the same grid in a fresh storage, given the same (content-keyed) teachers
    shutil.copytree(teachers, tmp_path / "clean" / "kill" / "teachers")
    clean = drivers(str(path), "--storage", str(tmp_path / "clean"))
    c_out, c_err = clean.finish(300)
    assert clean.proc.returncode == 0, c_err[-3000:]
    assert "teachers trained 0, reused 2" in c_err, c_err
    tables = _tables(plan.run_dir)
    assert tables and tables == _tables(tmp_path / "clean" / "kill")
