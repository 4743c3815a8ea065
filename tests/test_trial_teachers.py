"""A trial's teachers trained in background processes while the student runs: the same teachers
and the same trial as training them first; a failed or stopped teacher is a clear error; leaving
stops them."""

import json
import multiprocessing as mp
import os
import signal
import time

import pytest

from l2kd.teachers.background import WORKER_OUTPUT, TrialTeachers
from l2kd.errors import ArtifactError
from l2kd.teachers.store import MANIFEST, TeacherStore, read_manifest
from l2kd.trialconfig import trial_config

from conftest import tiny_trial
from test_cli import cli, write_config

TINY_WORD_KD = """
name: bg
tasks: [synth.nlg, synth.sentiment]
method: word_kd
seed: 7
data: {dir: builtin, max_train_examples: 48, max_test_examples: 12}
model: {config: {n_layer: 1, n_embd: 32, n_head: 2, n_positions: 96}}
training: {epochs: 1, lr: 1.0e-3, threads: 1}
eval: {before_training: false}
"""


def _manifests(root):
    return {m["task"]: (m["key"], m["scores"]) for m in (read_manifest(p) for p in root.iterdir() if (p / MANIFEST).is_file())}


def test_background_teachers_give_the_same_teachers_and_trial(tmp_path):
    cfg = write_config(tmp_path, TINY_WORD_KD)
    first = cli("train", str(cfg), "--quiet", "--teacher-workers", "0",
                "--teachers", str(tmp_path / "t0"), "--out", str(tmp_path / "o0"))
    assert first.returncode == 0, first.stderr
    background = cli("train", str(cfg), "--quiet", "--teacher-workers", "2",
                     "--teachers", str(tmp_path / "t2"), "--out", str(tmp_path / "o2"))
    assert background.returncode == 0, background.stderr
    assert _manifests(tmp_path / "t0") == _manifests(tmp_path / "t2") and len(_manifests(tmp_path / "t2")) == 2
    assert all((p / WORKER_OUTPUT).is_file() for p in (tmp_path / "t2").iterdir() if p.is_dir())
    r0, r2 = (json.loads((tmp_path / o / "results.json").read_text())["R"] for o in ("o0", "o2"))
    assert r0 == r2
    # teachers on disk are found, not trained again
    again = TrialTeachers(TeacherStore(tmp_path / "t2"), trial_config(tiny_trial(method="word_kd")), 1)
    assert again.training == [] and set(again) == {"synth.nlg", "synth.sentiment"}


def _slow_config():
    return trial_config(tiny_trial(method="word_kd", **{"training.epochs": 50, "data.max_train_examples": 200}))


def _wait_for_children(n: int, timeout: float = 120.0) -> list:
    deadline = time.monotonic() + timeout
    while len(mp.active_children()) < n:
        assert time.monotonic() < deadline, "the teacher processes did not start"
        time.sleep(0.1)
    return mp.active_children()


def test_leaving_stops_the_teachers_still_training(tmp_path):
    store = TeacherStore(tmp_path)
    with TrialTeachers(store, _slow_config(), workers=2) as teachers:
        assert "synth.nlg" in teachers  # membership does not wait
        teachers.start()
        procs = _wait_for_children(2)
    assert not any(p.is_alive() for p in procs) and mp.active_children() == []
    assert not any((p / MANIFEST).exists() for p in tmp_path.iterdir() if p.is_dir())


def test_a_teacher_that_dies_is_a_clear_error(tmp_path):
    store = TeacherStore(tmp_path)
    with TrialTeachers(store, _slow_config(), workers=1) as teachers:
        teachers.start()
        (proc,) = _wait_for_children(1)
        os.kill(proc.pid, signal.SIGKILL)
        with pytest.raises(ArtifactError, match=r"teacher of synth.nlg failed in its process: .*code -9"
                                                r".*worker.out"):
            teachers["synth.nlg"]


def test_a_lookup_before_start_is_an_error_not_a_hang(tmp_path):
    teachers = TrialTeachers(TeacherStore(tmp_path), _slow_config(), workers=1)
    with pytest.raises(ArtifactError, match="not being trained"):
        teachers["synth.nlg"]
