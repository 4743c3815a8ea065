"""LoRA adapters through peft, on any backbone: attached, trained, saved small and rebuilt.

- `attach` freezes the base and injects one adapter (`model.lora`: r, alpha, dropout,
  target_modules) into the model in place (peft's `inject_adapter_in_model`), so the model stays the
  Hugging Face model every other module reads: its config, embeddings, forward and KV cache.
- LAMOL's added tokens (__ans__, __pad__, __unk__, the task tokens) are new to any base, so their
  rows of the input embedding (and of an untied output embedding) train; every other row is held
  fixed by a gradient mask and kept out of weight decay, so AdamW leaves it exactly as it is.
- The model's record (its config's `l2kd_lora` entry) says how to rebuild the base (the model
  settings, seed and vocabulary it was built with), a fingerprint of the base weights, and every
  adapter's settings. A checkpoint then stores only the adapters and LAMOL's rows; rebuilding refuses
  a base whose fingerprint differs (another revision of a pretrained model, another initialisation).
- Several adapters (O-LoRA's one per task) are all active at once; only those named trainable
  receive gradients.
- A LoRA Word-KD teacher over the student's base borrows the student's frozen base tensors
  (`share_frozen_base`) instead of holding a second copy of them.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import torch

from .config import LoraSettings, ModelConfig
from .errors import ArtifactError, ConfigError
from .backbone import build_base, untied_output_weight, use_gelu

CONFIG_KEY = "l2kd_lora"  # the entry in a saved model's config.json
DEFAULT = "default"  # the adapter `model.lora` attaches
ROWS_IN, ROWS_OUT = "l2kd_rows.input", "l2kd_rows.output"  # LAMOL's rows in a checkpoint


def is_lora(model: torch.nn.Module) -> bool:
    return bool(getattr(getattr(model, "config", None), CONFIG_KEY, None))


def record(model: torch.nn.Module) -> dict[str, Any]:
    return getattr(model.config, CONFIG_KEY)


def adapter_names(model: torch.nn.Module) -> list[str]:
    return list(record(model)["adapters"])


def lora_layers(model: torch.nn.Module) -> list:
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


# --------------------------------------------------------------------------- attaching
def resolve_targets(model: torch.nn.Module, settings: LoraSettings) -> list[str]:
    if settings.target_modules:
        return list(settings.target_modules)
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    found = DEFAULTS.get(model.config.model_type)
    if not found:
        raise ConfigError(f"model.lora.target_modules: peft has no default for model_type "
                          f"{model.config.model_type!r}; name the modules to adapt")
    return list(found)


def _inject(model: torch.nn.Module, name: str, spec: dict[str, Any]) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], lora_dropout=spec["dropout"],
                        target_modules=spec["target_modules"],
                        fan_in_fan_out=model.config.model_type == "gpt2")  # GPT-2's Conv1D is (in, out)
    try:
        inject_adapter_in_model(config, model, adapter_name=name)
    except ValueError as e:
        raise ConfigError(f"model.lora.target_modules: {str(e).splitlines()[0][:200]}") from None


def attach(model: torch.nn.Module, settings: LoraSettings, base: dict[str, Any]) -> None:
    """Freeze `model` and give it its first adapter; `base` records how it was built (model
    settings without lora, seed, vocab_size, eos, lamol_start), for `rebuild`."""
    spec = {"r": settings.r, "alpha": settings.alpha, "dropout": settings.dropout,
            "target_modules": resolve_targets(model, settings)}
    model.requires_grad_(False)
    fp = fingerprint(model, base["lamol_start"])
    _inject(model, DEFAULT, spec)
    setattr(model.config, CONFIG_KEY, {"base": base, "fingerprint": fp, "adapters": {DEFAULT: spec}})
    activate(model, [DEFAULT])
    train_added_rows(model)


def add_adapter(model: torch.nn.Module, name: str) -> None:
    """A fresh adapter with the first one's settings (O-LoRA's adapter of a new task)."""
    rec = record(model)
    if name in rec["adapters"]:
        return
    spec = dict(rec["adapters"][DEFAULT])
    _inject(model, name, spec)
    rec["adapters"][name] = spec


def activate(model: torch.nn.Module, trainable: list[str]) -> None:
    """Every adapter active in the forward; only those in `trainable` get gradients."""
    names = adapter_names(model)
    for layer in lora_layers(model):
        layer.set_adapter(names)
        for part in (layer.lora_A, layer.lora_B):
            for n in names:
                if n in part:
                    part[n].requires_grad_(n in trainable)


def _zero_base_rows(start: int, grad: torch.Tensor) -> torch.Tensor:
    grad = grad.clone()
    grad[:start] = 0
    return grad


def train_added_rows(model: torch.nn.Module) -> None:
    """LAMOL's rows of the embeddings train; the base's rows get no gradient and no weight decay
    (AdamW then leaves them unchanged: zero gradient, zero moments, no decoupled decay)."""
    start = record(model)["base"]["lamol_start"]
    for w in (model.get_input_embeddings().weight, untied_output_weight(model)):
        if w is None:
            continue
        w.requires_grad_(True)
        w._l2kd_no_decay = True
        if not getattr(w, "_l2kd_masked", False):  # one hook per parameter (resizing makes new ones)
            w.register_hook(functools.partial(_zero_base_rows, start))
            w._l2kd_masked = True


def fingerprint(model: torch.nn.Module, start: int) -> str:
    """A digest of the base weights (the embeddings' base rows only), taken before any adapter."""
    emb, out = model.get_input_embeddings().weight, untied_output_weight(model)
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.named_parameters():
            t = p[:start] if p is emb or p is out else p
            t = t.detach().double()
            h.update(f"{name}:{tuple(t.shape)}:{float(t.sum()):.7e}:{float(t.abs().sum()):.7e};".encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- saving and loading
def adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint keeps of a LoRA model: every adapter's weights and LAMOL's rows."""
    start = record(model)["base"]["lamol_start"]
    state = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    state[ROWS_IN] = model.get_input_embeddings().weight[start:]
    out = untied_output_weight(model)
    if out is not None:
        state[ROWS_OUT] = out[start:]
    return state


def rebuild(config: dict[str, Any], state: dict[str, torch.Tensor], source: str) -> torch.nn.Module:
    """A LoRA model from its saved config (with the record) and `adapter_state`: the base built again
    as it was, checked against its fingerprint, then the adapters and LAMOL's rows put back."""
    rec = config[CONFIG_KEY]
    base = rec["base"]
    start = base["lamol_start"]
    mcfg = ModelConfig.model_validate(base["model"])
    model = use_gelu(build_base(mcfg, base["vocab_size"], base["eos"], start, base["seed"]), mcfg.gelu).float()
    model.resize_token_embeddings(config["vocab_size"], mean_resizing=False)
    model.config.vocab_size = config["vocab_size"]
    if fingerprint(model, start) != rec["fingerprint"]:
        raise ArtifactError(f"{source}: the base model built from {base['model'].get('pretrained') or 'its config'} "
                            "is not the one these adapters were trained on (its weights differ)")
    model.requires_grad_(False)
    state = dict(state)
    with torch.no_grad():
        model.get_input_embeddings().weight[start:] = state.pop(ROWS_IN)
        out = untied_output_weight(model)
        if out is not None:
            out[start:] = state.pop(ROWS_OUT)
    for name, spec in rec["adapters"].items():
        _inject(model, name, spec)
    setattr(model.config, CONFIG_KEY, rec)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if "lora_" in k]
    if unexpected or missing:
        raise ArtifactError(f"{source}: adapter weights do not match the config ({missing[:3]} {unexpected[:3]})")
    activate(model, adapter_names(model))
    train_added_rows(model)
    return model


# --------------------------------------------------------------------------- a teacher over the student's base
def share_frozen_base(teacher: torch.nn.Module, student: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Make a LoRA teacher's frozen base parameters the LoRA student's own tensors (in place), where
    both are LoRA models over the same base (the same fingerprint); returns the parameters shared
    (the student's), which nothing may cast or move for the teacher alone. Other models: nothing.

    Shared: every parameter of the teacher with the student's name, shape and dtype that is no
    adapter's (lora_*), no embedding matrix, frozen in the student (requires_grad False, so no step
    changes it) and equal to the student's, exactly: a base the student changed in place (an adapter
    merged into it) keeps the teacher's own copy. The embeddings (the input one and an untied output
    one) stay the teacher's own: each is one (vocabulary x width) matrix whose rows from lamol_start
    on are the teacher's trained LAMOL rows, while the student's matrix holds other rows there (and
    more of them); a view of the student's cannot hold them, and a lookup over two tensors would
    replace the model's own embedding and head forward."""
    if not (is_lora(teacher) and is_lora(student)) or record(teacher)["fingerprint"] != record(student)["fingerprint"]:
        return []
    own = {id(w) for w in (teacher.get_input_embeddings().weight, untied_output_weight(teacher)) if w is not None}
    theirs = dict(student.named_parameters())
    shared = []
    with torch.no_grad():
        for prefix, module in teacher.named_modules():
            for name, p in list(module._parameters.items()):
                full = f"{prefix}.{name}" if prefix else name
                s = theirs.get(full)
                if (p is None or s is None or id(p) in own or "lora_" in full or s.requires_grad
                        or s.shape != p.shape or s.dtype != p.dtype or not torch.equal(p, s.to(p.device))):
                    continue
                setattr(module, name, s)
                shared.append(s)
    return shared
