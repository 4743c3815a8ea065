"""Whole trials on the built-in benchmark with a tiny model: determinism, resume, methods."""

import json

import pytest
import torch

from l2kd.trialconfig import trial_config
from l2kd.context import TrialContext
from l2kd.data.batching import collate
from l2kd.data.synthetic import generate
from l2kd.errors import ArtifactError
from l2kd.results import TrialResult
from l2kd.tokenizer import Tokenizer
from l2kd.trial import run_trial
from l2kd.training import forward

from conftest import tiny_trial, crash_in_stage




def test_same_config_and_seed_give_the_same_R(tmp_path):
    cfg = trial_config(tiny_trial())
    a = run_trial(cfg, tmp_path / "a")
    b = run_trial(cfg, tmp_path / "b")
    assert a.R == b.R and a.metrics == b.metrics
    assert len(a.R) == 2 and a.complete
    c = run_trial(trial_config(tiny_trial(seed=8)), tmp_path / "c")
    assert c.metrics != a.metrics


def test_outputs_on_disk(tmp_path):
    result = run_trial(trial_config(tiny_trial()), tmp_path)
    saved = TrialResult.load(tmp_path)
    assert saved.R == result.R and saved.config["seed"] == 7 and "torch" in saved.versions
    preds = (tmp_path / "predictions" / "stage-01" / "synth.nlg.jsonl").read_text().splitlines()
    assert len(preds) == 12 and {"prediction", "references", "rouge1"} <= set(json.loads(preds[0]))
    assert (tmp_path / "pseudo" / "stage-01.jsonl").exists()
    info = saved.stage_info[1]["replay"]
    assert info["requested"] == 10  # ceil(0.2 x 48)
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "trial.log").exists()


def test_interrupted_trial_resumes_at_the_task_boundary_with_the_same_R(tmp_path):
    cfg = trial_config(tiny_trial())
    whole = run_trial(cfg, tmp_path / "whole")
    crash_in_stage(cfg, tmp_path / "broken")
    partial = TrialResult.load(tmp_path / "broken")
    assert partial.stages_done == 1 and not partial.complete
    seen = []
    resumed = run_trial(cfg, tmp_path / "broken", on_event=lambda n, **e: seen.append(n))
    assert "resume" in seen and seen.count("stage_start") == 1
    assert resumed.R == whole.R and resumed.metrics == whole.metrics


def test_resume_refuses_a_folder_of_another_trial(tmp_path):
    run_trial(trial_config(tiny_trial()), tmp_path)
    with pytest.raises(ArtifactError, match=r"other settings \(training.lr \(0.001 -> 0.0005\)\)"):
        run_trial(trial_config(tiny_trial(**{"training.lr": 5e-4})), tmp_path)


def test_a_rerun_repairs_results_that_lag_the_last_checkpoint(tmp_path):
    """A run killed between writing the last checkpoint and results.json left a finished trial
    listed as unfinished for good; the rerun rewrites it from the checkpoint, training nothing."""
    cfg = trial_config(tiny_trial())
    whole = run_trial(cfg, tmp_path)
    stale = whole.to_dict() | {"R": whole.R[:1], "metrics": whole.metrics[:1], "complete": False}
    (tmp_path / "results.json").write_text(json.dumps(stale))
    seen = []
    again = run_trial(cfg, tmp_path, on_event=lambda n, **e: seen.append(n))
    assert "stage_start" not in seen
    saved = TrialResult.load(tmp_path)
    assert saved.complete and saved.R == whole.R == again.R


def test_a_damaged_checkpoint_is_one_error_naming_its_file(tmp_path):
    cfg = trial_config(tiny_trial())
    run_trial(cfg, tmp_path)
    weights = next((tmp_path / "checkpoints").glob("stage-*/model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match="model.safetensors: unreadable checkpoint file"):
        run_trial(cfg, tmp_path)
    state = weights.parent / "state.json"
    state.write_text(state.read_text()[:200])
    with pytest.raises(ArtifactError, match="state.json: unreadable checkpoint file"):
        run_trial(cfg, tmp_path)


def test_leftovers_of_a_killed_write_are_removed_on_resume(tmp_path):
    cfg = trial_config(tiny_trial())
    run_trial(cfg, tmp_path)
    half_dir = tmp_path / "checkpoints" / ".stage-01.ab12cd_9"
    half_dir.mkdir()
    (half_dir / "model.safetensors").write_bytes(b"half")
    half_file = tmp_path / "predictions" / "stage-01" / ".synth.nlg.jsonl.x7y8z9w0.tmp"
    half_file.write_text("{")
    keep = tmp_path / ".notes.txt"
    keep.write_text("the user's")
    run_trial(cfg, tmp_path)
    assert not half_dir.exists() and not half_file.exists() and keep.exists()


@pytest.mark.parametrize("method, stages", [("finetune", 2), ("multitask", 1), ("lamol", 2)])
def test_methods_run(tmp_path, method, stages):
    result = run_trial(trial_config(tiny_trial(method=method)), tmp_path)
    assert len(result.R) == stages and all(len(r) == 2 for r in result.R)
    if method == "finetune":
        assert "replay" not in result.stage_info[1]


def test_single_and_baseline_row(tmp_path):
    cfg = trial_config(tiny_trial(tasks=["synth.sentiment"], method="single",
                                  **{"eval.before_training": True}))
    result = run_trial(cfg, tmp_path)
    assert result.baseline is not None and set(result.baseline) == {"synth.sentiment"}
    assert len(result.R) == 1


def test_fused_forward_gives_the_same_logits():
    cfg = trial_config(tiny_trial())
    tok = Tokenizer.load("builtin")
    tok.add_task("synth.nlg")
    from l2kd.model import TargetLogits, build_model

    head = TargetLogits(build_model(cfg.model, tok, 0).eval())
    ctx = TrialContext(cfg=cfg, tokenizer=tok, device=torch.device("cpu"), amp_dtype=None, max_len=96,
                       train={"synth.nlg": generate("synth.nlg", "train")[:6]}, test={})
    batch = collate(ctx.train_rows("synth.nlg"), tok.ids.pad, with_lm=True)

    class Plain:
        logits = staticmethod(head)

    fused, two_calls = forward(Plain(), batch, fused=True), forward(Plain(), batch, fused=False)
    assert fused.shape == (len(batch.positions), len(tok))
    assert torch.allclose(fused, two_calls, atol=1e-5)


def test_hooks_fire_in_the_documented_order(tmp_path, monkeypatch):
    import l2kd.trial as trial_mod
    from l2kd.methods.finetune import Finetune
    from l2kd.methods.base import MethodParams

    calls = []

    class Recorder(Finetune):
        pass

    for hook in ("replay", "train_rows", "prepare_model", "begin_training", "batches", "loss_terms",
                 "after_backward", "end_stage", "state_dict"):
        def wrap(name=hook, base=getattr(Finetune, hook)):
            def f(self, *a, **k):
                if not calls or calls[-1] != name:
                    calls.append(name)
                return base(self, *a, **k)
            return f
        setattr(Recorder, hook, wrap())
    monkeypatch.setattr(trial_mod, "make_method", lambda spec: Recorder(MethodParams()))
    run_trial(trial_config(tiny_trial(tasks=["synth.sentiment"], method="finetune",
                                      **{"training.epochs": 2})), tmp_path)
    # the plans of every epoch are asked for before the first step (a lazy plan runs later)
    assert calls[:5] == ["replay", "train_rows", "prepare_model", "begin_training", "batches"]
    steps = calls[5:calls.index("end_stage")]
    assert set(steps) == {"loss_terms", "after_backward"} and steps[0] == "loss_terms"
    assert calls[-2:] == ["end_stage", "state_dict"]
