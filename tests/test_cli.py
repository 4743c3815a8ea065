"""The command line: bad input gives one clear line, exit code 2, and nothing written."""

import json
import subprocess
import sys

import pytest

from conftest import REPO


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=300)


def write_config(tmp_path, body: str):
    p = tmp_path / "trial.yaml"
    p.write_text(body)
    return p


def one_line_error(res, *fragments):
    assert res.returncode == 2, res.stderr
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ")
    for f in fragments:
        assert f in lines[0], lines[0]
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("body, fragments", [
    ("tasks: [e2enlgg]\nmethod: lamol\n", ["trial.yaml", "tasks", "did you mean 'e2enlg'"]),
    ("tasks: [synth.nlg]\nmethod: lamoll\n", ["trial.yaml", "method", "did you mean 'lamol'"]),
    ("tasks: [synth.nlg]\nmethod: lamol\ntraining: {epoch: 3}\n", ["training.epoch", "unknown key"]),
    ("tasks: [synth.nlg\n", ["not valid YAML"]),
])
def test_bad_config(tmp_path, body, fragments):
    cfg = write_config(tmp_path, body)
    res = cli("train", str(cfg), "--out", str(tmp_path / "out"))
    one_line_error(res, *fragments)
    assert not (tmp_path / "out").exists()


# word_kd: its teachers (trained in background processes by default) must not start either
@pytest.mark.parametrize("method", ["lamol", "word_kd"])
def test_missing_data_file(tmp_path, method):
    cfg = write_config(tmp_path, f"tasks: [e2enlg]\nmethod: {method}\ndata: {{dir: {tmp_path}}}\n")
    res = cli("train", str(cfg), "--out", str(tmp_path / "out"), "--teachers", str(tmp_path / "teachers"))
    one_line_error(res, "e2enlg_to_squad-train-v2.0.json", "no such file")
    assert not (tmp_path / "out").exists() and not (tmp_path / "teachers").exists()


@pytest.mark.parametrize("method", ["lamol", "word_kd"])
def test_malformed_data_file(tmp_path, method):
    (tmp_path / "e2enlg_to_squad-train-v2.0.json").write_text(json.dumps(
        {"data": [{"paragraphs": [{"context": "c", "qas": [{"question": "q", "answers": "oops"}]}]}]}))
    (tmp_path / "e2enlg_to_squad-test-v2.0.json").write_text("{}")
    cfg = write_config(tmp_path, f"tasks: [e2enlg]\nmethod: {method}\ndata: {{dir: {tmp_path}}}\n")
    res = cli("train", str(cfg), "--out", str(tmp_path / "out"), "--teachers", str(tmp_path / "teachers"))
    one_line_error(res, "e2enlg_to_squad-train-v2.0.json", "data[0].paragraphs[0].qas[0]", "'answers' must be a list")
    assert not (tmp_path / "out").exists() and not (tmp_path / "teachers").exists()


def test_missing_config_file(tmp_path):
    one_line_error(cli("train", str(tmp_path / "nope.yaml")), "nope.yaml", "no such file")


def test_train_runs_and_prints_R(tmp_path):
    cfg = write_config(tmp_path, """
tasks: [synth.sentiment]
method: single
data: {max_train_examples: 16, max_test_examples: 4}
model: {config: {n_layer: 1, n_embd: 32, n_head: 2, n_positions: 64}}
training: {epochs: 1, lr: 1.0e-3}
""")
    res = cli("train", str(cfg), "--out", str(tmp_path / "out"), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "synth.sentiment" in res.stdout and (tmp_path / "out" / "results.json").exists()


def test_data_convert_prints_counts_and_refuses_to_overwrite(tmp_path):
    src = tmp_path / "woz"
    src.mkdir()
    turn = {"transcript": "cheap food", "system_acts": [], "belief_state": [
        {"slots": [["price range", "cheap"]], "act": "inform"}]}
    for split in ("train", "test"):
        (src / f"woz_{split}_en.json").write_text(json.dumps([{"dialogue": [turn, turn]}]))
    out = tmp_path / "out"
    res = cli("data", "convert", str(src), "--task", "woz.en", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "woz.en" in res.stdout and "2 dialogues" not in res.stdout and "1 dialogues, 2 turns" in res.stdout
    assert (out / "woz.en_to_squad-test-v2.0.json").exists() and (out / "woz.en_answers.json").exists()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    res = cli("data", "convert", str(src), "--task", "woz.en", "--out", str(out))
    one_line_error(res, "woz.en", "exists; add --force to replace it")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_data_convert_missing_inputs(tmp_path):
    res = cli("data", "convert", str(tmp_path), "--task", "wikisql", "--out", str(tmp_path / "out"))
    one_line_error(res, "wikisql: no valid.jsonl in")
    assert not (tmp_path / "out").exists()
