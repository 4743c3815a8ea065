"""A teacher damaged or half-copied on shared storage is never used: its manifest's content hashes
find the file, which is named in one line; it is refused or trained again, as the user chooses."""

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from l2kd.errors import ArtifactError
from l2kd.gridspec import parse_grid
from l2kd.teachers.seqkd import distil_file
from l2kd.plan import build_plan
from l2kd.teachers.store import MANIFEST, TeacherStore, pack_teacher, read_manifest, teacher_damage

from conftest import REPO
from test_gridspec import grid


@pytest.fixture(scope="module")
def grid_with_a_teacher(tmp_path_factory):
    """A one-cell Seq-KD grid whose teacher (and its Seq-KD data) is already in the run folder."""
    tmp = tmp_path_factory.mktemp("damage")
    g = grid(name="dmg", methods=["seq_kd"], orders=[["synth.nlg", "synth.sentiment"]])
    path = tmp / "dmg.yaml"
    path.write_text(yaml.safe_dump(g | {"storage": str(tmp / "store")}))
    plan = build_plan(parse_grid(yaml.safe_load(path.read_text()), str(path)))
    (cell,) = plan.cells
    store = TeacherStore(plan.run_dir / "teachers")
    folder = store.ensure(cell.config, "synth.nlg", seq_kd_modes=("greedy",))
    return path, plan, cell, folder


@pytest.fixture
def teacher(grid_with_a_teacher, tmp_path):
    """The trained teacher, restored whole after each test damages it."""
    path, plan, cell, folder = grid_with_a_teacher
    keep = tmp_path / "whole"
    shutil.copytree(folder, keep)
    yield path, plan, cell, folder
    shutil.rmtree(folder)
    shutil.copytree(keep, folder)


def test_the_manifest_records_the_hashes_of_weights_results_and_seq_kd_data(teacher):
    _, _, _, folder = teacher
    files = read_manifest(folder)["files"]
    assert {"checkpoints/stage-00/model.safetensors", "checkpoints/stage-00/tokenizer.json",
            "results.json", "distil-greedy.json"} <= set(files)
    assert teacher_damage(folder) is None


@pytest.mark.parametrize("damage", ["truncate weights", "alter seq-kd data", "remove weights", "truncate manifest"])
def test_a_damaged_teacher_is_found_named_and_refused(teacher, damage):
    _, plan, cell, folder = teacher
    weights = folder / "checkpoints" / "stage-00" / "model.safetensors"
    if damage == "truncate weights":
        bad = weights
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "remove weights":
        bad = weights
        weights.unlink()
    elif damage == "alter seq-kd data":
        bad = distil_file(folder, "greedy")
        bad.write_text(bad.read_text().replace('"', "'", 1).replace("'", '"', 1)[:-3] + "x]}")
    else:
        bad = folder / MANIFEST
        bad.write_text(bad.read_text()[:40])
    why = teacher_damage(folder)
    assert why is not None and why.startswith(str(bad)), why
    store = TeacherStore(folder.parent)
    with pytest.raises(ArtifactError, match="--damaged-teachers retrain") as err:
        store.find(cell.config, "synth.nlg")
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ArtifactError, match=str(bad)):
        pack_teacher(folder)  # what the grid puts in the object store
    with pytest.raises(ArtifactError, match=str(bad)):
        plan.check_teachers("refuse")
    assert not plan.teacher_ready(plan.teachers[folder.name])


def test_retrain_trains_a_damaged_teacher_again_to_the_same_bytes(teacher):
    _, plan, cell, folder = teacher
    before = read_manifest(folder)["files"]
    weights = folder / "checkpoints" / "stage-00" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    assert plan.check_teachers("retrain") == {folder.name: teacher_damage(folder)}
    store = TeacherStore(folder.parent, on_damaged="retrain")
    assert store.find(cell.config, "synth.nlg") is None  # to train, not used
    again = store.ensure(cell.config, "synth.nlg", seq_kd_modes=("greedy",))
    assert again == folder and store.trained == 1 and teacher_damage(folder) is None
    after = read_manifest(folder)["files"]
    for f in ("checkpoints/stage-00/model.safetensors", "checkpoints/stage-00/tokenizer.json",
              "distil-greedy.json"):  # training is deterministic: the same weights and answers
        assert after[f] == before[f], f


def test_a_manifest_written_before_hashes_were_recorded_is_accepted(teacher):
    _, plan, cell, folder = teacher
    manifest = read_manifest(folder)
    del manifest["files"]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    assert teacher_damage(folder) is None and plan.teacher_ready(plan.teachers[folder.name])
    store = TeacherStore(folder.parent)
    assert store.find(cell.config, "synth.nlg") == folder
    assert store.ensure(cell.config, "synth.nlg", seq_kd_modes=("greedy",)) == folder
    assert store.trained == 0 and pack_teacher(folder).complete
    # the Seq-KD data, used from now on, has its hash recorded
    assert set(read_manifest(folder)["files"]) == {"distil-greedy.json"}


def test_the_grid_command_names_a_damaged_teacher_in_its_dry_run_and_refuses_it(teacher):
    path, _, _, folder = teacher
    bad = distil_file(folder, "greedy")
    bad.write_text(bad.read_text()[: len(bad.read_text()) // 2])  # half-copied
    run = lambda *a: subprocess.run([sys.executable, str(REPO / "cli.py"), "grid", str(path), *a],  # noqa: E731
                                    capture_output=True, text=True, cwd=REPO, timeout=120)
    dry = run("--dry-run")
    # the dry run shows it and, as a pre-flight check, exits 2: a run would refuse it
    assert dry.returncode == 2 and "DAMAGED" in dry.stdout, dry.stdout + dry.stderr
    assert "a damaged teacher" in dry.stderr
    assert f"damaged teacher {folder.name}: {bad}: damaged" in " ".join(dry.stdout.split())
    res = run("--quiet")
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and str(bad) in lines[0], res.stderr
    assert "--damaged-teachers retrain" in lines[0] and not (folder.parent.parent / "cells").exists()
