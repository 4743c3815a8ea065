"""Grid files and plans, without Ray: validation messages, orders, cell ids, shared teachers, work."""

import itertools
import subprocess
import sys

import pytest
import yaml

from l2kd.errors import ConfigError
from l2kd.gridspec import expand_orders, load_grid, parse_grid
from l2kd.plan import build_plan, cell_tokens, work

from conftest import REPO

TASKS = ["synth.nlg", "synth.sentiment", "synth.state"]


def grid(**over) -> dict:
    g = {"name": "g", "tasks": TASKS[:2], "orders": "forward_reverse", "methods": ["lamol", "word_kd"],
         "seeds": [3], "data": {"max_train_examples": 24, "max_test_examples": 6},
         "model": {"config": {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 96}},
         "training": {"epochs": 1, "lr": 1e-3, "threads": 1}, "eval": {"before_training": False}}
    g.update(over)
    return g


@pytest.fixture
def storage(tmp_path):
    return str(tmp_path / "store")


@pytest.mark.parametrize("over, fragment", [
    ({"methodz": ["lamol"]}, "methodz: unknown key; did you mean 'methods'"),
    ({"tasks": ["synth.nlgg"]}, "grids/x.yaml: tasks: unknown task 'synth.nlgg'; did you mean 'synth.nlg'"),
    ({"methods": ["lamoll"]}, "methods[0]: method: unknown method 'lamoll'; did you mean 'lamol'"),
    ({"methods": [{"name": "word_kd", "temprature": 2}]}, "methods[0]: method (word_kd): temprature: unknown key"),
    ({"training": {"epoch": 2}}, "training: epoch: unknown key; did you mean 'epochs'"),
    ({"methods": [{"name": "lamol", "training": {"lr": -1}}]}, "methods[0].training: lr"),
    ({"orders": "backwards"}, "orders: expected forward, forward_reverse, all_permutations"),
    ({"orders": [["synth.nlg"]]}, "grids/x.yaml: orders[0]: ['synth.nlg'] is not an order of the tasks"),
    ({"orders": {"random": 7}}, "expected a count from 1 to 2"),
    ({"methods": ["lamol", "lamol"]}, "appear twice; give each entry its own 'label'"),
    ({"methods": ["multitask"]}, "list it under references"),
    ({"seeds": [1, 1]}, "seeds: a seed appears twice"),
    ({"resources": {"gpu": -1}}, "resources.gpu"),
])
def test_bad_grids_name_the_file_and_key(over, fragment, storage):
    with pytest.raises(ConfigError) as err:
        parse_grid(grid(**over), "grids/x.yaml", storage=storage)
    assert str(err.value).startswith("grids/x.yaml") and fragment in str(err.value), str(err.value)


def test_errors_in_an_experiments_list_name_the_entry_and_its_key(storage):
    for exp, fragment in [({"name": "e", "tasks": ["synth.nlgg"]}, "x.yaml: experiments[1]: tasks: unknown task"),
                          ({"name": "e", "tasks": TASKS[:2], "orders": [["synth.nlg", "synth.sentimen"]]},
                           "x.yaml: experiments[1].orders[0]: 'synth.sentimen' is not one of the tasks")]:
        g = grid(experiments=[{"name": "ok", "tasks": TASKS[:2]}, exp])
        del g["tasks"], g["orders"]
        with pytest.raises(ConfigError) as err:
            parse_grid(g, "x.yaml", storage=storage)
        assert str(err.value).startswith(fragment), str(err.value)


def test_orders_and_their_stable_ids():
    assert [o.id for o in expand_orders("forward_reverse", TASKS, "o")] == \
        ["nlg-sent-state", "state-sent-nlg"]
    perms = expand_orders("all_permutations", TASKS, "o")
    assert len(perms) == 6 and {o.tasks for o in perms} == set(itertools.permutations(TASKS))
    a = expand_orders({"random": 3, "seed": 5}, TASKS, "o")
    assert a == expand_orders({"random": 3, "seed": 5}, TASKS, "o") and len({o.tasks for o in a}) == 3
    assert expand_orders([["synth.state", "synth.nlg", "synth.sentiment"]], TASKS, "o")[0].id == "state-nlg-sent"
    with pytest.raises(ConfigError, match="appears twice"):
        expand_orders([TASKS, TASKS], TASKS, "o")


def test_cells_teachers_and_their_users(storage):
    spec = parse_grid(grid(methods=["finetune", "lamol", "word_kd", {"name": "seq_kd_soft"}],
                           references=["single", "multitask", {"name": "multitask", "label": "multi_qa",
                                                                "qa_only": True}]),
                      "g.yaml", storage=storage)
    plan = build_plan(spec)
    ids = [c.id for c in plan.cells]
    assert "g.nlg-sent.word_kd.s3" in ids and "g.sent-nlg.finetune.s3" in ids
    assert "g.all.multitask.s3" in ids and "g.all.multi_qa.s3" in ids
    assert len(ids) == 2 * 4 + 2
    # one teacher per task, shared by word_kd and seq_kd_soft in both orders, and the Single rows
    assert sorted(j.task for j in plan.teachers.values()) == ["synth.nlg", "synth.sentiment"]
    for job in plan.teachers.values():
        assert len(job.users) == 4 and job.reference and job.seq_kd_modes == {"greedy"}
    cell = next(c for c in plan.cells if c.id == "g.sent-nlg.word_kd.s3")
    assert cell.order == ("synth.sentiment", "synth.nlg") and len(cell.teachers) == 2
    assert all(plan.status(c).state == "new" for c in plan.cells)


def test_per_method_overrides_and_paths_are_resolved(storage, tmp_path):
    spec = parse_grid(grid(methods=[{"name": "lamol", "label": "lamol_long", "training": {"epochs": 3}}],
                           data={"dir": "builtin", "distil_dir": "some/rel"}), "g.yaml", storage=storage)
    cfg = build_plan(spec).cells[0].config
    assert cfg.training.epochs == 3 and cfg.training.lr == 1e-3
    assert cfg.data.distil_dir.startswith("/")  # trials run in other working directories


def test_work_in_trained_tokens_counts_lm_rows_and_pseudo_samples(storage):
    spec = parse_grid(grid(methods=["finetune", "lamol"], orders="forward"), "g.yaml", storage=storage)
    plan = build_plan(spec)
    w = work(plan)
    ft, lamol = (w["cells"][f"g.nlg-sent.{m}.s3"] for m in ("finetune", "lamol"))
    # LAMOL trains QA rows + LM rows (one token longer) + pseudo samples: more than twice finetune
    assert ft > 0 and lamol > 2 * ft
    assert w["total"] == sum(w["cells"].values()) + sum(w["teachers"].values())
    assert cell_tokens(plan.cells[0].config) == ft


def test_shipped_grids_validate(storage):
    for name in ("demo", "nlg", "paper"):
        spec = load_grid(REPO / "grids" / f"{name}.yaml", storage=storage)
        plan = build_plan(spec, strict_data=False)
        assert plan.cells, name
    paper = build_plan(load_grid(REPO / "grids" / "paper.yaml", storage=storage), strict_data=False)
    lifelong = [c for c in paper.cells if not c.reference]
    # WOZ/CNN/WikiSQL in 6 orders, NLG and TC forward + reverse; five lifelong methods
    assert len({(c.experiment, c.order_id) for c in lifelong}) == 6 + 2 + 2
    assert {c.method for c in lifelong} == {"finetune", "lamol", "word_kd", "seq_kd_soft", "seq_kd"}


def test_cli_refuses_a_bad_grid_before_starting_anything(tmp_path):
    bad = grid(methods=["lamol", "word_kdd"], storage=str(tmp_path / "store"))
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    res = subprocess.run([sys.executable, str(REPO / "cli.py"), "grid", str(tmp_path / "bad.yaml")],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "bad.yaml: methods[1]" in lines[0] and "did you mean 'word_kd'" in lines[0]
    assert not (tmp_path / "store").exists()


def test_comparison_methods_and_multitask_bounds_in_a_grid(storage):
    spec = parse_grid(grid(methods=["ewc", {"name": "mas", "reg_lambda": 100.0}, "gem"],
                           references=[{"name": "multitask", "label": "mt_uncertainty", "sampler": "uncertainty"},
                                       "multitask_ca"]), "g.yaml", storage=storage)
    plan = build_plan(spec)
    assert {c.method for c in plan.cells} == {"ewc", "mas", "gem", "mt_uncertainty", "multitask_ca"}
    assert [c.id for c in plan.cells if c.reference] == ["g.all.mt_uncertainty.s3", "g.all.multitask_ca.s3"]
    assert not plan.teachers  # no method here needs a teacher
    with pytest.raises(ConfigError, match="zero_stage must be 0"):
        parse_grid(grid(methods=["gem"], training={"zero_stage": 1}), "g.yaml", storage=storage)


def test_a_changed_cell_is_refused_naming_the_setting(storage):
    import json

    from l2kd.errors import ArtifactError

    plan = build_plan(parse_grid(grid(methods=["lamol"]), "g.yaml", storage=storage))
    cell = plan.cells[0]
    old = cell.config.to_dict()
    old["training"]["lr"] = 5e-4
    plan.cell_dir(cell).mkdir(parents=True)
    (plan.cell_dir(cell) / "results.json").write_text(json.dumps({"config_hash": "other", "R": [], "config": old}))
    with pytest.raises(ArtifactError, match=r"1 cell\(s\) ran with other settings .*training.lr \(0.0005 -> 0.001\)"):
        plan.check_unchanged()


def test_teachers_no_cell_uses_are_left_out_of_the_grids_report(storage):
    """--fresh with other settings keeps the old teachers (kept by content); the grid's own report
    must not read them beside the new cells."""
    plan = build_plan(parse_grid(grid(), "g.yaml", storage=storage))
    used = sorted(plan.teachers)[0]
    for name in (used, "synth.nlg-0123456789ab"):
        (plan.run_dir / "teachers" / name).mkdir(parents=True)
    assert plan.unused_teachers() == [plan.run_dir / "teachers" / "synth.nlg-0123456789ab"]


def test_work_ahead_leaves_out_finished_cells(storage):
    import json

    from l2kd.identity import config_hash

    plan = build_plan(parse_grid(grid(methods=["lamol"]), "g.yaml", storage=storage))
    before = work(plan)
    assert before["ahead"] == before["total"]

    cell = plan.cells[0]
    plan.cell_dir(cell).mkdir(parents=True)
    (plan.cell_dir(cell) / "results.json").write_text(json.dumps(
        {"config_hash": config_hash(cell.config), "R": [[1, 1], [1, 1]], "complete": True}))
    after = work(plan)
    assert after["ahead"] == before["total"] - before["cells"][cell.id]


@pytest.mark.parametrize("over, fragment", [
    ({"seeds": ["7"]}, "seeds.0: Input should be a valid integer"),
    ({"training": {"epochs": "3"}}, "epochs: Input should be a valid integer"),
    ({"orders": [["synth.nlg", "synth.sentimen"], ["synth.sentiment", "synth.nlg"]]},
     "'synth.sentimen' is not one of the tasks"),
])
def test_no_silent_coercion_and_did_you_mean_in_orders(over, fragment, storage):
    with pytest.raises(ConfigError) as e:
        parse_grid(grid(**over), "g.yaml", storage=storage)
    assert fragment in str(e.value) and "g.yaml" in str(e.value)
    if "orders" in over:
        assert "did you mean 'synth.sentiment'" in str(e.value)


def test_yaml_reads_exponents_without_a_dot_as_numbers(tmp_path):
    from l2kd.config import load_yaml

    p = tmp_path / "t.yaml"
    p.write_text("training: {lr: 1e-4, epochs: 3}\n")
    assert load_yaml(p)["training"] == {"lr": 1e-4, "epochs": 3}
