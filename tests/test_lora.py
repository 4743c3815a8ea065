"""LoRA through peft: a frozen base, adapters and LAMOL's rows trained, checkpoints of adapters only
that resume with the same R, regularisers over the trainable weights only."""

import pytest
import torch
from safetensors.torch import load_file

from l2kd.config import LoraSettings, ModelConfig, TrainingConfig
from l2kd.engine import Engine
from l2kd.errors import ArtifactError, ConfigError
from l2kd.losses import token_ce
from l2kd.model import build_model, load_weights, save_weights
from l2kd.results import TrialResult
from l2kd.tokenizer import Tokenizer
from l2kd.trial import run_trial
from l2kd.trialconfig import trial_config

from conftest import tiny_trial, crash_in_stage
from test_backbones import BACKBONES

CPU = torch.device("cpu")
KINDS = ["llama", "gpt_neox", "gpt2"]


def lora_model(kind, seed=0, **lora):
    tok = Tokenizer.load("builtin")
    tok.add_task("synth.nlg")
    cfg = ModelConfig(config=BACKBONES[kind], lora=LoraSettings(r=4, **lora))
    return build_model(cfg, tok, seed), tok


@pytest.mark.parametrize("kind", KINDS)
def test_only_adapters_and_lamol_rows_train(kind):
    model, tok = lora_model(kind)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "embed" in n or "wte" in n or "lm_head" in n for n in trainable)
    engine = Engine(model, TrainingConfig(lr=1e-2, weight_decay=0.5), "fp32", CPU)
    x = torch.randint(0, len(tok), (4, 12), generator=torch.Generator().manual_seed(1))
    x[:, 3] = tok.ids.ans  # a LAMOL token in every row, so its row gets a gradient
    for _ in range(3):
        loss = token_ce(engine.logits(x[:, :-1], torch.arange(4 * 11)), x[:, 1:].flatten())
        engine.backward(loss)
        engine.step(1e-2)
    after = engine.module.state_dict()
    start = tok.lamol_start
    for k, v in before.items():
        if "lora_B" in k:
            assert not torch.equal(after[k], v), k  # B starts at 0 and must move
        elif "lora_" not in k:
            rows = slice(0, start) if v.shape[:1] == (len(tok),) else slice(None)
            assert torch.equal(after[k][rows], v[rows]), k  # the base, weight decay or not
    emb = model.get_input_embeddings().weight
    assert not torch.equal(emb[tok.ids.ans], before[next(k for k in before if k.endswith(
        ("embed_tokens.weight", "embed_in.weight", "wte.weight")))][tok.ids.ans])


@pytest.mark.parametrize("kind", KINDS)
def test_a_checkpoint_holds_the_adapters_and_lamol_rows_and_rebuilds_the_model(tmp_path, kind):
    model, tok = lora_model(kind, seed=5)
    with torch.no_grad():
        for n, p in model.named_parameters():  # as if trained: adapters and LAMOL's rows move
            if "lora_" in n:
                p.add_(torch.randn_like(p) * 0.1)
            elif p.requires_grad:
                p[tok.lamol_start:].add_(torch.randn_like(p[tok.lamol_start:]) * 0.1)
    save_weights(model, tmp_path)
    stored = load_file(str(tmp_path / "model.safetensors"))
    assert all("lora_" in k or k.startswith("l2kd_rows.") for k in stored)
    n_stored = sum(v.numel() for v in stored.values())
    assert n_stored < 0.25 * sum(p.numel() for p in model.parameters())
    again = load_weights(tmp_path)
    x = torch.randint(0, len(tok), (2, 9))
    torch.testing.assert_close(again.eval()(x).logits, model.eval()(x).logits, rtol=0, atol=0)
    assert {n for n, p in again.named_parameters() if p.requires_grad} == \
        {n for n, p in model.named_parameters() if p.requires_grad}


def test_a_base_that_changed_is_refused(tmp_path):
    model, _ = lora_model("llama")
    save_weights(model, tmp_path)
    cfg = tmp_path / "config.json"
    cfg.write_text(cfg.read_text().replace('"seed": 0', '"seed": 1'))
    with pytest.raises(ArtifactError, match="not the one these adapters were trained on"):
        load_weights(tmp_path)


def test_unknown_target_modules_are_one_config_line():
    with pytest.raises(ConfigError, match="model.lora.target_modules"):
        lora_model("llama", target_modules=["c_attn"])


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_a_lora_trial_resumes_at_the_task_boundary_with_the_same_R(tmp_path, kind):
    cfg = trial_config(tiny_trial(**{"model.config": BACKBONES[kind], "model.lora": {"r": 4},
                                     "data.max_train_examples": 24, "data.max_test_examples": 6}))
    whole = run_trial(cfg, tmp_path / "whole")
    crash_in_stage(cfg, tmp_path / "broken")
    assert TrialResult.load(tmp_path / "broken").stages_done == 1
    seen = []
    resumed = run_trial(cfg, tmp_path / "broken", on_event=lambda n, **e: seen.append(n))
    assert "resume" in seen and resumed.R == whole.R and resumed.metrics == whole.metrics
    weights = next((tmp_path / "whole" / "checkpoints").glob("stage-*/model.safetensors"))
    assert all("lora_" in k or k.startswith("l2kd_rows.") for k in load_file(str(weights)))


def test_ewc_importance_and_anchor_cover_the_trainable_weights_only(tmp_path):
    cfg = trial_config(tiny_trial(method="ewc", **{"model.config": BACKBONES["llama"], "model.lora": {"r": 4},
                                                   "data.max_train_examples": 24, "data.max_test_examples": 6}))
    run_trial(cfg, tmp_path)
    state = torch.load(next((tmp_path / "checkpoints").glob("stage-*/method_state.pt")), weights_only=False)
    assert set(state["omega"]) == set(state["anchor"])
    assert all("lora_" in k or "embed_tokens" in k or "lm_head" in k for k in state["omega"])
    assert any("lora_" in k for k in state["omega"])


def test_lora_settings_leave_old_trial_identities_alone():
    from l2kd.identity import config_hash, trial_identity

    plain = trial_config(tiny_trial())
    assert "lora" not in trial_identity(plain.to_dict())["model"]
    assert config_hash(plain) != config_hash(trial_config(tiny_trial(**{"model.lora": {"r": 4}})))
