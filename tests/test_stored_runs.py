"""Run folders and teacher stores written by earlier code are found, resumed and reported, not
retrained: identity changes must keep the ids and hashes of what users already have on disk. The
fixture under tests/fixtures/ was written by the code of its date (its README says how)."""

import shutil

import yaml

from l2kd.gridspec import parse_grid
from l2kd.plan import build_plan
from l2kd.results import TrialResult
from l2kd.trial import run_trial

from conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "run-2026-12-01"


def stored_plan(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "store" / "oldrun", ignore=shutil.ignore_patterns("README.md", "grid.yaml"))
    g = yaml.safe_load((FIXTURE / "grid.yaml").read_text())
    g["storage"] = str(tmp_path / "store")
    return build_plan(parse_grid(g, str(FIXTURE / "grid.yaml")))


def test_a_stored_grid_folder_keeps_its_cells_and_teachers(tmp_path):
    plan = stored_plan(tmp_path)
    states = {c.method: plan.status(c).state for c in plan.cells}
    assert states == {"finetune": "partial", "lamol": "done", "word_kd": "done"}
    assert sorted(plan.teachers) == sorted(p.name for p in (FIXTURE / "teachers").iterdir() if p.is_dir())
    assert all(plan.teacher_ready(job) for job in plan.teachers.values())
    assert not plan.damaged_teachers()
    plan.check_unchanged()  # no cell reads as run with other settings


def test_a_stored_partial_cell_resumes_at_its_next_task(tmp_path):
    plan = stored_plan(tmp_path)
    cell = next(c for c in plan.cells if c.method == "finetune")
    before = TrialResult.load(plan.cell_dir(cell) / "results.json")
    stages = []
    result = run_trial(cell.config, plan.cell_dir(cell),
                       on_event=lambda name, **e: stages.append(e["stage"]) if name == "step" else None)
    assert set(stages) == {1}  # only the second task trains
    assert result.complete and result.R[0] == before.R[0]
    assert plan.status(cell).state == "done"


def test_a_stored_grid_folder_reports_without_training(tmp_path, capsys):
    import cli

    plan = stored_plan(tmp_path)
    assert cli.main(["report", str(plan.run_dir)]) == 0
    table = (plan.run_dir / "report" / "report.md").read_text()
    assert "lamol" in table and "word_kd" in table
    assert not list(plan.run_dir.glob("cells/*/checkpoints/stage-01/*.tmp*"))
    assert plan.status(next(c for c in plan.cells if c.method == "finetune")).state == "partial"


def test_a_stored_teacher_without_the_seq_kd_data_a_cell_needs_reads_to_train(tmp_path, capsys, monkeypatch):
    """The one readiness check (l2kd.teachers.store.ready) asks for the Seq-KD data of the modes
    the cells need, not only the manifest: the plan and the dry run say "to train"."""
    import cli

    g = yaml.safe_load((FIXTURE / "grid.yaml").read_text())
    g["methods"] = ["word_kd", "seq_kd"]  # seq_kd's teachers are word_kd's; it also needs distil-greedy.json
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(g))
    shutil.copytree(FIXTURE / "teachers", tmp_path / "store" / "oldrun" / "teachers")
    plan = build_plan(parse_grid({**g, "storage": str(tmp_path / "store")}, str(grid)))
    assert sorted(plan.teachers) == sorted(p.name for p in (FIXTURE / "teachers").iterdir() if p.is_dir())
    assert all(job.seq_kd_modes == {"greedy"} and not plan.teacher_ready(job) for job in plan.teachers.values())
    word_kd_only = build_plan(parse_grid({**g, "methods": ["word_kd"], "storage": str(tmp_path / "store")}, str(grid)))
    assert all(word_kd_only.teacher_ready(job) for job in word_kd_only.teachers.values())

    monkeypatch.setenv("COLUMNS", "200")
    assert cli.main(["grid", str(grid), "--dry-run", "--storage", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "synth." in line and "greedy" in line]
    assert len(rows) == 2 and all("to train" in r and "ready" not in r for r in rows), out
    assert "a run now would: train 2 teacher(s)" in out
