"""multitask_ca: zero-initialised conditioning is plain GPT-2; tasks differ once it is not zero;
the modules survive save/load; freezing spares the token embeddings; a whole trial runs."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from l2kd.conditioning import ConditioningSpec, conditioned, freeze_lower_half, install
from l2kd.trialconfig import trial_config
from l2kd.model import TargetLogits, load_weights, save_weights
from l2kd.trial import run_trial

from conftest import tiny_trial

SPEC = ConditioningSpec(("a", "b"), task_dim=8, adapter_dim=6, first_block=1)


def gpt2(seed=0):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, n_positions=32, vocab_size=40,
                                      bos_token_id=0, eos_token_id=0)).eval()


def perturb(model):
    with torch.no_grad():
        for n, p in model.task_conditioning.named_parameters():
            p.add_(torch.randn_like(p) * 0.3)


def test_zero_conditioning_equals_plain_gpt2_logits():
    plain, ca = gpt2(), gpt2()
    install(ca, SPEC)
    x = torch.randint(0, 40, (3, 12))
    expected = plain(x).logits
    with conditioned(ca, torch.tensor([0, 1, 0])):
        assert torch.equal(ca(x).logits, expected)
    with conditioned(ca, "b"):
        assert torch.equal(ca(x).logits, expected)
    positions = torch.tensor([0, 5, 13, 30])
    assert torch.equal(TargetLogits(ca)(x, positions, torch.tensor([1, 1, 0])),
                       TargetLogits(plain)(x, positions))


def test_conditioning_separates_tasks_and_rows_follow_their_own_task():
    ca = gpt2()
    install(ca, SPEC)
    perturb(ca)
    x = torch.randint(0, 40, (2, 10))
    with conditioned(ca, "a"):
        a = ca(x).logits
    with conditioned(ca, "b"):
        b = ca(x).logits
    assert not torch.allclose(a, b)
    with conditioned(ca, torch.tensor([0, 1])):  # per-row tasks match running each alone
        mixed = ca(x).logits
    assert torch.allclose(mixed[0], a[0], atol=1e-6) and torch.allclose(mixed[1], b[1], atol=1e-6)
    with pytest.raises(RuntimeError, match="without a task"):
        ca(x)


def test_save_and_load_keep_the_conditioning(tmp_path):
    ca = gpt2()
    install(ca, SPEC)
    perturb(ca)
    save_weights(ca, tmp_path)
    back = load_weights(tmp_path).eval()
    assert back.task_conditioning.spec == SPEC
    x = torch.randint(0, 40, (2, 9))
    with conditioned(ca, "b"), conditioned(back, "b"):
        assert torch.allclose(ca(x).logits, back(x).logits, atol=1e-6)


def test_freezing_the_lower_half_spares_token_embeddings():
    ca = gpt2()
    install(ca, SPEC)
    n = freeze_lower_half(ca)
    assert n == sum(p.numel() for p in ca.transformer.h[0].parameters())
    assert ca.transformer.wte.weight.requires_grad and ca.transformer.h[1].ln_1.weight.requires_grad
    assert not any(p.requires_grad for p in ca.transformer.h[0].parameters())


def test_multitask_ca_trial_trains_the_conditioning(tmp_path):
    cfg = trial_config(tiny_trial(method={"name": "multitask_ca", "freeze_lower": True},
                                  **{"model.config": {"n_layer": 2, "n_embd": 32, "n_head": 2,
                                                      "n_positions": 96}}))
    result = run_trial(cfg, tmp_path)
    info = result.stage_info[0]["conditioning"]
    assert info["added_parameters"] > 0 and info["frozen_parameters"] > 0
    model = load_weights(tmp_path / "checkpoints" / "stage-00")
    film = model.task_conditioning.norms["1_ln_1"].film.proj.weight
    assert film.abs().sum() > 0  # it learned away from zero
    assert model.task_conditioning.spec.tasks == ("synth.nlg", "synth.sentiment")
