"""`model.gelu`: GPT-2's tanh GELU in one kernel computes gelu_new's function, is what a built,
resumed or teacher model runs, and joins stored identities only when gelu_new is asked for."""

import pytest
import torch
from transformers.activations import ACT2FN

from l2kd.config import ModelConfig, TrialConfig
from l2kd.backbone import use_gelu
from l2kd.model import build_model, model_from_state
from l2kd.tokenizer import Tokenizer
from l2kd.identity import config_hash
from l2kd.trialconfig import trial_config

from conftest import tiny_trial

SMALL = {"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 64}


def test_one_kernel_gelu_is_gelu_new_in_value_and_gradient():
    x = torch.linspace(-12, 12, 20001, dtype=torch.float32).requires_grad_(True)
    y = x.detach().clone().requires_grad_(True)
    fast, chain = ACT2FN["gelu_pytorch_tanh"](x), ACT2FN["gelu_new"](y)
    torch.testing.assert_close(fast, chain, rtol=1e-6, atol=1e-6)
    weights = torch.randn_like(fast)
    (fast * weights).sum().backward()
    (chain * weights).sum().backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-5, atol=1e-5)  # fp32 rounding of tiny slopes
    # and in float64, where rounding cannot hide a different function
    z = torch.linspace(-12, 12, 2001, dtype=torch.float64)
    torch.testing.assert_close(ACT2FN["gelu_pytorch_tanh"](z), ACT2FN["gelu_new"](z), rtol=1e-12, atol=1e-12)


def _model(gelu: str, seed: int = 3):
    tok = Tokenizer.load("builtin", None, 1024)
    return build_model(ModelConfig(config=SMALL, gelu=gelu), tok, seed)


def test_built_models_run_the_chosen_kernel_and_give_the_same_logits():
    default, reference = _model(ModelConfig().gelu), _model("gelu_new")
    assert ModelConfig().gelu == "gelu_pytorch_tanh"
    assert default.config.activation_function == "gelu_pytorch_tanh"
    assert all(type(b.mlp.act).__name__ == "GELUTanh" for b in default.transformer.h)
    assert all(type(b.mlp.act).__name__ == "NewGELUActivation" for b in reference.transformer.h)
    x = torch.randint(0, default.config.vocab_size, (3, 20))
    with torch.no_grad():
        torch.testing.assert_close(default.eval()(x).logits, reference.eval()(x).logits, rtol=1e-5, atol=1e-5)


def test_a_model_saved_with_gelu_new_is_switched_and_another_activation_is_kept():
    old = _model("gelu_new")
    loaded = use_gelu(model_from_state(old.config.to_json_string(), old.state_dict(), "test"),
                      "gelu_pytorch_tanh")
    assert loaded.config.activation_function == "gelu_pytorch_tanh"
    relu = build_model(ModelConfig(config={**SMALL, "activation_function": "relu"}),
                       Tokenizer.load("builtin", None, 1024), 0)
    assert relu.config.activation_function == "relu"  # another function, not another kernel
    with pytest.raises(ValueError, match="model.gelu"):
        use_gelu(relu, "gelu")


def test_gelu_joins_identities_only_when_gelu_new_is_asked_for():
    from l2kd.identity import teacher_key
    from l2kd.teachers.store import teacher_config

    cfg = trial_config(tiny_trial(method="word_kd"))
    d = cfg.to_dict()
    d["model"].pop("gelu")  # a config written before the setting existed
    old = TrialConfig.model_validate(d)
    chain = trial_config(tiny_trial(method="word_kd", **{"model.gelu": "gelu_new"}))
    assert config_hash(cfg) == config_hash(old) != config_hash(chain)
    task = cfg.tasks[0]
    assert teacher_key(teacher_config(cfg, task)) != teacher_key(teacher_config(chain, task))


def test_a_bad_gelu_setting_names_the_key():
    from l2kd.errors import ConfigError

    with pytest.raises(ConfigError, match="model.gelu"):
        trial_config(tiny_trial(**{"model.gelu": "erf"}))
