"""GEM: the projection on constructed conflicts (checked against quadprog), the engine really steps
with the projected gradient (ZeRO 0), ZeRO > 0 is refused, memories survive a resume."""

import numpy as np
import pytest
import quadprog
import torch

from l2kd.config import TrainingConfig
from l2kd.trialconfig import trial_config
from l2kd.engine import Engine
from l2kd.errors import ConfigError
from l2kd.losses import gem_dual, gem_project
from l2kd.trial import run_trial

from conftest import tiny_trial


def test_projection_by_hand():
    g = torch.tensor([1.0, -1.0])
    m = torch.tensor([[0.0, 1.0]])  # <g, m> = -1: remove g's component against m
    new, projected = gem_project(g, m)
    assert projected and torch.allclose(new, torch.tensor([1.0, 0.0]), atol=1e-12)
    unchanged, projected = gem_project(torch.tensor([1.0, 1.0]), m)
    assert not projected and unchanged.tolist() == [1.0, 1.0]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_projection_makes_every_memory_dot_product_non_negative(seed, margin):
    gen = torch.Generator().manual_seed(seed)
    t, p = 1 + seed % 4, 50
    M = torch.randn(t, p, generator=gen, dtype=torch.float64)
    g = -M.sum(0) + 0.1 * torch.randn(p, generator=gen, dtype=torch.float64)  # conflicts with all
    assert (M @ g < 0).any()
    new, projected = gem_project(g, M, margin)
    assert projected
    dots = M @ new
    assert (dots >= -1e-9 * M.norm() * new.norm()).all(), dots
    # the same dual solved by quadprog (a ridge only to make it strictly convex)
    K = (M @ M.T).numpy()
    v_qp = quadprog.solve_qp(K + 1e-12 * np.eye(t), -(M @ g).numpy(), np.eye(t), np.full(t, margin))[0]
    v = gem_dual(M @ M.T, M @ g, margin).numpy()
    assert np.allclose(v, v_qp, atol=1e-6)
    if margin == 0:  # then the projection is the closest feasible gradient: no closer one exists
        for _ in range(200):
            cand = new + 0.05 * torch.randn(p, generator=gen, dtype=torch.float64)
            if (M @ cand >= 0).all():
                assert (cand - g).norm() >= (new - g).norm() - 1e-9


def test_engine_steps_with_the_gradient_after_backward_edits_it():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=16, vocab_size=30,
                                       bos_token_id=0, eos_token_id=0))
    engine = Engine(model, TrainingConfig(weight_decay=0.0, lr=1e-2), "fp32", torch.device("cpu"))
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randint(1, 30, (2, 8))
    loss = engine.logits(x, torch.arange(16)).logsumexp(-1).mean()
    engine.backward(loss)
    for p in model.parameters():  # what GEM's after_backward does: rewrite .grad in place
        p.grad.zero_()
    engine.step(1e-2)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    engine.close()


def test_gem_refuses_zero_stages_above_0():
    with pytest.raises(ConfigError, match="zero_stage"):
        trial_config(tiny_trial(method="gem", **{"training.zero_stage": 1}))


def test_gem_trial_projects_and_keeps_memories(tmp_path):
    cfg = trial_config(tiny_trial(method={"name": "gem", "memory_batch_size": 4},
                                  **{"training.epochs": 2}))
    result = run_trial(cfg, tmp_path)
    info = result.stage_info[1]["gem"]
    assert info["memories"] == {"synth.nlg": 9}  # int(0.2 x 48)
    assert info["steps"] == 24 and 0 <= info["projected"] <= 24
    assert "gem" not in result.stage_info[0] or result.stage_info[0]["gem"]["steps"] == 0
    state = torch.load(tmp_path / "checkpoints" / "stage-01" / "method_state.pt", weights_only=False)
    assert len(state["memory"]["synth.nlg"]) == 9 and len(set(state["memory"]["synth.nlg"])) == 9


def test_after_backward_writes_the_projected_gradient_back():
    from l2kd.methods.gem import GEM, GEMParams

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    model(torch.randn(4, 3)).sum().backward()
    g = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone()
    conflict = -g + 0.1 * torch.randn_like(g)  # a memory gradient at odds with the current one
    method = GEM(GEMParams())
    method._params = list(model.parameters())
    method._rows = {"old": ["row"]}
    method._memory_grad = lambda ctx, rows: conflict
    method._rng = np.random.default_rng(0)
    method.after_backward(ctx=None)
    new = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    assert conflict @ g < 0 and conflict @ new >= -1e-6 and method.stats["projected"] == 1
    assert torch.allclose(new, gem_project(g, conflict[None], 0.5)[0], atol=1e-6)
