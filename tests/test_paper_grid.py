"""grids/paper.yaml: the paper's orders, every task made (or validated) by a converter and read from
the right folder, every cell a valid trial; the WOZ trial config reads the converted folder."""

import itertools
from pathlib import Path

from l2kd.config import load_yaml
from l2kd.trialconfig import load_trial_config
from l2kd.gridspec import load_grid, parse_grid
from l2kd.plan import build_plan
from l2kd.tasks import TASKS

from conftest import REPO


def paper(tmp_path):
    return load_grid(REPO / "grids" / "paper.yaml", storage=str(tmp_path))


def test_every_task_is_made_or_validated_by_a_converter(tmp_path):
    spec = paper(tmp_path)
    tasks = {t: exp.data["dir"] for exp in spec.experiments for t in exp.tasks}
    assert len(tasks) == 13
    for task, folder in tasks.items():
        converter = TASKS.get(task).converter
        assert converter, task
        # converted tasks read the `data convert` folder; L2KD's NLG files are read where they are
        assert (folder == "../shared/data/l2kd-nlg") == (converter == "lamol"), task


def test_orders_are_the_papers(tmp_path):
    spec = paper(tmp_path)
    orders = {exp.name: [o.tasks for o in spec.orders(exp)] for exp in spec.experiments}
    assert sorted(orders["wcs"]) == sorted(itertools.permutations(["woz.en", "cnn_dailymail", "wikisql"]))
    for family in ("nlg", "tc"):
        forward, backward = orders[family]
        assert backward == forward[::-1]
    assert orders["nlg"][0] == ("e2enlg", "rnnlg.rest", "rnnlg.hotel", "rnnlg.tv", "rnnlg.laptop")
    assert orders["tc"][0] == ("amazon", "yelp", "yahoo", "ag", "dbpedia")


def test_every_cell_is_a_valid_trial_with_the_papers_settings(tmp_path):
    plan = build_plan(paper(tmp_path), strict_data=False)
    assert len(plan.cells) > 50
    for cell in plan.cells:
        cfg = cell.config  # validated
        assert cfg.training.epochs == (27 if cell.method.startswith("multi_long") else 9)
        assert cfg.training.batch_policy == "paper" and cfg.model.pretrained == "gpt2"


def test_woz_tiny_trial_reads_the_converted_folder():
    cfg = load_trial_config(REPO / "grids" / "trials" / "woz-tiny.yaml")
    assert cfg.tasks == ["woz.en"] and Path(cfg.data.dir) == Path("runs/data/paper")
    assert cfg.data.max_test_examples is None  # whole dialogues: dsEM needs every turn


def test_the_nlg_family_included_from_nlg_yaml_plans_what_it_did_written_out(tmp_path):
    """paper.yaml takes its NLG experiment from grids/nlg.yaml (include:); its plan is the one the
    experiment written out in paper.yaml gave: the same cells, config hashes and teachers."""
    raw = load_yaml(REPO / "grids" / "paper.yaml")
    assert raw["experiments"][1] == {"include": "nlg.yaml"}
    raw["experiments"][1] = {"name": "nlg", "tasks": ["e2enlg", "rnnlg.rest", "rnnlg.hotel", "rnnlg.tv",
                                                      "rnnlg.laptop"],
                             "orders": "forward_reverse", "data": {"dir": "../shared/data/l2kd-nlg"}}
    written_out = build_plan(parse_grid(raw, "paper.yaml", storage=str(tmp_path)), strict_data=False)
    included = build_plan(paper(tmp_path), strict_data=False)
    assert [(c.id, c.config_hash) for c in included.cells] == [(c.id, c.config_hash) for c in written_out.cells]
    assert sorted(included.teachers) == sorted(written_out.teachers)
    assert len(included.cells) == 75 and len(included.teachers) == 13
    assert sum(c.experiment == "nlg" for c in included.cells) == 2 * 5 + 5 + 4  # lifelong, single_qa, multi*
