"""The DeepSpeed engine on CPU (gloo): steps train, settings map to DeepSpeed's config."""

import os

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from l2kd.config import TrainingConfig
from l2kd.engine import Engine, ds_config, free_port, param_groups
from l2kd.losses import token_ce

CPU = torch.device("cpu")


def model():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=32, vocab_size=50,
                                      bos_token_id=0, eos_token_id=0))


@pytest.mark.parametrize("zero, precision", [(0, "fp32"), (1, "bf16"), (2, "fp32")])
def test_deepspeed_steps_reduce_the_loss_on_cpu(zero, precision):
    m = model()
    engine = Engine(m, TrainingConfig(zero_stage=zero, lr=1e-2), precision, CPU)
    assert os.environ["WORLD_SIZE"] == "1" and int(os.environ["MASTER_PORT"]) > 0
    x = torch.randint(1, 50, (4, 12), generator=torch.Generator().manual_seed(1))
    every_position = torch.arange(4 * 11)
    losses = []
    for _ in range(8):
        loss = token_ce(engine.logits(x[:, :-1], every_position), x[:, 1:].flatten())
        engine.backward(loss)
        engine.step(1e-2)
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert next(engine.module.parameters()).dtype == torch.float32  # fp32 master weights kept
    engine.close()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_step_never_synchronises_the_device(monkeypatch, precision):
    """DeepSpeed's throughput timer (on by default) synchronised the whole device twice in every step
    from the third on. On a CPU the accelerator's synchronize does nothing, but it is still called:
    counting the calls checks here what makes a GPU step wait."""
    from deepspeed.accelerator import get_accelerator

    accelerator = type(get_accelerator())
    waits = []
    real = accelerator.synchronize
    monkeypatch.setattr(accelerator, "synchronize", lambda self, *a, **k: waits.append(1) or real(self, *a, **k))
    engine = Engine(model(), TrainingConfig(lr=1e-2), precision, CPU)
    x = torch.randint(1, 50, (2, 8), generator=torch.Generator().manual_seed(1))
    for _ in range(5):
        engine.backward(token_ce(engine.logits(x[:, :-1], torch.arange(14)), x[:, 1:].flatten()))
        engine.step(1e-2)
    assert waits == []
    engine.close()


def test_ds_config_from_training_settings():
    cfg = ds_config(TrainingConfig(zero_stage=2, max_grad_norm=0.5), "bf16")
    assert cfg["zero_optimization"]["stage"] == 2 and cfg["gradient_clipping"] == 0.5
    assert ds_config(TrainingConfig(max_grad_norm=0.5), "bf16")["gradient_clipping"] == 0  # clipped by the engine
    assert cfg["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}
    assert "torch_autocast" not in ds_config(TrainingConfig(), "fp32")


def test_no_decay_on_biases_and_layernorms():
    decay, no_decay = param_groups(model(), 0.01, decay_layernorm=False)
    n_ln = sum(1 for n, _ in model().named_parameters() if "ln_" in n and n.endswith("weight"))
    assert n_ln and len(no_decay["params"]) == n_ln + sum(
        1 for n, _ in model().named_parameters() if n.endswith("bias"))
    decay2, _ = param_groups(model(), 0.01, decay_layernorm=True)
    assert len(decay2["params"]) == len(decay["params"]) + n_ln


def test_free_ports_differ():
    assert len({free_port() for _ in range(5)}) > 1


@pytest.mark.parametrize("max_grad_norm", [1e-3, 100.0])  # clipping on every step; never
def test_engine_steps_equal_plain_adamw_with_clipping(max_grad_norm):
    """The engine's update is AdamW after clipping the global gradient norm, nothing more: the same
    weights as plain PyTorch's loop after several steps (ZeRO 0, fp32, one process)."""
    training = TrainingConfig(lr=1e-2, max_grad_norm=max_grad_norm, weight_decay=0.01)
    a, b = model(), model()
    engine = Engine(a, training, "fp32", CPU)
    opt = torch.optim.AdamW(param_groups(b, 0.01, decay_layernorm=False), lr=1e-2,
                            eps=training.adam_eps, betas=(0.9, 0.999))
    x = torch.randint(1, 50, (4, 12), generator=torch.Generator().manual_seed(2))
    a.eval(), b.eval()  # no dropout: both see the same function
    every_position = torch.arange(4 * 11)
    for lr in (1e-2, 5e-3, 1e-3):
        engine.backward(token_ce(engine.logits(x[:, :-1], every_position), x[:, 1:].flatten()))
        engine.step(lr)
        loss = token_ce(b(x[:, :-1]).logits.flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(b.parameters(), max_grad_norm)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        opt.zero_grad(set_to_none=True)
    for (name, p), q in zip(engine.module.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    engine.close()
