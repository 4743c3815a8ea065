"""A grid's plan holds validated configs: a cell's config is validated once while planning and once
more in its trial (the Ray boundary carries it as a dict), never by a status check."""

import collections

import pytest

from l2kd.config import TrialConfig
from l2kd.gridspec import parse_grid
from l2kd.plan import build_plan, work

from test_gridspec import grid


class _Stop(Exception):
    pass


@pytest.fixture
def validations(monkeypatch):
    """Every TrialConfig validation, counted by the config's name (a cell id, teacher-<task>, ...)."""
    seen: collections.Counter = collections.Counter()
    original = TrialConfig.model_validate.__func__

    def counted(cls, data, *a, **k):
        seen[data.get("name") if isinstance(data, dict) else getattr(data, "name", None)] += 1
        return original(cls, data, *a, **k)

    monkeypatch.setattr(TrialConfig, "model_validate", classmethod(counted))
    return seen


def test_one_word_kd_cell_is_validated_once_in_planning_and_once_in_its_trial(validations, tmp_path,
                                                                              monkeypatch):
    pytest.importorskip("ray")
    import l2kd.trial
    from l2kd import grid as ray_grid

    spec = parse_grid(grid(orders="forward", methods=[{"name": "word_kd", "temperature": 2.0}]), "g.yaml",
                      storage=str(tmp_path))
    loaded = sum(validations.values())
    plan = build_plan(spec)
    (cell,) = plan.cells
    assert isinstance(cell.config, TrialConfig) and all(isinstance(j.config, TrialConfig)
                                                        for j in plan.teachers.values())
    assert validations[cell.id] == 1 and len(plan.teachers) == 2
    planned = sum(validations.values())
    # what `cli.py grid` asks of a plan before and after its run: none of it validates anything again
    for _ in range(3):
        assert plan.status(cell).state == "new" and plan.status(cell).stages == 2
    plan.check_unchanged()
    assert plan.pending() == [cell]
    assert sum(validations.values()) == planned
    work(plan)  # derives each teacher's config (two), not the cell's again
    assert validations[cell.id] == 1 and sum(validations.values()) <= planned + 2
    # the loads' own check (one config per kind of cell) and the teachers' keys (one per task)
    assert loaded == 1 and planned - loaded == 1 + 2

    got = []

    def run_trial(cfg, workdir, **kw):
        got.append(cfg)
        raise _Stop

    monkeypatch.setattr(l2kd.trial, "run_trial", run_trial)
    payload = ray_grid.cell_payloads(plan)
    assert isinstance(payload[cell.id]["config"], dict)  # plain data across the Ray boundary
    with pytest.raises(_Stop):
        ray_grid._cell_trainable({"cell": cell.id}, cells=payload, teacher_refs={}, run_dir=str(plan.run_dir))
    assert got == [cell.config] and validations[cell.id] == 2


def test_a_dry_run_from_the_grid_file_validates_the_cells_config_once(validations, tmp_path):
    """`cli.py grid --dry-run` asks the plan for every cell's status, work and problems."""
    import yaml

    import cli

    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(grid(orders="forward", methods=[{"name": "word_kd", "temperature": 2.0}])))
    assert cli.main(["grid", str(path), "--storage", str(tmp_path / "runs"), "--dry-run"]) == 0
    cells = [name for name in validations if name and name.startswith("g.")]
    assert cells == ["g.nlg-sent.word_kd.s3"] and validations[cells[0]] == 1  # 7 times before
    assert validations["check"] == 1  # the load's check of each kind of cell
    assert validations["teacher-synth.nlg"] <= 2  # its key while planning, its work

