"""What people and scripts read: whole tables off a terminal, dry-run exit codes, trial.log lines,
one stage numbering, the compute a trial spent."""

import subprocess
import sys


from l2kd.results import TrialResult
from l2kd.trial import describe_eval, run_trial
from l2kd.trialconfig import trial_config

from conftest import REPO, tiny_trial, crash_in_stage


def cli(*args, env=None):
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=300, env=env)


def _env_without_columns():
    import os

    env = dict(os.environ)
    env.pop("COLUMNS", None)
    return env


def test_the_dry_run_through_a_pipe_shows_every_method_label_whole(tmp_path):
    """Off a terminal rich cut tables to 80 columns (`fine…`, two `seq_…` rows); now whole."""
    from l2kd.gridspec import load_grid
    from l2kd.plan import build_plan

    plan = build_plan(load_grid(REPO / "grids" / "paper.yaml", storage=str(tmp_path)), strict_data=False)
    res = cli("grid", str(REPO / "grids" / "paper.yaml"), "--dry-run", "--storage", str(tmp_path),
              env=_env_without_columns())
    assert res.returncode in (0, 2), res.stderr  # 2: this machine lacks some of the paper's data
    assert "…" not in res.stdout
    rows = [line for line in res.stdout.splitlines() if line.startswith("│")]
    for cell in plan.cells:
        assert any(f" {cell.method} " in r and f" {cell.order_id} " in r for r in rows), cell.id
    assert not (tmp_path / "paper").exists()


def test_describe_eval_counts_stages_from_one():
    assert describe_eval("stage0") == "after stage 1"
    assert describe_eval("stage2-epoch3") == "stage 3, epoch 3"
    assert describe_eval("initial") == "untrained model"


def test_trial_log_has_stages_epochs_evaluations_and_checkpoints(tmp_path):
    cfg = trial_config(tiny_trial(**{"training.epochs": 2}))
    result = run_trial(cfg, tmp_path)
    log = (tmp_path / "trial.log").read_text()
    for line in ("stage 1/2 (synth.nlg): started", "stage 1/2, epoch 1/2: done in",
                 "stage 1/2, epoch 2/2: done in", "eval (after stage 1) synth.nlg:", "checkpoint after stage 2 written:",
                 "eval (after stage 2) synth.sentiment:",
                 "stage 2/2 (synth.sentiment): finished in"):
        assert line in log, line
    assert "stage 0" not in log and "stage0" not in log
    # compute: tokens trained and generated, seconds per phase, peak memory
    c = TrialResult.load(tmp_path).compute
    assert c["trained_tokens"] == sum(i["train"]["tokens"] for i in result.stage_info) > 0
    assert c["generated_tokens"] > 0 and c["peak_memory_bytes"] > 0
    assert c["seconds"]["train"] > 0 and c["seconds"]["eval"] > 0 and c["seconds"]["pseudo"] > 0
    # run again: already complete, nothing added
    events = []
    again = run_trial(cfg, tmp_path, on_event=lambda n, **e: events.append((n, e)))
    assert again.compute == c
    assert ("resume", {"stages_done": 2, "stages": 2, "complete": True}) in events
    assert "already complete (2 stages)" in (tmp_path / "trial.log").read_text()


def test_results_without_compute_still_load(tmp_path):
    run_trial(trial_config(tiny_trial(tasks=["synth.nlg"], method="finetune")), tmp_path)
    import json

    d = json.loads((tmp_path / "results.json").read_text())
    d.pop("compute")
    assert TrialResult.from_dict(d).compute == {}


def test_every_scorer_declares_the_figures_it_returns():
    from l2kd.metrics import SCORER_METRICS, SCORERS, ScoreInput
    from l2kd.tasks import TASKS

    assert set(SCORER_METRICS) == set(SCORERS.names())
    inp = ScoreInput(["a b"], [["a b"]], ["0"], "t")
    for name in ("em", "rouge"):
        assert set(SCORERS.get(name)(inp).aggregate) == {m.name for m in SCORER_METRICS[name]}
    for t in TASKS:  # every task's primary score is a declared figure of one of its scorers
        spec = TASKS.get(t)
        declared = {m.name for s in spec.metrics for m in SCORER_METRICS["em" if s in ("nem", "nf1") else s]}
        assert spec.primary_metric in declared, t
    res = cli("ls", "metrics")
    assert res.returncode == 0 and "avg_rouge: " in res.stdout and "higher is better" in res.stdout


def test_a_hub_model_that_cannot_be_loaded_is_named_before_a_run(tmp_path, monkeypatch):
    import os

    import pytest

    from l2kd.errors import ConfigError
    from l2kd.hub import check_hub_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="not a local folder nor in the Hugging Face cache.*HF_HUB_OFFLINE"):
        check_hub_model("l2kd-tests/no-such-model")
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\ntasks: [synth.nlg]\nmethods: [finetune]\nmodel: {pretrained: l2kd-tests/no-such-model}\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    res = cli("grid", str(grid), "--dry-run", "--storage", str(tmp_path / "runs"), env=env)
    assert res.returncode == 2, res.stderr
    assert "cannot read the model inputs" in res.stdout and "HF_HUB_OFFLINE" in res.stdout
    assert res.stderr.startswith("error: a run would stop: cannot read the model inputs")


def test_a_trial_whose_hub_model_cannot_be_reached_stops_at_once(tmp_path, monkeypatch):
    """`train` asks the hub once with a short timeout before loading: transformers would retry an
    unreachable hub for about a minute before the same error."""
    import huggingface_hub
    import pytest
    import transformers

    from l2kd.errors import ConfigError
    from l2kd.trial import set_up_trial

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    asked = []

    def unreachable(self, name, timeout=None, **kwargs):
        asked.append((name, timeout))
        raise ConnectionError("[Errno -2] Name or service not known")

    def never(*args, **kwargs):
        raise AssertionError("loaded from the hub: it would be retried")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", never)
    cfg = trial_config(tiny_trial(**{"model.pretrained": "l2kd-tests/no-such-model"}))
    with pytest.raises(ConfigError, match="model.pretrained: 'l2kd-tests/no-such-model' .*hub cannot be asked"):
        set_up_trial(cfg, tmp_path / "trial")
    assert asked == [("l2kd-tests/no-such-model", 5.0)] and not (tmp_path / "trial").exists()


def test_the_dry_run_projects_gpu_hours_and_wall_time_and_says_from_what(tmp_path):
    import json

    from l2kd.cost import project, read_throughput
    from l2kd.errors import ConfigError
    from l2kd.gridspec import load_grid
    from l2kd.plan import build_plan, work

    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\ntasks: [synth.nlg, synth.sentiment]\norders: forward_reverse\n"
                    "methods: [finetune, lamol]\ndata: {max_train_examples: 20, max_test_examples: 5}\n"
                    "model: {config: {n_layer: 1, n_embd: 32, n_head: 2, n_positions: 96}}\n"
                    "resources: {cpu: 1, gpu: 0.5}\nray: {max_concurrent: 2}\n")
    plan = build_plan(load_grid(grid, storage=str(tmp_path / "runs")))
    planned = work(plan)
    c = project(plan, planned, read_throughput("1000"), devices=4)
    total = sum(planned["cells"].values())
    assert c["unit"] == "GPU-hours" and c["slots"] == 2  # 8 half-GPU trials fit, max_concurrent says 2
    assert c["device_hours"] == __import__("pytest").approx(total / 1000 / 3600 * 0.5)
    longest = max(planned["cells"].values()) / 1000
    assert c["wall_s"] == __import__("pytest").approx(max(longest, total / 1000 / 2))
    bench = tmp_path / "bench.json"  # the shape `cli.py bench --out` writes
    bench.write_text(json.dumps({"device": "NVIDIA H100", "precision": "bf16",
                                 "projection": {"this_config_s": 100.0, "trained_tokens": 2e6},
                                 "train": {"fast": {"tokens_per_s": 50000.0}}}))
    assert read_throughput(str(bench)).tokens_per_s == 20000.0
    res = cli("grid", str(grid), "--dry-run", "--storage", str(tmp_path / "runs"), "--throughput", str(bench),
              "--devices", "4")
    assert res.returncode == 0, res.stderr
    assert "GPU-hours" in res.stdout and "on 4 GPU(s) (--devices; 2 trial(s) at once)" in res.stdout
    assert "measured: " + str(bench) + " (NVIDIA H100, bf16), its whole-trial projection" in res.stdout
    bad = cli("grid", str(grid), "--dry-run", "--throughput", str(tmp_path / "none.json"))
    assert bad.returncode == 2 and not bad.stdout and "--throughput" in bad.stderr
    decoding_only = tmp_path / "decoding.json"  # `cli.py bench --parts decoding --out`: no training rate
    decoding_only.write_text(json.dumps({"device": "cpu", "train": {}, "projection": {}, "decoding": {"seconds": 1.0}}))
    with __import__("pytest").raises(ConfigError, match="a bench of decoding alone"):
        read_throughput(str(decoding_only))


def test_off_a_terminal_the_grid_prints_one_line_per_event(tmp_path, capsys):
    from l2kd.cli.common import console
    from l2kd.cli.grid import GridProgress
    from l2kd.gridspec import parse_grid
    from l2kd.plan import build_plan

    plan = build_plan(parse_grid({"name": "g", "tasks": ["synth.nlg", "synth.sentiment"], "methods": ["finetune"],
                                  "data": {"max_train_examples": 8, "max_test_examples": 2}}, "g.yaml",
                                 storage=str(tmp_path)))
    cid = plan.cells[0].id
    assert not console.is_terminal
    with GridProgress(plan) as progress:
        progress("cell", id=cid, state="running")
        progress("cell", id=cid, state="running", stage=1, task="synth.nlg", epoch=1, step=3, steps=9, loss=2.5)
        progress("cell", id=cid, state="running", stage=1, stages=2, task="synth.nlg", avg=12.25)
        progress("cell", id=cid, state="retrying")
        progress("cell", id=cid, state="done")
    err = capsys.readouterr().err
    lines = [line.split("] ", 1)[1] for line in err.splitlines() if line.startswith("[")]
    assert lines[0] == f"{cid}: started"
    assert lines[1] == f"{cid}: stage 1 (synth.nlg), epoch 1, step 3/9, loss 2.500"
    assert lines[2] == f"{cid}: stage 1/2 finished (synth.nlg), avg score 12.2"
    assert lines[3] == f"{cid}: retrying (stage 1/2)" and lines[4] == f"{cid}: done"
    assert cid in err.splitlines()[-3] or any(cid in line and "done" in line for line in err.splitlines()[-4:])


def test_a_folder_written_before_compute_and_tensorboard_resumes_and_reports(tmp_path):
    """An old run folder (stage-00 checkpoint, results without compute, no tensorboard/, no
    predictions/initial/) resumes at its next stage and reports."""
    import json
    import shutil

    from l2kd.report import build_report

    cfg = trial_config(tiny_trial())
    work = tmp_path / "cells" / "old"
    crash_in_stage(cfg, work)
    for f in [work / "results.json", work / "checkpoints" / "stage-00" / "state.json"]:
        d = json.loads(f.read_text())
        (d["result"] if "result" in d else d).pop("compute")
        f.write_text(json.dumps(d))
    shutil.rmtree(work / "tensorboard")
    resumed = run_trial(cfg, work)
    assert resumed.complete and resumed.compute["trained_tokens"] == resumed.stage_info[1]["train"]["tokens"]
    assert (work / "checkpoints" / "stage-01").is_dir() and (work / "tensorboard").is_dir()
    assert build_report(tmp_path).sections[0].table("compute") is not None
