"""o_lora: the orthogonality penalty on hand-computed cases, one adapter per task with the earlier
ones frozen, resume, and the LAMOL combination."""

import pytest
import torch
from safetensors.torch import load_file

from l2kd.errors import ConfigError
from l2kd.methods.o_lora import orthogonality_penalty
from l2kd.trial import run_trial
from l2kd.trialconfig import trial_config

from conftest import tiny_trial, crash_in_stage
from test_backbones import BACKBONES


def test_penalty_is_zero_for_orthogonal_subspaces_and_positive_otherwise():
    old = torch.tensor([[1.0, 0.0, 0.0]])
    orthogonal = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])
    assert float(orthogonality_penalty([(old, orthogonal)])) == 0.0
    # A_old A_newᵀ = [[1·2 + 2·(−1) + 0·3], [0·2 + 1·(−1) + 1·3]] = [[0], [2]] -> |0| + |2| = 2
    old2 = torch.tensor([[1.0, 2.0, 0.0], [0.0, 1.0, 1.0]])
    new = torch.tensor([[2.0, -1.0, 3.0]], requires_grad=True)
    p = orthogonality_penalty([(old2, new)])
    assert float(p) == 2.0
    # summed over modules: + |1·1 + 1·(−1)| + |1·0.5| = 0.5
    total = orthogonality_penalty([(old2, new), (torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, -1.0], [0.5, 0.0]]))])
    assert float(total) == 2.5
    p.backward()  # d/dA_new Σ|(A_old A_newᵀ)| = sign(A_old A_newᵀ)ᵀ A_old = [0, 1] @ old2 (sign(0) = 0)
    assert torch.equal(new.grad, torch.tensor([[0.0, 1.0, 1.0]]))
    assert float(orthogonality_penalty([])) == 0.0


def test_o_lora_needs_model_lora():
    with pytest.raises(ConfigError, match=r"method \(o_lora\): needs model.lora"):
        trial_config(tiny_trial(method="o_lora"))


def o_lora_cfg(method="o_lora", kind="llama", **over):
    return trial_config(tiny_trial(method={"name": method, **over.pop("params", {})}, **{
        "model.config": BACKBONES[kind], "model.lora": {"r": 4}, "data.max_train_examples": 24,
        "data.max_test_examples": 6, **over}))


@pytest.mark.parametrize("kind", ["llama", "gpt_neox", "gpt2"])
def test_each_task_trains_a_fresh_adapter_and_the_earlier_ones_stay_frozen(tmp_path, kind):
    snapshots = {}

    def keep(name, **e):
        if name == "stage_end":
            snapshots[e["stage"]] = load_file(str(e["checkpoint"] / "model.safetensors"))

    result = run_trial(o_lora_cfg(kind=kind, params={"lambda_l2": 0.01}), tmp_path, on_event=keep)
    first, second = snapshots[0], snapshots[1]
    assert not any(".task1." in k for k in first) and any(".task1." in k for k in second)
    for k, v in first.items():
        if ".default." in k:
            assert torch.equal(second[k], v), k  # the first task's adapter did not move
    task1_B = [v for k, v in second.items() if "lora_B.task1" in k]
    assert task1_B and any(v.abs().sum() > 0 for v in task1_B)  # the new one did
    info = result.stage_info[1]
    assert info["o_lora"]["adapters"] == 2 and info["o_lora"]["overlap"] > 0
    terms = {k for s in result.stage_info for k in s.get("terms", {})}
    assert result.complete and terms <= {"qa", "orth", "l2"}


def test_o_lora_resumes_with_the_same_R_and_o_lora_lamol_replays(tmp_path):
    cfg = o_lora_cfg()
    whole = run_trial(cfg, tmp_path / "whole")
    crash_in_stage(cfg, tmp_path / "broken")
    resumed = run_trial(cfg, tmp_path / "broken")
    assert resumed.R == whole.R
    both = run_trial(o_lora_cfg("o_lora_lamol"), tmp_path / "lamol")
    assert both.stage_info[1]["replay"]["requested"] == 5  # ceil(0.2 x 24) pseudo samples
    assert both.stage_info[1]["o_lora"]["adapters"] == 2
