"""The language model: any Hugging Face causal LM, loaded by name/path or built from a config, with
embeddings grown for new tokens, optionally with LoRA adapters (l2kd/lora.py).

GPT-2 keeps its fast paths (the padded head, compiled blocks, a frozen teacher's stored casts); every
other architecture takes the generic path: its base model's hidden states (SDPA attention) and its
output embeddings, the same values as its own forward. Nothing is fetched from a hub unless the user
names a hub model in `model.pretrained`.
"""

from __future__ import annotations

import functools
import json
import logging
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

from .backbone import build_base, is_gpt2, untied_output_weight, use_gelu
from .conditioning import conditioned, install, spec_from_config
from .config import ModelConfig
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)
# transformers 5 renamed GPT-2's `past_key_values` argument to `cache` and warns at every decode
# call; the name works throughout the versions we support, so the warning says nothing to a user
warnings.filterwarnings("ignore", message=r"`past_key_values` is deprecated", category=FutureWarning)

INIT_STD = 0.02  # GPT-2's initializer_range; pytorch-transformers 1.2 drew new rows from N(0, 0.02)


def build_model(cfg: ModelConfig, tokenizer: Tokenizer, seed: int) -> torch.nn.Module:
    """A causal LM sized for `tokenizer` (its added tokens included), in fp32, in train mode; with
    `cfg.lora`, its base frozen and a LoRA adapter attached (see l2kd/lora.py)."""
    model = build_base(cfg, len(tokenizer), tokenizer.ids.eos, tokenizer.lamol_start, seed)
    grow_embeddings(model, len(tokenizer), seed)
    use_gelu(model, cfg.gelu)
    model = model.float().train()
    if cfg.lora is not None:
        from . import lora

        base = {"model": cfg.model_dump(mode="json", exclude={"lora"}), "seed": seed,
                "vocab_size": len(tokenizer), "eos": tokenizer.ids.eos, "lamol_start": tokenizer.lamol_start}
        lora.attach(model, cfg.lora, base)
    return model


def grow_embeddings(model: torch.nn.Module, vocab_size: int, seed: int) -> None:
    """Resize to `vocab_size`; new rows ~ N(0, 0.02) as LAMOL's library did (not the mean of old
    rows, as modern transformers does), drawn from a generator keyed by the seed and row index so a
    resumed trial grows identical rows. An untied output embedding (Llama's lm_head) draws its new
    rows next from the same generator; a tied one (GPT-2's) shares the input's."""
    old = model.get_input_embeddings().weight.shape[0]
    if vocab_size == old:
        return
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    if vocab_size > old:
        emb = model.get_input_embeddings().weight
        gen = torch.Generator().manual_seed(seed * 1_000_003 + old)
        rows = torch.randn(vocab_size - old, emb.shape[1], generator=gen) * INIT_STD
        with torch.no_grad():
            emb[old:] = rows.to(emb.device, emb.dtype)
            out = untied_output_weight(model)
            if out is not None:
                rows = torch.randn(vocab_size - old, out.shape[1], generator=gen) * INIT_STD
                out[old:] = rows.to(out.device, out.dtype)
    model.config.vocab_size = vocab_size
    from . import lora

    if lora.is_lora(model):  # resizing made new embedding parameters: only LAMOL's rows train
        lora.train_added_rows(model)


def save_weights(model: torch.nn.Module, folder: Path) -> None:
    """config.json + model.safetensors (fp32): every weight once (a tied output embedding is left
    out, as GPT-2's lm_head always was); a LoRA model's adapters and LAMOL's rows only."""
    from safetensors.torch import save_file

    from . import lora

    if lora.is_lora(model):
        state = lora.adapter_state(model)
    else:
        state = {k: v for k, v in model.state_dict().items() if k not in _shared_keys(model)}
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(model.config.to_json_string())


def _shared_keys(model: torch.nn.Module) -> set[str]:
    """State-dict keys of tensors another, earlier key already holds (tied weights)."""
    seen: set[int] = set()
    shared = set()
    for k, v in model.state_dict(keep_vars=True).items():
        if v.data_ptr() in seen and v.numel():
            shared.add(k)
        seen.add(v.data_ptr())
    return shared


def read_weights(folder: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """(model config as JSON, fp32 state dict) as `save_weights` wrote them."""
    from safetensors.torch import load_file

    return (folder / "config.json").read_text(), load_file(str(folder / "model.safetensors"))


def model_from_state(config_json: str, state: dict[str, torch.Tensor], source: str) -> torch.nn.Module:
    """A model rebuilt from its config and weights, in fp32 on the CPU (a LoRA model from its base,
    rebuilt as it was built, plus the stored adapters: see l2kd/lora.py)."""
    from . import lora

    d = json.loads(config_json)
    if lora.CONFIG_KEY in d:
        return lora.rebuild(d, state, source)
    if d.get("model_type", "gpt2") == "gpt2":  # GPT-2 exactly as checkpoints were always read
        config = GPT2Config.from_dict(d)
        config._attn_implementation = "sdpa"
        model = GPT2LMHeadModel(config)
    else:
        config = AutoConfig.for_model(d["model_type"]).from_dict(d)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    spec = spec_from_config(config)
    if spec is not None:  # a task-conditioned model (multitask_ca): rebuild its modules first
        install(model, spec)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(k not in _shared_keys(model) for k in missing):
        raise RuntimeError(f"{source}: weights do not match the config ({missing[:3]} {unexpected[:3]})")
    model.tie_weights()
    return model.float()


def load_weights(folder: Path) -> torch.nn.Module:
    """A model saved by `save_weights`, in fp32 on the CPU."""
    return model_from_state(*read_weights(folder), str(folder))


def _run_block(block: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    out = block(hidden)  # no mask: GPT-2's attention is then causal (right padding never leaks)
    return out[0] if isinstance(out, tuple) else out


@functools.cache
def compiled_block():
    """`_run_block` through torch.compile (inductor, dynamic batch and length), made once a process.

    Every GPT-2 block of every model runs the same code on weights of the same shapes, and PyTorch
    (2.5 and later) treats a module passed in as an input rather than a constant, so the compiler
    builds one graph for all of them: one each for training, no-grad (a teacher) and each autocast
    dtype, not one per block, task or vocabulary size. The embeddings and the LM head, whose shape
    grows with every task's token, stay eager.
    """
    return torch.compile(_run_block, dynamic=True)


def hidden_states(gpt2: GPT2LMHeadModel, input_ids: torch.Tensor,
                  compile_blocks: bool = False) -> torch.Tensor:
    """GPT-2's last hidden states for right-padded `input_ids` (positions 0.. in every row).

    With `compile_blocks` the blocks run through `compiled_block()`, around them the same steps as
    GPT2Model.forward without a mask or cache (token + position embeddings, dropout, blocks, final
    LayerNorm): the same values to float tolerance, in far fewer kernels. Any other causal LM: its
    base model's output (no mask, so causal attention; right padding never leaks), always eager.
    """
    if not is_gpt2(gpt2):
        return gpt2.base_model(input_ids=input_ids, use_cache=False).last_hidden_state
    t = gpt2.transformer
    if not compile_blocks:
        return t(input_ids=input_ids, use_cache=False).last_hidden_state
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    h = t.drop(t.wte(input_ids) + t.wpe(positions))
    run = compiled_block()
    for block in t.h:
        h = run(block, h)
    return t.ln_f(h)


HEAD_ALIGN = 64  # GEMM dimensions a multiple of this run on the GPU's fast tensor-core kernels


def padded_head_weight(weight: torch.Tensor, align: int | None = None) -> torch.Tensor:
    """The LM head's weight with zero rows up to a multiple of `align` (default: HEAD_ALIGN on a GPU,
    none on a CPU); the weight itself where nothing is missing."""
    if align is None:
        align = HEAD_ALIGN if weight.is_cuda else 1
    pad = -weight.shape[0] % align
    return F.pad(weight, (0, 0, 0, pad)) if pad else weight


def head_logits(gpt2: GPT2LMHeadModel, hidden: torch.Tensor, align: int | None = None,
                weight: torch.Tensor | None = None) -> torch.Tensor:
    """GPT-2's LM head over `hidden` (N, d), with the vocabulary padded to a multiple of `align`
    for the matrix product (see `padded_head_weight`) and cut back after it; `weight`: the head's
    weight already padded (and cast), as a frozen model keeps it.

    GPT-2's 50,257 words plus LAMOL's tokens are no multiple of 8, which sends the head's three
    products (logits and both gradients) to slow GEMM kernels on a GPU (docs/performance.md has the
    profile). Padding the weight is a 77 MB copy; the logits are a view of the padded
    product with exactly the unpadded values, and the padding's gradient is dropped.
    Any other causal LM: its own output embeddings (with a bias, a LoRA or a soft cap where it has
    one), unpadded.
    """
    if not is_gpt2(gpt2):
        logits = gpt2.get_output_embeddings()(hidden)
        cap = getattr(gpt2.config, "final_logit_softcapping", None)  # Gemma 2's, applied by its forward
        return logits if not cap else torch.tanh(logits / cap) * cap
    vocab = gpt2.lm_head.weight.shape[0]
    if weight is None:
        weight = padded_head_weight(gpt2.lm_head.weight, align)
    logits = F.linear(hidden, weight)
    return logits if logits.shape[1] == vocab else logits[:, :vocab]


class TargetLogits(torch.nn.Module):
    """A causal LM whose forward returns LM-head logits only at chosen flat positions of its input.

    The head is the costly part of a small GPT-2's step (a 50k-word vocabulary), and the losses read
    logits only at target positions: the answer + EOS of QA rows and the real tokens of LM rows.
    The values are exactly the model's logits at those positions. DeepSpeed wraps this module.
    `compile_blocks` runs GPT-2's blocks compiled (see `hidden_states`); a task-conditioned GPT-2
    (multitask_ca) and every other architecture always run eagerly, the first because its
    conditioning is Python state the compiler cannot see. `gpt2` names the wrapped model of any
    architecture (the name predates the others).
    """

    def __init__(self, gpt2: torch.nn.Module, compile_blocks: bool = False):
        super().__init__()
        self.gpt2 = gpt2
        self.compile_blocks = compile_blocks and is_gpt2(gpt2) and spec_from_config(gpt2.config) is None
        self.head_weight: torch.Tensor | None = None  # a frozen model's head, padded and cast once

    @classmethod
    def frozen(cls, gpt2: GPT2LMHeadModel, amp_dtype: torch.dtype | None = None,
               compile_blocks: bool = False, keep: Iterable[torch.Tensor] = ()) -> "TargetLogits":
        """A GPT-2 (on its device) that only runs forward from now on, a Word-KD teacher: eval mode,
        no gradients, and the weights of its matrix products kept as the forward uses them.

        Autocast keeps the cast of a weight only for a parameter that requires grad, so a frozen fp32
        model under autocast was cast whole again at every call: 97 casts and about 0.75 GB of
        memory traffic per GPT-2-small forward, in every Word-KD step. With `amp_dtype` the blocks'
        Conv1D weights and biases are stored in it: the products see exactly the values autocast gave
        them, and LayerNorms and embeddings, which autocast runs in fp32, stay fp32. The LM head
        (tied to the fp32 embeddings) is kept padded and cast once beside them. Other architectures
        are only put in eval mode without gradients (the stored casts are GPT-2's fast path).
        `keep`: parameters another model holds (a LoRA student's frozen base, lora.share_frozen_base);
        a module holding one is not cast (autocast casts its weights at every call, as the student's).
        """
        gpt2.eval().requires_grad_(False)
        head = cls(gpt2, compile_blocks)
        if not is_gpt2(gpt2):
            return head
        weight = gpt2.lm_head.weight.detach()
        if amp_dtype is not None:
            kept = {id(p) for p in keep}
            for module in gpt2.transformer.h.modules():
                if isinstance(module, Conv1D) and not any(id(p) in kept for p in module.parameters()):
                    module.to(amp_dtype)
            weight = weight.to(amp_dtype)
        head.head_weight = padded_head_weight(weight)
        return head

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """`task_ids` (one per input row) only for a task-conditioned GPT-2 (multitask_ca)."""
        return self.head(self.hidden_at(input_ids, positions, task_ids))

    def hidden_at(self, input_ids: torch.Tensor, positions: torch.Tensor,
                  task_ids: torch.Tensor | None = None) -> torch.Tensor:
        """GPT-2's final hidden states (after ln_f) at the flat `positions`: (len(positions), d)."""
        with conditioned(self.gpt2, task_ids):
            hidden = hidden_states(self.gpt2, input_ids, self.compile_blocks)
        return hidden.flatten(0, 1).index_select(0, positions)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head over hidden states `hidden_at` gave."""
        return head_logits(self.gpt2, hidden, weight=self.head_weight)
