"""Any Hugging Face causal LM: Llama-style (rotary, grouped-query attention), GPT-NeoX-style and GPT-2,
built from configs, with the builtin tokenizer, a Hugging Face tokenizer folder and GPT-2's real BPE."""

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

from l2kd.checkpoint import latest_checkpoint
from l2kd.config import ModelConfig
from l2kd.decode import DecodeSettings, decode, decode_reference
from l2kd.errors import ConfigError
from l2kd.backbone import is_gpt2, n_positions
from l2kd.model import TargetLogits, build_model, load_weights, save_weights
from l2kd.tokenizer import Tokenizer
from l2kd.trial import run_trial
from l2kd.trialconfig import trial_config

from conftest import GPT2_TOKENIZER, tiny_trial

CPU = torch.device("cpu")
# Tiny shapes of each family; Llama's has 4 query heads sharing 2 key/value heads (GQA) and rotary
# positions, as Qwen2's; GPT-NeoX's has partial rotary positions and a fused QKV projection.
BACKBONES = {
    "llama": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 96},
    "qwen2": {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 96},
    "gpt_neox": {"model_type": "gpt_neox", "hidden_size": 32, "intermediate_size": 64,
                 "num_hidden_layers": 1, "num_attention_heads": 4, "max_position_embeddings": 96},
    "gpt2": {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 96},
}


def model_of(kind: str, tok: Tokenizer | None = None, seed: int = 0, **extra):
    tok = tok or Tokenizer.load("builtin")
    cfg = {**BACKBONES[kind], **extra}
    return build_model(ModelConfig(config=cfg), tok, seed), tok


@pytest.mark.parametrize("kind", list(BACKBONES))
def test_left_padded_batched_greedy_equals_one_at_a_time(kind):
    model, tok = model_of(kind, **({"n_layer": 2} if kind == "gpt2" else {"num_hidden_layers": 2}))
    model.eval()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, 300, (n,), generator=g).tolist() for n in (3, 11, 1, 6, 11)]
    limits = [7, 4, 12, 1, 9]  # rows finish at different steps and leave the batch
    s = DecodeSettings("greedy", tokens_per_batch=10_000)
    batched = decode(model, prompts, limits, eos=tok.ids.eos, pad=tok.ids.pad, max_total=96,
                     settings=s, device=CPU)
    alone = [decode_reference(model, p, m, eos=tok.ids.eos, max_total=96, settings=s, device=CPU)
             for p, m in zip(prompts, limits)]
    assert batched == alone and sum(map(len, batched)) > 10


@pytest.mark.parametrize("kind", list(BACKBONES))
def test_target_logits_are_the_models_own_logits(kind):
    model, tok = model_of(kind)
    model.eval()
    assert is_gpt2(model) == (kind == "gpt2") and n_positions(model) == 96
    x = torch.randint(1, len(tok), (3, 10), generator=torch.Generator().manual_seed(2))
    positions = torch.tensor([0, 4, 12, 19, 29])
    full = model(x).logits.flatten(0, 1)[positions]
    torch.testing.assert_close(TargetLogits(model)(x, positions), full, rtol=1e-5, atol=1e-5)
    frozen = TargetLogits.frozen(model)
    torch.testing.assert_close(frozen(x, positions), full, rtol=1e-5, atol=1e-5)


def test_lamol_rows_of_an_untied_head_are_seeded_like_the_input_rows():
    a, tok = model_of("llama", seed=3)
    b, _ = model_of("llama", seed=3)
    assert a.get_output_embeddings().weight is not a.get_input_embeddings().weight
    from l2kd.model import grow_embeddings

    for m in (a, b):
        grow_embeddings(m, len(tok) + 2, 3)
    for w in ("get_input_embeddings", "get_output_embeddings"):
        new_a, new_b = getattr(a, w)().weight[-2:], getattr(b, w)().weight[-2:]
        assert torch.equal(new_a, new_b) and 0.005 < float(new_a.std()) < 0.05
    assert not torch.equal(a.get_input_embeddings().weight[-2:], a.get_output_embeddings().weight[-2:])


@pytest.mark.parametrize("kind", ["llama", "gpt_neox"])
def test_save_and_load_give_the_same_model(tmp_path, kind):
    model, tok = model_of(kind)
    save_weights(model, tmp_path)
    again = load_weights(tmp_path)
    assert type(again) is type(model)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


def test_a_gpt2_checkpoint_in_the_old_format_still_loads(tmp_path):
    """GPT-2 checkpoints were written as GPT2Config JSON + every weight but the tied lm_head."""
    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=64, vocab_size=70)
    gpt2 = GPT2LMHeadModel(config)
    save_file({k: v.contiguous() for k, v in gpt2.state_dict().items() if not k.endswith("lm_head.weight")},
              str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(config.to_json_string())
    loaded = load_weights(tmp_path)
    assert isinstance(loaded, GPT2LMHeadModel) and loaded.lm_head.weight is loaded.transformer.wte.weight
    x = torch.randint(0, 70, (2, 9))
    assert torch.equal(loaded.eval()(x).logits, gpt2.eval()(x).logits)
    save_weights(loaded, tmp_path / "..")  # and is written back in the same format
    from safetensors.torch import load_file

    assert set(load_file(str(tmp_path / ".." / "model.safetensors"))) == {
        k for k in gpt2.state_dict() if not k.endswith("lm_head.weight")}


def hf_tokenizer_folder(tmp_path):
    """A Hugging Face tokenizer folder whose EOS is `</s>` (as Llama's), from the builtin BPE."""
    from tokenizers import Tokenizer as HF

    from l2kd.tokenizer import _builtin_json

    hf = HF.from_str(_builtin_json(1024))
    hf.add_special_tokens(["</s>"])
    folder = tmp_path / "tok"
    folder.mkdir()
    hf.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "</s>"}}))
    return folder


def test_a_tokenizers_own_eos_is_lamols_and_survives_checkpoints(tmp_path):
    folder = hf_tokenizer_folder(tmp_path)
    tok = Tokenizer.load(str(folder))
    assert tok.ids.eos == tok.hf.token_to_id("</s>") and tok.eos_token == "</s>"
    assert tok.lamol_start == tok.ids.ans == tok.ids.eos + 1  # LAMOL's tokens follow the base vocabulary
    cfg = trial_config(tiny_trial(**{"model.tokenizer": str(folder), "model.config": BACKBONES["llama"],
                                     "tasks": ["synth.sentiment"], "method": "finetune"}))
    run_trial(cfg, tmp_path / "run")
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt.tokenizer().ids == tok.ids and ckpt.tokenizer().eos_token == "</s>"
    from l2kd.checkpoint import pack_checkpoint

    assert pack_checkpoint(ckpt).tokenizer().ids.eos == tok.ids.eos


@pytest.mark.realdata
def test_lamol_tokens_on_gpt2s_bpe_with_a_llama_model():
    if not GPT2_TOKENIZER.is_dir():
        pytest.skip(f"GPT-2's tokenizer not found at {GPT2_TOKENIZER}")
    tok = Tokenizer.load(str(GPT2_TOKENIZER))
    tok.add_task("synth.nlg")
    model, _ = model_of("llama", tok)
    assert (tok.ids.eos, tok.ids.ans, tok.task_id("synth.nlg")) == (50256, 50257, 50260)
    assert model.get_input_embeddings().weight.shape[0] == model.get_output_embeddings().weight.shape[0] == 50261
    x = torch.tensor([tok.encode("the food was great") + [tok.ids.ans]])
    assert model.eval()(x).logits.shape[-1] == model.config.vocab_size


def test_bad_model_configs_are_one_line():
    with pytest.raises(ValueError, match="'hiden_size' is not a LlamaConfig field; did you mean 'hidden_size'"):
        ModelConfig(config={"model_type": "llama", "hiden_size": 32})
    with pytest.raises(ValueError, match="model_type 'lama' is not a transformers architecture"):
        ModelConfig(config={"model_type": "lama"})
    with pytest.raises(ValueError, match="'n_embed' is not a GPT2Config field"):
        ModelConfig(config={"n_embed": 32})
    with pytest.raises(ConfigError, match="model.config: llama"):
        build_model(ModelConfig(config={"model_type": "llama", "hidden_size": 30, "num_attention_heads": 4,
                                        "num_hidden_layers": 1}), Tokenizer.load("builtin"), 0)


def test_multitask_ca_stays_gpt2_only():
    with pytest.raises(ConfigError, match="multitask_ca conditions GPT-2's layer norms; model_type 'llama'"):
        trial_config(tiny_trial(method="multitask_ca", **{"model.config": BACKBONES["llama"]}))
