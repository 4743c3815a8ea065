"""The converters on the real raw files (../shared/data): exact sizes, and gold that scores itself 100."""

import json

import pytest

from l2kd.config import DataConfig
from l2kd.data import load_split
from l2kd.data.convert import convert_sources
from l2kd.metrics import ScoreInput, score
from l2kd.tasks import TASKS

from conftest import SHARED, needs_raw

pytestmark = needs_raw

# train / test as converted (WOZ and the NLG files: the paper's sizes; the rest: what the data allows)
SIZES = {
    "woz.en": (2536, 1646), "wikisql": (1000, 198), "cnn_dailymail": (306, 77),
    "e2enlg": (6000, 2000), "rnnlg.rest": (6228, 1039), "rnnlg.hotel": (6446, 1075),
    "rnnlg.tv": (8442, 1407), "rnnlg.laptop": (7944, 2649),
    "ag": (4377, 7600), "dbpedia": (5017, 7600), "amazon": (6968, 7600), "yelp": (4000, 1000),
    "yahoo": (3134, 784),
}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("converted")
    outcome = convert_sources([SHARED], "all", out)
    assert not outcome.not_found
    return out, {r.task: r for r in outcome.reports}


def test_every_task_has_its_size(converted):
    out, reports = converted
    assert {t: (r.written["train"], r.written["test"]) for t, r in reports.items()} == SIZES
    for task in ("woz.en", "e2enlg", "rnnlg.rest", "rnnlg.hotel", "rnnlg.tv", "rnnlg.laptop"):
        assert SIZES[task] == TASKS.get(task).paper_sizes
    assert not any(r.files for t, r in reports.items() if TASKS.get(t).family == "nlg")  # validated only
    assert len(load_split("ag", "test", DataConfig(dir=str(out)))) == 7600


def gold_scores(out, task, metric):
    test = load_split(task, "test", DataConfig(dir=str(out)))
    preds = [e.answers[0] for e in test]
    inp = ScoreInput(preds, [list(e.answers) for e in test], [e.id for e in test], task, [e.gold for e in test])
    return score(("em", metric), inp).aggregate


def test_woz_gold_and_dialogues(converted):
    out, reports = converted
    assert gold_scores(out, "woz.en", "dsem")["joint_goal_em"] == 100.0
    gold = json.loads((out / "woz.en_answers.json").read_text())
    assert gold[:3] == [["en_0_0", "price range: cheap, area: east; phone, postcode"],
                        ["en_0_1", "None"], ["en_0_2", "None"]]
    assert "woz_test_en.json: 400 dialogues, 1646 turns" in reports["woz.en"].notes


def test_wikisql_gold_parses_back(converted):
    out, reports = converted
    s = gold_scores(out, "wikisql", "lfem")
    assert s["lfem"] == s["lfem_lamol"] == 100.0
    assert reports["wikisql"].skipped == {"dev: table without a header here": 8318, "test: table without a header here": 15776,
                                          "dev: header unsure (', ' in a column)": 6,
                                          "test: header unsure (', ' in a column)": 1}
    assert reports["wikisql"].read["raw/dev.jsonl"] == 8421


def test_same_bytes_as_a_second_run(converted, tmp_path):
    out, _ = converted
    convert_sources([SHARED / "woz2.0-nbt"], "woz.en", tmp_path)
    for f in tmp_path.iterdir():
        assert f.read_bytes() == (out / f.name).read_bytes(), f.name


def test_tiny_trial_on_converted_woz_reports_dsem(tmp_path):
    """Convert the first dialogues of the real WOZ files, then train and score a tiny model on them."""
    from l2kd.trialconfig import trial_config
    from l2kd.results import TrialResult
    from l2kd.trial import run_trial

    from conftest import GPT2_TOKENIZER, tiny_trial

    raw = tmp_path / "raw"
    raw.mkdir()
    for split, n in (("train", 12), ("test", 6)):  # whole dialogues: dsEM walks every turn
        dialogues = json.loads((SHARED / "woz2.0-nbt" / f"woz_{split}_en.json").read_text())[:n]
        (raw / f"woz_{split}_en.json").write_text(json.dumps(dialogues))
    convert_sources([raw], "woz.en", tmp_path / "data")
    cfg = trial_config(tiny_trial(**{"tasks": ["woz.en"], "method": "single", "data.dir": str(tmp_path / "data"),
                                     "data.max_train_examples": None, "data.max_test_examples": None,
                                     "model.tokenizer": str(GPT2_TOKENIZER), "model.config.n_positions": 128}))
    result = run_trial(cfg, tmp_path / "run")
    assert result.primary == {"woz.en": "joint_goal_em"} and len(result.R) == 1
    scores = result.metrics[0]["woz.en"]
    assert {"joint_goal_em", "turn_request_em", "turn_goal_em", "avg_dialogue", "em"} <= set(scores)
    assert result.R[0][0] == scores["joint_goal_em"]
    preds = (tmp_path / "run" / "predictions" / "stage-00" / "woz.en.jsonl").read_text().splitlines()
    assert len(preds) == 24 and "joint_goal_em" in json.loads(preds[0])  # 24 turns in 6 dialogues
    assert TrialResult.load(tmp_path / "run").complete
