"""Gold-answer files: loaded beside the test file for WOZ/WikiSQL, aligned, and refused when they do not fit."""

import json

import pytest

from l2kd.config import DataConfig
from l2kd.data import load_split
from l2kd.data.lamol_json import Example, to_lamol
from l2kd.errors import DataError


def write_task(tmp_path, task, ids, gold):
    exs = [Example(i, f"c{i}", "q", (f"a{i}",), k) for k, i in enumerate(ids)]
    for split in ("train", "test"):
        (tmp_path / f"{task}_to_squad-{split}-v2.0.json").write_text(json.dumps(to_lamol(exs)))
    if gold is not None:
        (tmp_path / f"{task}_answers.json").write_text(gold if isinstance(gold, str) else json.dumps(gold))
    return DataConfig(dir=str(tmp_path))


def test_woz_gold_is_attached_to_test_items_only(tmp_path):
    cfg = write_task(tmp_path, "woz.en", ["en_0_0", "en_0_1"], [["en_0_0", "food: thai;"], ["en_0_1", "None"]])
    test = load_split("woz.en", "test", cfg)
    assert [e.gold for e in test] == [{"id": "en_0_0", "answer": "food: thai;"}, {"id": "en_0_1", "answer": "None"}]
    assert all(e.gold is None for e in load_split("woz.en", "train", cfg))


def test_gold_follows_a_capped_subset(tmp_path):
    ids = [f"en_{d}_0" for d in range(10)]
    cfg = write_task(tmp_path, "woz.en", ids, [[i, "None"] for i in ids])
    capped = load_split("woz.en", "test", cfg.model_copy(update={"max_test_examples": 3}))
    assert [e.gold["id"] for e in capped] == [e.id for e in capped]


def test_wikisql_header_may_come_from_the_table(tmp_path):
    entry = {"sql": {"sel": 0, "agg": 0, "conds": [[0, 0, "x"]]}, "table": {"header": ["A"]}, "answer": "SELECT A FROM table"}
    cfg = write_task(tmp_path, "wikisql", ["q0"], [entry])
    assert load_split("wikisql", "test", cfg)[0].gold["header"] == ["A"]


@pytest.mark.parametrize("gold, fragment", [
    (None, "woz.en_answers.json: no such file"),
    ("[oops", "not valid JSON"),
    ({"en_0_0": "None"}, "expected a list"),
    ([["en_0_0", "None"]], "holds 1 entries but the test file has 2 items"),
    ([["en_0_1", "None"], ["en_0_0", "None"]], "[0]: id 'en_0_1' but the test file's item 0 is 'en_0_0'"),
    ([["en_0_0"], ["en_0_1", "None"]], "[0]: expected a [turn_id, answer] pair"),
])
def test_bad_woz_gold_files(tmp_path, gold, fragment):
    cfg = write_task(tmp_path, "woz.en", ["en_0_0", "en_0_1"], gold)
    with pytest.raises(DataError) as err:
        load_split("woz.en", "test", cfg)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_bad_wikisql_gold(tmp_path):
    cfg = write_task(tmp_path, "wikisql", ["q0"], [{"sql": {"sel": 0}, "header": ["A"], "answer": "x"}])
    with pytest.raises(DataError, match=r"wikisql_answers.json: \[0\]: 'sql' must be"):
        load_split("wikisql", "test", cfg)
