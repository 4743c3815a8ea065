"""The command line: bad input gives one clear line, exit code 2, and nothing written."""

import contextlib
import io
import json
import subprocess
import sys

import pytest

from conftest import REPO


def cli(*args, cwd=None):
    """`cli.py ARGS` as a process of its own: exit code, stdout, stderr."""
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=300)


def cli_here(*args):
    """`cli.py ARGS` run by its `main` in this process, its streams captured: what a process would
    print and return, without starting Python and torch again (seconds a call). The error paths
    below use it; test_bad_config_in_a_process_of_its_own keeps one whole-process check of them."""
    import cli as command

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = command.main(list(args))
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else 2
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def write_config(tmp_path, body: str):
    p = tmp_path / "trial.yaml"
    p.write_text(body)
    return p


def one_line_error(res, *fragments):
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
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
    res = cli_here("train", str(cfg), "--out", str(tmp_path / "out"))
    one_line_error(res, *fragments)
    assert not (tmp_path / "out").exists()


def test_bad_config_in_a_process_of_its_own(tmp_path):
    """The same one line and exit 2 from a real process (no traceback, nothing else on stderr)."""
    cfg = write_config(tmp_path, "tasks: [e2enlgg]\nmethod: lamol\n")
    one_line_error(cli("train", str(cfg), "--out", str(tmp_path / "out")), "trial.yaml", "did you mean 'e2enlg'")
    assert not (tmp_path / "out").exists()


# word_kd: its teachers (trained in background processes by default) must not start either
@pytest.mark.parametrize("method", ["lamol", "word_kd"])
def test_missing_data_file(tmp_path, method):
    cfg = write_config(tmp_path, f"tasks: [e2enlg]\nmethod: {method}\ndata: {{dir: {tmp_path}}}\n")
    res = cli_here("train", str(cfg), "--out", str(tmp_path / "out"), "--teachers", str(tmp_path / "teachers"))
    one_line_error(res, "e2enlg_to_squad-train-v2.0.json", "no such file")
    assert not (tmp_path / "out").exists() and not (tmp_path / "teachers").exists()


@pytest.mark.parametrize("method", ["lamol", "word_kd"])
def test_malformed_data_file(tmp_path, method):
    (tmp_path / "e2enlg_to_squad-train-v2.0.json").write_text(json.dumps(
        {"data": [{"paragraphs": [{"context": "c", "qas": [{"question": "q", "answers": "oops"}]}]}]}))
    (tmp_path / "e2enlg_to_squad-test-v2.0.json").write_text("{}")
    cfg = write_config(tmp_path, f"tasks: [e2enlg]\nmethod: {method}\ndata: {{dir: {tmp_path}}}\n")
    res = cli_here("train", str(cfg), "--out", str(tmp_path / "out"), "--teachers", str(tmp_path / "teachers"))
    one_line_error(res, "e2enlg_to_squad-train-v2.0.json", "data[0].paragraphs[0].qas[0]", "'answers' must be a list")
    assert not (tmp_path / "out").exists() and not (tmp_path / "teachers").exists()


@pytest.mark.parametrize("setting, fragments", [
    ("model.tokenizer={tmp}/no_such_tok", ["trial.yaml", "model.tokenizer", "no_such_tok: no such folder"]),
    ("model.tokenizer={tmp}", ["trial.yaml", "model.tokenizer", "neither GPT-2's encoder.json"]),
    ("model.pretrained={tmp}/no_such_model", ["trial.yaml", "model.pretrained", "no such folder"]),
    ("model.config.n_layr=2", ["trial.yaml", "model.config", "'n_layr' is not a GPT2Config field",
                               "did you mean 'n_layer'"]),
    ("=3", ["--set", "names no key"]),
])
def test_bad_model_setting(tmp_path, setting, fragments):
    """A tokenizer, model or override that cannot be used: one line before anything is written."""
    cfg = write_config(tmp_path, "tasks: [synth.nlg]\nmethod: finetune\n"
                                 "model: {config: {n_layer: 1, n_embd: 32, n_head: 2}}\n")
    (tmp_path / "junk.txt").write_text("not a tokenizer")
    setting = setting.format(tmp=tmp_path)
    one_line_error(cli_here("train", str(cfg), "--set", setting, "--out", str(tmp_path / "out")), *fragments)
    assert not (tmp_path / "out").exists()
    if not setting.startswith("="):
        one_line_error(cli_here("validate", str(cfg), "--set", setting), *fragments[1:])


def test_a_grid_whose_inputs_cannot_be_read_starts_nothing(tmp_path):
    """Every cell's data and tokenizer are read before Ray starts, whatever its method (a
    finetune-only grid used to start trials that failed one by one)."""
    base = ("name: g\ntasks: [synth.nlg, synth.sentiment]\nmethods: [finetune]\nseeds: [1]\n"
            "model: {{config: {{n_layer: 1, n_embd: 32, n_head: 2}}{tok}}}\ndata: {{dir: {data}}}\n")
    storage = tmp_path / "runs"
    for body, fragments in [
        (base.format(tok="", data=tmp_path / "nodata"), ["synth.nlg_to_squad-train-v2.0.json", "no such file"]),
        (base.format(tok=f", tokenizer: {tmp_path}/notok", data="builtin"),
         ["grid.yaml", "model.tokenizer", "no such folder"]),
    ]:
        grid = tmp_path / "grid.yaml"
        grid.write_text(body)
        one_line_error(cli("grid", str(grid), "--storage", str(storage), "--no-dashboard", "--quiet"), *fragments)
        assert not storage.exists()
        dry = cli("grid", str(grid), "--storage", str(storage), "--dry-run")
        assert dry.returncode == 2 and "cannot read" in dry.stdout and not storage.exists()
        assert dry.stderr.startswith("error: a run would stop: cannot read")


def test_a_dry_run_of_a_grid_whose_include_is_missing_or_a_cycle_is_one_line(tmp_path):
    (tmp_path / "a.yaml").write_text("include: b.yaml\nmethods: [lamol]\n")
    (tmp_path / "b.yaml").write_text("include: a.yaml\ntasks: [synth.nlg]\n")
    (tmp_path / "c.yaml").write_text("experiments: [{include: gone.yaml}]\nmethods: [lamol]\n")
    storage = tmp_path / "runs"
    one_line_error(cli("grid", str(tmp_path / "a.yaml"), "--storage", str(storage), "--dry-run"),
                   "b.yaml: include: a.yaml: a cycle of includes (a.yaml -> b.yaml -> a.yaml)")
    one_line_error(cli("grid", str(tmp_path / "c.yaml"), "--storage", str(storage), "--dry-run"),
                   "c.yaml: experiments[0].include: gone.yaml: no such file")
    assert not storage.exists()


def test_bad_bench_counts():
    res = cli("bench", "grids/trials/demo.yaml", "--steps", "0")
    assert res.returncode == 2 and "--steps: expected a whole number, 1 or more" in res.stderr
    res = cli("bench", "grids/trials/demo.yaml", "--peak-tflops", "-1")
    assert res.returncode == 2 and "--peak-tflops: expected a number above 0" in res.stderr


def test_non_utf8_config(tmp_path):
    cfg = tmp_path / "trial.yaml"
    cfg.write_bytes(b"\xff\xfetasks: [synth.nlg]\n")
    one_line_error(cli_here("train", str(cfg)), "trial.yaml", "not a UTF-8 text file")


def test_a_teacher_store_that_is_a_file(tmp_path):
    (tmp_path / "afile").write_text("")
    cfg = write_config(tmp_path, "tasks: [synth.nlg]\nmethod: word_kd\n")
    res = cli_here("train", str(cfg), "--teachers", str(tmp_path / "afile"), "--out", str(tmp_path / "out"))
    one_line_error(res, "afile", "the teacher store must be a folder")
    assert not (tmp_path / "out").exists()


def test_missing_config_file(tmp_path):
    one_line_error(cli_here("train", str(tmp_path / "nope.yaml")), "nope.yaml", "no such file")


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
    # third-party noise filtered at its source: DeepSpeed's op-build line goes to trial.log only
    assert "built successfully" not in res.stdout + res.stderr and "Warning" not in res.stdout + res.stderr
    assert "built successfully" in (tmp_path / "out" / "trial.log").read_text()


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


def test_sigterm_stops_the_trial_and_its_background_teachers(tmp_path):
    """A scheduler's SIGTERM unwinds like Ctrl-C: teachers training in spawned processes stop too
    (they outlived the killed parent before), and the exit code says it was terminated."""
    import os
    import signal
    import time

    cfg = write_config(tmp_path, "tasks: [synth.nlg, synth.sentiment]\nmethod: word_kd\n"
                                 "data: {dir: builtin, max_train_examples: 64, max_test_examples: 8}\n"
                                 "model: {config: {n_layer: 1, n_embd: 32, n_head: 2, n_positions: 96}}\n"
                                 "training: {epochs: 50, threads: 1}\n")
    proc = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "train", str(cfg), "--quiet",
                             "--teachers", str(tmp_path / "T"), "--teacher-workers", "1",
                             "--out", str(tmp_path / "out")],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # the session id names it and its children

    def session() -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and os.getsid(int(entry)) == proc.pid:
                    pids.append(int(entry))
            except OSError:
                pass
        return pids

    deadline = time.time() + 120
    while len(session()) < 2 and time.time() < deadline:  # the teacher's process is up
        time.sleep(0.5)
    assert len(session()) >= 2, "no background teacher started"
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted" in out + err and "Traceback" not in err
    deadline = time.time() + 20
    while session() and time.time() < deadline:
        time.sleep(0.5)
    assert session() == []
    assert not list((tmp_path / "T").glob("*/manifest.json"))
