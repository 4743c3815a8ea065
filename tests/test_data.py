"""The LAMOL JSON reader: valid files, every kind of malformed file, caps, the synthetic benchmark."""

import json

import pytest

from l2kd.config import DataConfig
from l2kd.data import cap_examples, load_split
from l2kd.data.lamol_json import read_lamol
from l2kd.data.synthetic import SIZES, generate
from l2kd.errors import DataError

from conftest import NLG_DIR, needs_shared


def write(tmp_path, obj, name="x_to_squad-train-v2.0.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return p


def item(context="c", question="q", answers=("a",), **qa):
    return {"title": "dummy", "paragraphs": [{"context": context, "qas": [
        {"id": "i", "question": question, "answers": [{"text": a} for a in answers], **qa}]}]}


def test_reads_items_and_keeps_every_reference(tmp_path):
    p = write(tmp_path, {"data": [item(answers=("a1", "a2")), item(context="d")]})
    exs = read_lamol(p)
    assert [e.context for e in exs] == ["c", "d"]
    assert exs[0].answers == ("a1", "a2") and exs[1].index == 1


def test_missing_ids_get_the_reference_hashcode(tmp_path):
    p = write(tmp_path, {"data": [{"paragraphs": [{"context": "c", "qas": [
        {"question": "q", "answers": [{"text": "a"}]}]}]}]})
    assert read_lamol(p)[0].id == "0_0_0"


def test_unanswerable_item(tmp_path):
    p = write(tmp_path, {"data": [item(answers=(), is_impossible=True)]})
    assert read_lamol(p)[0].answers == ("",)


@pytest.mark.parametrize("obj, fragment", [
    ("{not json", "not valid JSON (line 1"),
    ({"rows": []}, "top level: expected an object with a 'data' list"),
    ({"data": [{"paragraphs": [{"qas": []}]}]}, "data[0].paragraphs[0]: 'context' must be a string"),
    ({"data": [item(), {"paragraphs": [{"context": "c", "qas": [{"question": 3}]}]}]},
     "data[1].paragraphs[0].qas[0]: 'question' must be a string"),
    ({"data": [item(answers=())]}, "data[0].paragraphs[0].qas[0]: no answers and not marked is_impossible"),
    ({"data": [{"paragraphs": [{"context": "c", "qas": [{"question": "q", "answers": [{"txt": "a"}]}]}]}]},
     "qas[0].answers[0]: 'text' must be a string"),
    ({"data": []}, "the file holds no question-answer items"),
])
def test_malformed_files_name_the_file_and_item(tmp_path, obj, fragment):
    p = write(tmp_path, obj)
    with pytest.raises(DataError) as err:
        read_lamol(p)
    assert str(p) in str(err.value) and fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_split("e2enlg", "train", DataConfig(dir=str(tmp_path)))


def test_builtin_holds_only_synthetic_tasks():
    with pytest.raises(DataError, match="only the synthetic tasks"):
        load_split("e2enlg", "train", DataConfig(dir="builtin"))


def test_caps_keep_a_fixed_subset_in_file_order():
    exs = generate("synth.state", "train")
    a, b = cap_examples(exs, 10, seed=0), cap_examples(exs, 10, seed=0)
    assert a == b and [e.index for e in a] == sorted(e.index for e in a)
    assert cap_examples(exs, 10, seed=1) != a


def test_synthetic_benchmark_is_deterministic_and_sized():
    for task in ("synth.nlg", "synth.sentiment", "synth.state"):
        assert generate(task, "train") == generate(task, "train")
        assert len(generate(task, "test")) == SIZES["test"]
    assert all(len(e.answers) == 2 for e in generate("synth.nlg", "test"))
    cfg = DataConfig(dir="builtin", max_test_examples=5)
    assert len(load_split("synth.nlg", "test", cfg)) == 5


@needs_shared
def test_real_nlg_files_read_with_their_sizes():
    cfg = DataConfig(dir=str(NLG_DIR))
    assert len(load_split("e2enlg", "train", cfg)) == 6000
    test = load_split("rnnlg.rest", "test", cfg)
    assert len(test) == 1039 and all(len(e.answers) == 2 for e in test)
