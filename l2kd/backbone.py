"""The bare Hugging Face model: built from a config (GPT-2 or any architecture) or loaded from
`model.pretrained`, its GELU kernel, and what the rest of l2kd asks of its structure (GPT-2 or not,
its width, its positions, an untied output embedding). LAMOL's rows, LoRA adapters and weights on
disk are l2kd/model.py's and l2kd/lora.py's, which build on this module.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel
from transformers.activations import ACT2FN
from transformers.utils import logging as hf_logging

from .config import ModelConfig
from .errors import ConfigError
from .io import looks_like_path
from .tokenizer import Tokenizer

hf_logging.set_verbosity_error()  # config warnings about bos/eos ids on small vocabularies


def build_base(cfg: ModelConfig, vocab_size: int, eos: int, lamol_start: int, seed: int) -> torch.nn.Module:
    """The model before LAMOL's rows are grown: pretrained weights (a vocabulary padded beyond the
    tokenizer's, as Qwen2's, cut back to the tokenizer's base so LAMOL's tokens get new rows), or
    random ones from `cfg.config` at `vocab_size`, drawn from `seed`."""
    torch.manual_seed(seed)
    if cfg.pretrained:
        _check_pretrained_path(cfg.pretrained)
        try:
            model = AutoModelForCausalLM.from_pretrained(cfg.pretrained, attn_implementation="sdpa")
        except Exception as e:  # noqa: BLE001 - surfaced as one config line
            raise ConfigError(f"model.pretrained: cannot load {cfg.pretrained!r} "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None
        if model.get_input_embeddings().weight.shape[0] > lamol_start:
            model.resize_token_embeddings(lamol_start, mean_resizing=False)
            model.config.vocab_size = lamol_start
        return model
    kwargs = cfg.arch_kwargs()
    model_type = kwargs.pop("model_type", "gpt2")
    if model_type == "gpt2":
        try:
            config = GPT2Config(vocab_size=vocab_size, bos_token_id=eos, eos_token_id=eos, **kwargs)
        except TypeError as e:
            raise ConfigError(f"model.config: {e}") from None
        if config.n_embd % config.n_head:
            raise ConfigError(f"model.config: n_embd ({config.n_embd}) must be a multiple of "
                              f"n_head ({config.n_head})")
        config._attn_implementation = "sdpa"  # PyTorch's fused scaled-dot-product attention
        return GPT2LMHeadModel(config)
    try:
        config = AutoConfig.for_model(model_type, vocab_size=vocab_size, bos_token_id=eos,
                                      eos_token_id=eos, **kwargs)
        return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    except Exception as e:  # noqa: BLE001 - configs raise their own validation errors
        cause = e.__cause__ or e  # huggingface_hub's validation error wraps the config's own
        raise ConfigError(f"model.config: {model_type}: {str(cause).splitlines()[0][:200]}") from None


# GPT-2's GELU, tanh-approximated, in transformers' two spellings: one PyTorch kernel
# (gelu_pytorch_tanh) or gelu_new's eight-operation chain. They compute the same function.
TANH_GELUS = ("gelu_pytorch_tanh", "gelu_new")


def use_gelu(model: GPT2LMHeadModel, kernel: str) -> GPT2LMHeadModel:
    """Run the model's blocks' GELU as `kernel` (one of TANH_GELUS), and record it in its config
    (saved with its weights). A model whose config names another activation (an exact GELU, a
    ReLU) keeps it: that is another function, not another kernel for the same one."""
    if kernel not in TANH_GELUS:
        raise ValueError(f"model.gelu: {kernel!r} is not one of {', '.join(TANH_GELUS)}")
    if getattr(model.config, "activation_function", None) not in TANH_GELUS \
            or not isinstance(model, GPT2LMHeadModel):  # GPT-2's setting; other models keep theirs
        return model
    for block in model.transformer.h:
        block.mlp.act = ACT2FN[kernel]
    model.config.activation_function = kernel
    return model


def _check_pretrained_path(pretrained: str) -> None:
    if looks_like_path(pretrained) and not Path(pretrained).expanduser().exists():
        raise ConfigError(f"model.pretrained: {pretrained}: no such folder (a base of your own: "
                          "python cli.py pretrain CONFIG --out FOLDER)")


def check_pretrained(pretrained: str) -> None:
    """A local `pretrained` folder exists, or a hub name is in the cache or answers one short request
    (raises ConfigError): a trial that cannot load it says so at once, where transformers would
    retry the hub for a minute before failing."""
    _check_pretrained_path(pretrained)
    if not Path(pretrained).expanduser().exists():  # a hub name: in the cache, or reachable
        from .hub import check_hub_model

        check_hub_model(pretrained)


def check_model_source(cfg: ModelConfig) -> None:
    """What a trial reads before it builds its model, checked without building it: the tokenizer
    loads, and `pretrained` can be loaded (raises ConfigError)."""
    Tokenizer.load(cfg.tokenizer, cfg.pretrained, cfg.builtin_vocab_size)
    if cfg.pretrained:
        check_pretrained(cfg.pretrained)


def untied_output_weight(model: torch.nn.Module) -> torch.Tensor | None:
    """The output embedding's weight where it is not the input embedding's (Llama's lm_head)."""
    out = model.get_output_embeddings()
    if out is None or out.weight is model.get_input_embeddings().weight:
        return None
    return out.weight


def is_gpt2(model: torch.nn.Module) -> bool:
    """Whether GPT-2's fast paths apply (its module tree: transformer.h, Conv1D, a tied lm_head)."""
    return isinstance(model, GPT2LMHeadModel)


def hidden_size(model) -> int:
    """The width of the model's hidden states (GPT-2's n_embd, elsewhere hidden_size)."""
    c = model.config
    return int(getattr(c, "n_embd", None) or c.hidden_size)


def n_positions(model: torch.nn.Module) -> int:
    """The model's positions (GPT-2's n_positions, elsewhere max_position_embeddings)."""
    c = model.config
    return int(getattr(c, "n_positions", None) or c.max_position_embeddings)
