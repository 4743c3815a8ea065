"""EWC / MAS: the quadratic penalty by hand, its behaviour around θ*, importance, grown rows, resume."""

import pytest
import torch

from l2kd.trialconfig import trial_config
from l2kd.losses import quadratic_penalty
from l2kd.methods import make_method
from l2kd.methods.regularizers import _pad_rows
from l2kd.trial import run_trial

from conftest import tiny_trial, crash_in_stage


def test_quadratic_penalty_by_hand():
    params = {"w": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([[0.5, 0.5], [9.0, 9.0]])}
    anchors = {"w": torch.tensor([0.0, 2.0, 1.0]), "b": torch.tensor([[0.0, 1.0]])}
    omega = {"w": torch.tensor([2.0, 5.0, 0.5]), "b": torch.tensor([[4.0, 1.0]])}
    # w: 2·1² + 5·0² + 0.5·2² = 4; b (the grown second row carries no importance): 4·.25 + 1·.25
    assert quadratic_penalty(params, anchors, omega).item() == pytest.approx(4 + 1.25)
    assert quadratic_penalty(params, {}, {}).item() == 0.0


def test_grown_rows_are_zero_padded_and_cut():
    t = torch.ones(2, 3)
    assert _pad_rows(t, 4).tolist() == [[1, 1, 1], [1, 1, 1], [0, 0, 0], [0, 0, 0]]
    assert _pad_rows(torch.arange(5.0), 3).tolist() == [0, 1, 2]


class _Ctx:  # what loss_terms reads
    pass


@pytest.mark.parametrize("name", ["ewc", "mas"])
def test_penalty_is_zero_at_the_anchor_and_grows_away_from_it(name):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    cfg = trial_config(tiny_trial(method={"name": name, "reg_lambda": 2.0}))
    method = make_method(cfg.method)
    method.anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    method.omega = {n: torch.rand_like(p) + 0.1 for n, p in model.named_parameters()}
    ctx = _Ctx()
    ctx.model, ctx.device = model, torch.device("cpu")
    method.begin_training(ctx, ("synth.nlg",))

    def reg() -> float:
        return method.p.reg_lambda * quadratic_penalty(method._params, method._dev[1], method._dev[0]).item()

    assert reg() == 0.0
    values = []
    for step in (0.01, 0.1, 1.0):
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(method.anchor[n] + step)
        values.append(reg())
    assert 0 < values[0] < values[1] < values[2]
    expected = 2.0 * sum((o * 1.0).sum().item() for o in method.omega.values())  # step 1: Σ λΩ·1²
    assert values[2] == pytest.approx(expected, rel=1e-5)


def check_state(workdir):
    state = torch.load(workdir / "checkpoints" / "stage-01" / "method_state.pt", weights_only=False)
    omega, anchor = state["omega"], state["anchor"]
    wte = "transformer.wte.weight"
    assert omega[wte].shape == anchor[wte].shape  # both tasks' token rows exist after stage 2
    assert all((o >= 0).all() for o in omega.values())
    assert sum(o.sum() for o in omega.values()) > 0


def test_mas_importance_accumulates_over_tasks(tmp_path):
    result = run_trial(trial_config(tiny_trial(method="mas")), tmp_path)
    assert result.complete and len(result.R) == 2
    check_state(tmp_path)
    (m0,), (m1,) = (list(s["importance_mean"].values()) for s in result.stage_info)
    assert m0 > 0 and m1 > 0
    omega = torch.load(tmp_path / "checkpoints" / "stage-01" / "method_state.pt", weights_only=False)["omega"]
    n1 = sum(o.numel() for o in omega.values())
    n0 = n1 - omega["transformer.wte.weight"].shape[1]  # stage 1 had one task-token row fewer
    # Ω is the sum of both tasks' importances (the first zero-padded on the new row)
    assert sum(o.double().sum().item() for o in omega.values()) == pytest.approx(m0 * n0 + m1 * n1, rel=1e-4)


def test_pretrained_anchor_stays_and_new_rows_carry_no_importance(tmp_path):
    cfg = trial_config(tiny_trial(method={"name": "ewc", "anchor": "pretrained"}))
    run_trial(cfg, tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "stage-01" / "method_state.pt", weights_only=False)
    wte = "transformer.wte.weight"
    # the anchor was taken before task 1 trained (its token row existed, task 2's did not)
    assert state["anchor"][wte].shape[0] == state["omega"][wte].shape[0]
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "checkpoints" / "stage-01" / "model.safetensors"))
    assert weights[wte].shape[0] == state["anchor"][wte].shape[0] + 1


def test_ewc_resumes_with_the_same_penalty(tmp_path):
    cfg = trial_config(tiny_trial(method="ewc", **{"training.log_every": 1}))
    seen: dict[str, list] = {"whole": [], "resumed": []}

    def record(key):
        return lambda name, **e: seen[key].append(e["terms"]) if name == "step" and e["stage"] == 1 else None

    whole = run_trial(cfg, tmp_path / "whole", on_event=record("whole"))
    crash_in_stage(cfg, tmp_path / "broken")
    resumed = run_trial(cfg, tmp_path / "broken", on_event=record("resumed"))
    assert resumed.R == whole.R
    check_state(tmp_path / "whole")
    assert seen["whole"] and seen["resumed"] == seen["whole"]  # qa and reg, step by step
    assert all(t["reg"] >= 0 for t in seen["whole"]) and seen["whole"][-1]["reg"] > 0
