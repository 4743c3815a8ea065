"""A lost node of a multi-node cluster, on one machine: a head (no CPUs, so no work lands there) and
two worker nodes of one CPU each (Ray's `cluster_utils.Cluster`, each node its own raylet, object
store and worker processes), with the grid's storage in a folder every node sees. The worker node
running a cell is killed, its raylet and every process under it SIGKILLed, while the cell is in its
second task: Tune retries the trial on the other node from the task boundary on the shared storage."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from l2kd.gridspec import parse_grid
from l2kd.plan import build_plan
from l2kd.results import TrialResult

from test_gridspec import grid

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray  # one at a time, in one test process (tests/conftest.py)
from ray.cluster_utils import Cluster  # noqa: E402

from l2kd.grid import run_grid  # noqa: E402
from l2kd.report import build_report  # noqa: E402

NODE = {"num_cpus": 1, "object_store_memory": 80 * 2**20, "include_dashboard": False}


def _children(pid: int) -> list[int]:
    """Every descendant of `pid` (a raylet's workers and their helpers)."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit():
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(entry))
        except (OSError, IndexError, ValueError):
            pass
    out, todo = [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_node(cluster: Cluster, node) -> None:
    """The machine is lost: its raylet and every process it started die at once (SIGKILL), none
    of them left to write to the shared storage afterwards."""
    raylet = node.all_processes["raylet"][0].process.pid
    victims = _children(raylet)
    cluster.remove_node(node, allow_graceful=False)
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _busy_node(cluster: Cluster):
    """The worker node whose CPU is taken (the head has none: every trial runs on a worker)."""
    free = ray._private.state.available_resources_per_node()
    busy = [n for n in cluster.worker_nodes if free.get(n.node_id, {}).get("CPU", 0) < 1]
    return busy[0] if len(busy) == 1 else None


def _tables(report_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(report_dir.glob("*.csv"))
            if not any(w in p.name for w in ("time", "wall", "cost", "compute"))}


@pytest.fixture
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 80 * 2**20,
                                                      "include_dashboard": False})
    try:
        for _ in range(2):
            c.add_node(**NODE)
        c.wait_for_nodes(timeout=120)
        ray.init(address=c.address, log_to_driver=False, configure_logging=False)
        yield c
    finally:  # even on failure: no raylet, GCS or worker of this cluster outlives the test
        ray.shutdown()
        c.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_lost_worker_node_moves_its_trial_to_another_node_from_its_task_boundary(cluster, tmp_path):
    """word_kd with a teacher per task: the teachers train on the workers, then the cell; the node
    running it dies in the cell's second task. The trial is retried on the surviving node from the
    checkpoint of task 1 on the shared storage, the teachers are not trained again, and the cell's R
    and the report's tables equal an uninterrupted run's (the same grid run again from scratch)."""
    g = grid(name="nodes", methods=["word_kd"], orders="forward")
    g["training"].update(epochs=3, log_every=2)
    g["ray"] = {"dashboard": False, "max_failures": 2}
    plan = build_plan(parse_grid(g, "nodes.yaml", storage=str(tmp_path / "shared")))
    (cell,) = plan.cells
    workdir = plan.cell_dir(cell)
    killed: dict = {}

    def kill_in_second_task():
        deadline = time.time() + 600
        while time.time() < deadline and not killed:
            in_second = (workdir / "checkpoints" / "stage-00").is_dir() and \
                not (workdir / "checkpoints" / "stage-01").exists()
            node = _busy_node(cluster) if in_second else None
            if node is not None:
                killed["node"] = node.node_id
                killed["others"] = [n.node_id for n in cluster.worker_nodes if n is not node]
                _kill_node(cluster, node)
                return
            time.sleep(0.2)

    killer = threading.Thread(target=kill_in_second_task, daemon=True)
    killer.start()
    events = []
    outcome = run_grid(plan, on_event=lambda n, **e: events.append((n, e)))
    killer.join(5)
    assert killed, "the cell's second task was not caught on a worker node"
    assert outcome.ok, outcome

    # one fault: the node's death, task 1 kept, retried (once) from task 2 on the surviving node
    (fault,) = outcome.faults
    assert fault["cause"].startswith("its Ray worker or node died"), fault
    assert fault["tasks_kept"] == 1 and fault["tasks"] == 2 and fault["attempt"] == 1 and not fault["final"]
    assert [f["cause"] for f in json.loads((workdir / "cell.json").read_text())["faults"]] == [fault["cause"]]
    log = (workdir / "trial.log").read_text()
    assert "after stage 1 of 2" in log, log[-2000:]
    # the retry ran on the surviving node: the only one left with a CPU (the head has none)
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")}
    assert alive == set(killed["others"]) and killed["node"] not in alive
    # the teachers were trained once, before the kill, and not again
    assert outcome.teachers_trained == 2
    manifests = {p: p.stat().st_mtime for p in (plan.run_dir / "teachers").glob("*/manifest.json")}
    assert len(manifests) == 2
    faulted_R = TrialResult.load(workdir).R
    faulted = _tables(build_report(plan.run_dir, tmp_path / "report-faulted").out_dir)

    # the uninterrupted run: the same cell from scratch on the surviving node, with the same teachers
    clean = run_grid(plan, fresh=True)
    assert clean.ok and not clean.faults and clean.teachers_trained == 0
    assert {p: p.stat().st_mtime for p in manifests} == manifests
    assert TrialResult.load(workdir).R == faulted_R
    tables = _tables(build_report(plan.run_dir, tmp_path / "report-clean").out_dir)
    assert tables and tables == faulted


@pytest.fixture
def eight_cpus():
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=200 * 2**20)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_eight_concurrent_trials_on_one_node_share_no_port_or_file(eight_cpus, tmp_path):
    """8 cells at once on one node (8 logical CPUs): each trial's distributed group listens on its
    own port, writes only its own cell folder, and ends as it does alone (its R equals a lone run's)."""
    from l2kd.trial import run_trial

    g = grid(name="load", methods=["finetune", "lamol"], orders="forward", seeds=[1, 2, 3, 4])
    g["data"].update(max_train_examples=12, max_test_examples=4)
    g["ray"] = {"dashboard": False, "max_concurrent": 8, "max_failures": 0}  # a collision fails the cell
    plan = build_plan(parse_grid(g, "load.yaml", storage=str(tmp_path / "store")))
    assert len(plan.cells) == 8
    events = []
    outcome = run_grid(plan, on_event=lambda n, **e: events.append((n, e)))
    assert outcome.ok and not outcome.faults, (outcome.errors, outcome.faults)
    # all 8 ran at once: every cell started before any finished
    running, most, timeline = set(), 0, []
    for name, e in events:
        if name == "cell":
            (running.add if e["state"] == "running" else running.discard)(e["id"])
            most = max(most, len(running))
            timeline.append((e["id"][-9:], e["state"], len(running)))
    assert most == 8, timeline
    ports = []
    for cell in plan.cells:
        log = (plan.cell_dir(cell) / "trial.log").read_text()
        ports += [line.rsplit("port ", 1)[1].rstrip(")") for line in log.splitlines()
                  if "distributed group up" in line]
        assert TrialResult.load(plan.cell_dir(cell)).complete, cell.id
    assert len(ports) == 8 and len(set(ports)) == 8, ports
    leftovers = [p for p in plan.run_dir.rglob(".*") if p.name.endswith((".tmp", ".old"))]
    assert not leftovers, leftovers
    lamol = next(c for c in plan.cells if c.method == "lamol")  # the one writing pseudo samples too
    alone = run_trial(lamol.config, tmp_path / "alone")  # the cell's validated config, as its trial got it
    assert alone.R == TrialResult.load(plan.cell_dir(lamol)).R


@pytest.mark.slow  # ~20-40 s here: the dry run is a whole process
def test_the_grid_scale_bench_plans_and_dry_runs_a_grid(tmp_path):
    """tools/bench-grid-scale.py (docs/performance.md's 1,000-cell figures), here on 25 cells so it
    keeps working: the dry run exits 0 and the plan has every cell and teacher."""
    import subprocess
    import sys

    from conftest import REPO

    run = subprocess.run([sys.executable, str(REPO / "tools" / "bench-grid-scale.py"), "plan", "--seeds", "1",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1", RAY_ADDRESS=""))
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout)
    assert got["cells"] == 25 and got["teachers"] == 3 and got["dry_run_exit"] == 0 and got["states"] == ["new"], got
    # timed, not bounded: a 25-cell status pass can take under a millisecond on a quiet machine
    assert got["dry_run_s"] > 0 and all(got[k] >= 0 for k in ("build_plan_s", "work_s", "status_s")), got
