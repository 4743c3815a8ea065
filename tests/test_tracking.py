"""Trackers: TensorBoard event files per trial (read back), MLflow through Ray Tune's callback into a
file store (read back; no server, no network), W&B's callback given the grid's arguments, a tracker
whose package is missing refused when the grid is read."""

import pytest

from l2kd.trial import run_trial
from l2kd.trialconfig import trial_config

from conftest import tiny_trial

pytest.importorskip("tensorboard")


def scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_a_trial_writes_scores_after_every_stage_and_epoch_and_losses_at_log_every(tmp_path):
    cfg = trial_config(tiny_trial(**{"eval.every_epoch": True, "eval.before_training": True,
                                     "training.epochs": 2, "training.log_every": 2}))
    result = run_trial(cfg, tmp_path)
    s = scalars(tmp_path / "tensorboard")
    steps = [i["train"]["steps"] for i in result.stage_info]
    # R after every stage, on the steps of the whole stream
    assert [x for x, _ in s["R/avg"]] == [steps[0], steps[0] + steps[1]]
    assert [v for _, v in s["R/synth.nlg"]] == pytest.approx([row[0] for row in result.R])
    # scores: the untrained model at step 0, every epoch, every stage
    assert s["eval_untrained/synth.nlg/avg_rouge"][0][0] == 0
    assert len(s["eval_epoch/synth.sentiment/em"]) == 4 and len(s["eval_stage/synth.sentiment/em"]) == 2
    # losses every log_every steps (and at each stage's last step), steps increasing over stages
    loss_steps = [x for x, _ in s["loss/total"]]
    assert loss_steps == sorted(loss_steps) and loss_steps[-1] == sum(steps)
    assert len(loss_steps) >= sum(steps) // 2 and "loss/qa" in s and "train/lr" in s


def test_tensorboard_can_be_turned_off(tmp_path):
    run_trial(trial_config(tiny_trial(tasks=["synth.nlg"])), tmp_path, tensorboard=False)
    assert not (tmp_path / "tensorboard").exists()


@pytest.mark.slow
@pytest.mark.ray
def test_a_grid_logs_to_an_mlflow_file_store_through_tunes_callback(tmp_path):
    pytest.importorskip("mlflow")
    ray = pytest.importorskip("ray")
    from mlflow.tracking import MlflowClient

    from l2kd.grid import run_grid
    from l2kd.gridspec import parse_grid
    from l2kd.plan import build_plan

    raw = {"name": "tracked", "tasks": ["synth.nlg", "synth.sentiment"], "methods": ["finetune"], "seeds": [3],
           "data": {"max_train_examples": 16, "max_test_examples": 4},
           "model": {"config": {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 96}},
           "training": {"epochs": 1, "lr": 1e-3, "threads": 1}, "eval": {"before_training": False},
           "tracking": {"mlflow": {}}}
    plan = build_plan(parse_grid(raw, "tracked.yaml", storage=str(tmp_path)))
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        outcome = run_grid(plan)
    finally:
        ray.shutdown()
    assert outcome.ok, outcome
    client = MlflowClient(tracking_uri=(plan.run_dir / "mlruns").as_uri())
    exp = client.get_experiment_by_name("tracked")
    (run,) = client.search_runs([exp.experiment_id])
    history = client.get_metric_history(run.info.run_id, "avg")
    assert len(history) == 2  # one report per stage
    cell = plan.cells[0]
    from l2kd.results import TrialResult

    R = TrialResult.load(plan.cell_dir(cell)).R
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx([sum(r) / 2 for r in R])
    assert (plan.cell_dir(cell) / "tensorboard").is_dir()  # TensorBoard by default, in the cell's folder


def test_a_tracker_whose_package_is_missing_is_refused_when_the_grid_is_read(monkeypatch):
    import importlib.util

    from l2kd.errors import ConfigError
    from l2kd.gridspec import parse_grid

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    raw = {"name": "t", "tasks": ["synth.nlg"], "methods": ["finetune"], "tracking": {"wandb": {"mode": "offline"}}}
    with pytest.raises(ConfigError, match=r"^g\.yaml: tracking: .*needs the wandb package.*pip install wandb"):
        parse_grid(raw, "g.yaml")


def test_wandb_gets_tunes_callback_with_the_grids_name_and_its_offline_mode(monkeypatch, tmp_path):
    """wandb is not installed here: its callback is replaced by one that records its arguments."""
    import importlib.util

    pytest.importorskip("ray")
    import ray.air.integrations.wandb as ray_wandb

    from l2kd.grid import tracker_callbacks
    from l2kd.gridspec import parse_grid
    from l2kd.plan import build_plan

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "wandb" else real(name, *a))

    class Recorded:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    monkeypatch.setattr(ray_wandb, "WandbLoggerCallback", Recorded)
    raw = {"name": "tracked", "tasks": ["synth.nlg"], "methods": ["finetune"],
           "tracking": {"wandb": {"mode": "offline", "group": "g1"}}}
    (callback,) = tracker_callbacks(build_plan(parse_grid(raw, "g.yaml", storage=str(tmp_path))))
    assert callback.kwargs == {"project": "tracked", "mode": "offline", "group": "g1"}
