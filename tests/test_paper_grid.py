"""grids/paper.yaml: every task it names has a converter and a valid trial in every cell; the WOZ
trial config reads the converted folder."""

import itertools
from pathlib import Path

import yaml

from l2kd.config import load_trial_config, trial_config
from l2kd.tasks import TASKS

from conftest import REPO

PAPER = yaml.safe_load((REPO / "grids" / "paper.yaml").read_text())


def paper_tasks() -> dict[str, str]:
    """task -> the family's data folder."""
    return {t: fam["data"]["dir"] for fam in PAPER["families"].values() for order in fam["orders"] for t in order}


def test_every_task_is_made_or_validated_by_a_converter():
    for task, folder in paper_tasks().items():
        spec = TASKS.get(task)
        assert spec.converter, task
        # converted tasks read the `data convert` folder; L2KD's NLG files are read where they are
        assert (folder == "../shared/data/l2kd-nlg") == (spec.converter == "lamol"), task
    assert len(paper_tasks()) == 13


def test_orders_are_the_papers():
    wcs = PAPER["families"]["wcs"]["orders"]
    assert sorted(map(tuple, wcs)) == sorted(itertools.permutations(["woz.en", "cnn_dailymail", "wikisql"]))
    for family in ("nlg", "tc"):
        forward, backward = PAPER["families"][family]["orders"]
        assert backward == forward[::-1]


def test_every_cell_is_a_valid_trial():
    n = 0
    for fam in PAPER["families"].values():
        for order, method, seed in itertools.product(fam["orders"], PAPER["methods"], PAPER["seeds"]):
            for tasks in ([[t] for t in order] if method == "single" else [order]):
                cfg = dict(PAPER["base"], tasks=tasks, method=method, seed=seed, data=fam["data"])
                assert trial_config(cfg, "grids/paper.yaml").tasks == tasks
                n += 1
    assert n > 50


def test_woz_tiny_trial_reads_the_converted_folder():
    cfg = load_trial_config(REPO / "grids" / "trials" / "woz-tiny.yaml")
    assert cfg.tasks == ["woz.en"] and Path(cfg.data.dir) == Path("runs/data/woz")
    assert cfg.data.max_test_examples is None  # whole dialogues: dsEM needs every turn
