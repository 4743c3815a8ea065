"""How the grid's driver scales, measured on this machine (the figures go to docs/performance.md).

  plan       a 1,000-cell grid (3 synthetic tasks x 5 random orders x 5 methods x 40 seeds): the
             wall time of `cli.py grid --dry-run` (a whole process) and, in this process, of
             build_plan, work (the cost estimate) and every cell's status
  snapshots  a small grid run on a local Ray: the time Tune spends writing its experiment-state
             snapshots (what `Tuner.restore` reads) as a share of the grid's wall time

Usage: OMP_NUM_THREADS=1 python tools/bench-grid-scale.py {plan,snapshots} [--out DIR] [--seeds N]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY = {"data": {"max_train_examples": 24, "max_test_examples": 6},
        "model": {"config": {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 96}},
        "training": {"epochs": 1, "lr": 1e-3, "threads": 1}, "eval": {"before_training": False}}
TASKS = ["synth.nlg", "synth.sentiment", "synth.state"]


def bench_plan(out: Path, seeds: int = 40) -> dict:
    import yaml

    from l2kd.gridspec import load_grid
    from l2kd.plan import build_plan, work

    grid = {"name": "scale", "tasks": TASKS, "orders": {"random": 5, "seed": 1},
            "methods": ["finetune", "lamol", "word_kd", "seq_kd", "seq_kd_soft"],
            "seeds": list(range(seeds)), **TINY}
    path = out / "scale.yaml"
    path.write_text(yaml.safe_dump(grid))
    storage = str(out / "store")
    t0 = time.perf_counter()
    dry = subprocess.run([sys.executable, str(REPO / "cli.py"), "grid", str(path), "--storage", storage,
                          "--dry-run"], cwd=REPO, capture_output=True, text=True)
    dry_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan = build_plan(load_grid(path, storage=storage))
    plan_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    work(plan)
    work_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    states = [plan.status(c).state for c in plan.cells]
    status_s = time.perf_counter() - t0
    return {"cells": len(plan.cells), "teachers": len(plan.teachers), "dry_run_exit": dry.returncode,
            "dry_run_s": round(dry_s, 1), "build_plan_s": round(plan_s, 3), "work_s": round(work_s, 3),
            "status_s": round(status_s, 3), "states": sorted(set(states))}


def bench_snapshots(out: Path) -> dict:
    """Times ExperimentCheckpointManager.sync_up_experiment_state (Tune's snapshot, throttled by
    itself) and counts the snapshots it actually wrote (TuneController.save_to_dir)."""
    import ray
    from ray.tune.execution import experiment_state, tune_controller

    from l2kd.grid import run_grid
    from l2kd.gridspec import parse_grid
    from l2kd.plan import build_plan

    spent = {"sync_s": 0.0, "saves": 0, "save_s": 0.0}
    sync, save = (experiment_state._ExperimentCheckpointManager.sync_up_experiment_state,
                  tune_controller.TuneController.save_to_dir)

    def timed_sync(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return sync(self, *a, **k)
        finally:
            spent["sync_s"] += time.perf_counter() - t0

    def timed_save(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return save(self, *a, **k)
        finally:
            spent["saves"] += 1
            spent["save_s"] += time.perf_counter() - t0

    experiment_state._ExperimentCheckpointManager.sync_up_experiment_state = timed_sync
    tune_controller.TuneController.save_to_dir = timed_save
    grid = {"name": "snap", "tasks": TASKS[:2], "orders": "forward_reverse", "methods": ["finetune", "lamol"],
            "seeds": [1, 2], **TINY, "ray": {"dashboard": False}}
    plan = build_plan(parse_grid(grid, "snap.yaml", storage=str(out / "store")))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        outcome = run_grid(plan)
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    return {"cells": len(plan.cells), "ok": outcome.ok, "grid_wall_s": round(wall, 1),
            "snapshot_s": round(spent["sync_s"], 3), "snapshots_written": spent["saves"],
            "save_to_dir_s": round(spent["save_s"], 3), "share": f"{100 * spent['sync_s'] / wall:.2f} %"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=["plan", "snapshots"])
    p.add_argument("--out", help="work folder (default: a temporary one, removed)")
    p.add_argument("--seeds", type=int, default=40, help="plan: seeds of the grid (25 cells each; 40 -> 1,000)")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        result = bench_plan(out, args.seeds) if args.part == "plan" else bench_snapshots(out)
    print(json.dumps({"part": args.part, "date": time.strftime("%Y-%m-%d"), **result}, indent=1))


if __name__ == "__main__":
    main()
