"""Storage faults: a read-only storage folder is refused before anything starts; a disk that fills up
while a checkpoint or results.json is written fails the trial with nothing half-written, and the rerun
resumes from the last good checkpoint; a damaged results.json is never read as a finished cell."""

import errno
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from l2kd.checkpoint import latest_checkpoint
from l2kd.gridspec import parse_grid
from l2kd.plan import build_plan
from l2kd.results import TrialResult
from l2kd.trial import run_trial
from l2kd.trialconfig import trial_config

from conftest import REPO, tiny_trial
from test_gridspec import grid


def _can_mount_read_only(tmp_path) -> bool:
    probe = tmp_path / "probe"
    probe.mkdir()
    if not shutil.which("unshare"):
        return False
    res = subprocess.run(["unshare", "-r", "-m", "sh", "-c",
                          f"mount --bind {probe} {probe} && mount -o remount,bind,ro {probe} && "
                          f"! touch {probe}/x 2>/dev/null"], capture_output=True, timeout=30)
    return res.returncode == 0


def test_read_only_storage_is_refused_before_anything_starts(tmp_path):
    """A storage folder mounted read-only (a full quota or a remounted NFS share acts alike) is one
    line and exit 2, before Ray or any trial starts."""
    if not _can_mount_read_only(tmp_path):
        pytest.skip("this machine cannot mount a folder read-only in a user namespace (unshare -r -m)")
    store = tmp_path / "store"
    store.mkdir()
    path = tmp_path / "ro.yaml"
    path.write_text(yaml.safe_dump(grid(name="ro", methods=["lamol"], orders="forward")))
    cmd = (f"mount --bind {store} {store} && mount -o remount,bind,ro {store} && "
           f"exec {sys.executable} {REPO / 'cli.py'} grid {path} --storage {store} --quiet")
    res = subprocess.run(["unshare", "-r", "-m", "sh", "-c", cmd], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: {store}: cannot write here (Read-only file system)"), lines[0]
    assert "storage must be writable" in lines[0] and "Traceback" not in res.stderr
    assert list(store.iterdir()) == []


@pytest.fixture(scope="module")
def clean_R(tmp_path_factory):
    return run_trial(trial_config(tiny_trial()), tmp_path_factory.mktemp("clean")).R


def _fill_disk_at(monkeypatch, matches) -> list[str]:
    """Make the fsync of the first file whose path `matches` fail with ENOSPC (what a full disk
    does to a write that the page cache had accepted), once."""
    real = os.fsync
    fired: list[str] = []

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if not fired and matches(path):
            fired.append(path)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return fired


@pytest.mark.parametrize("during", ["checkpoint", "results"])
def test_a_full_disk_while_writing_fails_the_trial_cleanly_and_the_rerun_resumes(tmp_path, monkeypatch,
                                                                                 clean_R, during):
    cfg = trial_config(tiny_trial())
    workdir = tmp_path / "trial"
    if during == "checkpoint":  # the second task's checkpoint (its state, the last file of it)
        fired = _fill_disk_at(monkeypatch, lambda p: "/.stage-01." in p and "state.json" in p)
    else:  # the second task's results.json, written after its checkpoint
        fired = _fill_disk_at(monkeypatch, lambda p: os.path.basename(p).startswith(".results.json.")
                              and (workdir / "checkpoints" / "stage-01").is_dir())
    with pytest.raises(OSError) as err:
        run_trial(cfg, workdir)
    assert err.value.errno == errno.ENOSPC and fired
    monkeypatch.undo()
    # nothing half-written is left, and what is there reads as the last finished task
    leftovers = [p for p in workdir.rglob(".*") if ".tmp" in p.name or ".stage-" in p.name]
    assert leftovers == []
    saved = TrialResult.load(workdir)
    assert saved.stages_done == 1 and not saved.complete and saved.R == clean_R[:1]
    ckpt = latest_checkpoint(workdir)
    assert ckpt.stages_done == (1 if during == "checkpoint" else 2)
    seen = []
    resumed = run_trial(cfg, workdir, on_event=lambda n, **e: seen.append(n))
    assert "resume" in seen and seen.count("stage_start") == (1 if during == "checkpoint" else 0)
    assert resumed.R == clean_R and TrialResult.load(workdir).complete


def test_a_damaged_results_file_is_not_read_as_a_finished_cell(tmp_path):
    g = grid(name="dmg", methods=["lamol"], orders="forward")
    plan = build_plan(parse_grid(g, "dmg.yaml", storage=str(tmp_path)))
    (cell,) = plan.cells
    whole = run_trial(cell.config, plan.cell_dir(cell))
    f = plan.cell_dir(cell) / "results.json"
    f.write_text(f.read_text()[:200])  # half-copied
    assert plan.status(cell).state == "partial" and plan.pending() == [cell]
    seen = []
    again = run_trial(cell.config, plan.cell_dir(cell), on_event=lambda n, **e: seen.append(n))
    assert "stage_start" not in seen and again.R == whole.R  # rewritten from the last checkpoint
    assert plan.status(cell).state == "done"
