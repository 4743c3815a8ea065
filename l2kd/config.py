"""Trial configuration: validated on creation, loaded from YAML with unknown-key errors.

One source of truth for every option: the field's description here (the CLI's `--help` and
`cli.py validate --explain` print them), and its mark of the identities it is not part of
(l2kd.identity reads them). This module checks a config's shape; each method's own
parameters are checked by the method registry, above it: build trial configs with
`l2kd.trialconfig.trial_config` / `load_trial_config`, which do both. Defaults follow the published LAMOL/L2KD settings
(`train.py`/`settings.py` of the reference) unless a comment says otherwise. Precedence when
loading: the file, then `--set key=value` overrides from the command line.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError
from .registry import did_you_mean


class Strict(BaseModel):
    """Frozen, no unknown keys, defaults validated too, and no silent coercion: `seeds: ["7"]` or
    `epochs: "3"` is an error naming the key, not 7 or 3 (a whole number is still a valid float)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, strict=True)


# GPT-2 shapes by name. `tiny` trains in seconds on a laptop CPU; `small` is GPT-2 small's shape.
MODEL_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 512},
    "small": {"n_layer": 12, "n_embd": 768, "n_head": 12, "n_positions": 1024},
}


# --------------------------------------------------------------------------- identity marks
# What identifies a trial (its config hash), a teacher (its key) and a result that may share a
# table with others is read from these marks on the fields below by l2kd.identity, which holds the
# rules; a field without a mark is part of all three.
TRIAL, TEACHER, RESULT = "trial", "teacher", "result"


def outside(*identities: str) -> dict[str, Any]:
    """A field's mark (json_schema_extra): not part of the named identities (none named: of any)."""
    return {"identity": {i: False for i in identities} if identities else False}


def added_later() -> dict[str, Any]:
    """A field's mark: added after identities were first stored, left out of them at its default."""
    return {"added_later": True}


def stored_as(value: Any) -> dict[str, Any]:
    """A field's mark: identities were stored with `value` as its default; today's joins as `value`."""
    return {"stored_as": value}


class DataConfig(Strict):
    dir: str = Field(
        "builtin",
        description="folder holding {task}_to_squad-{train,test}-v2.0.json files, or 'builtin' "
        "for the generated synthetic benchmark",
        json_schema_extra=outside(TEACHER, RESULT),  # a teacher identifies its files by content
    )
    max_train_examples: int | None = Field(
        None, ge=1, description="keep at most this many training examples per task (quick runs)"
    )
    max_test_examples: int | None = Field(
        None, ge=1, description="keep at most this many test examples per task (quick runs)"
    )
    subset_seed: int = Field(
        0,
        description="seed choosing which examples a cap keeps; fixed apart from the trial seed so "
        "every trial and teacher of a grid sees the same subset",
    )
    distil_dir: str | None = Field(
        None,
        description="folder of precomputed Seq-KD files {task}_to_squad-distil-v2.0.json; when "
        "set, seq_kd/seq_kd_soft read them instead of decoding with the teacher",
        json_schema_extra=outside(RESULT),  # an input of one method, not of what a table compares
    )


class LoraSettings(Strict):
    r: int = Field(8, ge=1, description="LoRA rank")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (the update is alpha/r x BA)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA branch's input")
    target_modules: list[str] | None = Field(
        None, min_length=1, description="names of the modules that get an adapter (e.g. q_proj and "
        "v_proj); default: peft's choice for the architecture (GPT-2 c_attn, Llama/Qwen2 q_proj + "
        "v_proj, GPT-NeoX query_key_value)")


class ModelConfig(Strict):
    pretrained: str | None = Field(
        None,
        description="a Hugging Face name (e.g. gpt2, HuggingFaceTB/SmolLM2-135M) or local folder of "
        "any causal LM (AutoModelForCausalLM); when unset, a randomly initialised model is built "
        "from `config`",
    )
    config: str | dict[str, Any] = Field(
        "tiny",
        description="the shape when not pretrained: a GPT-2 preset (tiny, small) or a mapping of "
        "config fields; `model_type` (gpt2, llama, qwen2, gpt_neox, ...; default gpt2) picks the "
        "architecture, the other keys are its config's fields (GPT-2: n_layer, n_embd, n_head, "
        "n_positions; Llama: hidden_size, num_hidden_layers, num_attention_heads, "
        "num_key_value_heads, intermediate_size, max_position_embeddings, ...)",
    )
    tokenizer: str = Field(
        "builtin",
        description="'builtin' (a byte-level BPE trained on the built-in benchmark, small and "
        "fast), a folder with GPT-2's encoder.json + vocab.bpe, or a Hugging Face name/folder",
        # a teacher identifies it by its vocabulary's fingerprint, not by how its path is spelled
        json_schema_extra=outside(TEACHER),
    )
    builtin_vocab_size: int = Field(1024, ge=300, description="vocabulary size of the builtin BPE")
    gelu: Literal["gelu_pytorch_tanh", "gelu_new"] = Field(
        "gelu_pytorch_tanh",
        description="how GPT-2's tanh-approximated GELU is computed: 'gelu_pytorch_tanh' in one "
        "kernel (PyTorch's gelu(approximate='tanh')), or 'gelu_new', transformers' chain of eight "
        "operations that the reference ran (its pow runs in fp32 under CUDA autocast). The same "
        "function to float rounding; a model whose config names another activation keeps it",
        # the same function either way: folders trained (with gelu_new) before it existed resume
        json_schema_extra=added_later(),
    )
    lora: LoraSettings | None = Field(
        None, description="train LoRA adapters (peft) on a frozen base instead of every weight: "
        "{r, alpha, dropout, target_modules}; LAMOL's added token rows still train",
        json_schema_extra=added_later())  # unset: full fine-tuning, as before the setting existed

    @field_validator("config")
    @classmethod
    def _known_preset(cls, v: str | dict) -> str | dict:
        if isinstance(v, str) and v not in MODEL_PRESETS:
            raise ValueError(f"unknown preset {v!r}; {did_you_mean(v, list(MODEL_PRESETS))}")
        if isinstance(v, dict):  # configs take any keyword silently: a misspelt one would be lost
            import inspect

            from transformers import CONFIG_MAPPING

            model_type = v.get("model_type", "gpt2")
            if model_type not in CONFIG_MAPPING:
                raise ValueError(f"model_type {model_type!r} is not a transformers architecture; "
                                 f"{did_you_mean(str(model_type), list(CONFIG_MAPPING.keys()))}")
            config_cls = CONFIG_MAPPING[model_type]
            known = sorted(set(config_cls().to_dict()) | set(inspect.signature(config_cls).parameters)
                           | {"model_type"})
            what = "GPT2Config" if model_type == "gpt2" else config_cls.__name__
            for key in v:
                if key not in known:
                    raise ValueError(f"{key!r} is not a {what} field; {did_you_mean(str(key), known)}")
        return v

    def model_type(self) -> str | None:
        """The architecture, where the settings tell it without loading anything (None: a
        pretrained model named without a local folder that says)."""
        if not self.pretrained:
            return "gpt2" if isinstance(self.config, str) else self.config.get("model_type", "gpt2")
        f = Path(self.pretrained).expanduser() / "config.json"
        try:
            return json.loads(f.read_text())["model_type"] if f.is_file() else None
        except (ValueError, KeyError):
            return None

    def gpt2_kwargs(self) -> dict[str, Any]:
        return dict(MODEL_PRESETS[self.config]) if isinstance(self.config, str) else dict(self.config)

    def arch_kwargs(self) -> dict[str, Any]:
        """The config fields, `model_type` included where given (a preset is GPT-2's)."""
        return self.gpt2_kwargs()


class TrainingConfig(Strict):
    epochs: int = Field(9, ge=1, description="epochs per task (L2KD: 9; LAMOL's default was 3)")
    lr: float = Field(6.25e-5, gt=0, description="peak AdamW learning rate")
    adam_eps: float = Field(1e-4, gt=0, description="AdamW epsilon")
    weight_decay: float = Field(0.01, ge=0, description="decoupled weight decay (not on biases)")
    decay_layernorm: bool = Field(
        False,
        description="also decay LayerNorm weights; the reference did so by accident (its no-decay "
        "list names 'LayerNorm', GPT-2 names them ln_*), set true to reproduce that",
    )
    warmup_ratio: float = Field(
        0.005, ge=0, le=1, description="linear warm-up length as a fraction of ONE epoch's examples"
    )
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    batch_policy: Literal["paper", "tokens"] = Field(
        "paper",
        description="'paper': shuffled batches of max(N // min_n_steps, min_batch_size) examples "
        "(the reference's cap); 'tokens': length-bucketed batches under tokens_per_batch",
    )
    min_batch_size: int = Field(4, ge=1, description="paper policy: smallest batch (examples)")
    min_n_steps: int = Field(1500, ge=1, description="paper policy: N // min_n_steps caps the batch")
    tokens_per_batch: int = Field(
        8192, ge=64, description="tokens policy: padded tokens per batch (QA and LM rows counted once)"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="'auto': bf16 on a GPU that supports it, else fp32"
    )
    zero_stage: int = Field(0, ge=0, le=2, description="DeepSpeed ZeRO stage (0-2)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the trial runs",
                                                   json_schema_extra=outside(RESULT))  # placement
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's choice)",
                                json_schema_extra=outside(TEACHER, RESULT))  # placement; a trial keeps it
    fused_qa_lm: bool = Field(
        True,
        description="run the QA (cqa) and LM (gen_X) rows of a batch through one forward call; "
        "the losses are the same as two calls",
    )
    compile: bool = Field(
        False,
        description="run GPT-2's blocks through torch.compile (inductor, dynamic shapes) in training "
        "and in Word-KD's teacher: fewer, fused kernels where eager steps are bound by kernel "
        "launches (a GPU); the first step of a process waits for the compiler. Decoding stays eager",
        # when on, part of identities: compiled blocks draw other dropout masks
        json_schema_extra=added_later(),
    )
    step_graph: bool = Field(False, description="paper policy: pad batches to static (examples, width, targets) "
        "buckets and run forward, loss, backward, clipping and AdamW as one CUDA graph per bucket, bypassing "
        "DeepSpeed's step (eager on a CPU)", json_schema_extra=added_later())  # when on, in identities (other masks)
    log_every: int = Field(50, ge=1, description="steps between progress events",
                           json_schema_extra=outside())  # display only


class EvalConfig(Strict):
    decoding: Literal["greedy", "top_k"] = Field(
        "greedy",
        description="answer decoding at test time: greedy as the paper states (the reference "
        "code sampled top-k 20 without a seed)",
    )
    top_k: int = Field(20, ge=1, description="top-k for sampled decoding and pseudo samples")
    temperature: float = Field(1.0, gt=0, description="sampling temperature")
    tokens_per_batch: int | None = Field(
        None, ge=64, description="KV-cache positions a decode batch plans for: rows x (longest "
        "prompt + new tokens its rows are expected to need); default: what 8 GiB of cache holds on a "
        "GPU, 2 GiB on a CPU (at most 262,144). Speed and memory only: results do not depend on it "
        "(top-k draws are keyed by row)",
        # speed only since identities were stored with 16384 as its default (see stored_as)
        json_schema_extra={**outside(RESULT), **stored_as(16384)})
    max_batch_size: int = Field(2048, ge=1, description="most sequences per decode batch (speed only)",
                                json_schema_extra={**outside(RESULT), **stored_as(256)})
    # which extra evaluations run does not change what a trial measures (teachers switch both off)
    every_epoch: bool = Field(
        False, description="also evaluate every task after every epoch (learning curves)",
        json_schema_extra=outside(RESULT),
    )
    before_training: bool = Field(
        True, description="evaluate the untrained model first: the b_j of forward transfer (FWT)",
        json_schema_extra=outside(RESULT),
    )


class MethodSpec(Strict):
    """The method name plus its own parameters (validated by the method's params model)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class TrialConfig(Strict):
    name: str | None = Field(None, description="a label for the trial (defaults to the file name)",
                             json_schema_extra=outside())  # a label only
    # the order, method and seed are what a report's rows and columns are keyed by, not what its
    # results must share to be compared
    tasks: list[str] = Field(..., min_length=1, description="the task order",
                             json_schema_extra=outside(RESULT))
    method: MethodSpec = Field(..., description="a method name, or {name: ..., <its params>}",
                               json_schema_extra=outside(RESULT))
    seed: int = Field(42, description="seeds model init, shuffling, dropout and sampling",
                      json_schema_extra=outside(RESULT))
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("method", mode="before")
    @classmethod
    def _method_shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"name": v}
        if isinstance(v, dict) and "name" in v and "params" not in v:
            rest = {k: val for k, val in v.items() if k != "name"}
            return {"name": v["name"], "params": rest}
        return v

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, v: list[str]) -> list[str]:
        from .tasks import TASKS  # tasks imports nothing from here; deferred to keep layers clean

        for t in v:
            try:
                TASKS.get(t)
            except ConfigError as e:  # reported by pydantic with the key's location
                raise ValueError(str(e)) from None
        if len(set(v)) != len(v):
            raise ValueError(f"a task appears twice in the order: {v}")
        return v

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------- loading

def _format_error(err: dict, source: str) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{source}: {loc}: {msg}" if loc else f"{source}: {msg}"


def _add_key_hint(model: type[BaseModel], loc: tuple, msg: str) -> str:
    """For an unknown key, name the closest known keys of the model at that location."""
    cls: Any = model
    for part in loc[:-1]:
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return msg
        cls = field.annotation
    known = list(getattr(cls, "model_fields", {}))
    return f"{msg}; {did_you_mean(str(loc[-1]), known)}" if known else msg


def validate(model: type[BaseModel], data: Any, source: str):
    """Build `model` from `data`, turning the first validation error into one ConfigError line."""
    try:
        return model.model_validate(data)
    except ConfigError as e:  # raised from inside a validator (unknown task or method)
        raise ConfigError(str(e), where=source) from None
    except ValidationError as e:
        err = e.errors()[0]
        line = _format_error(err, source)
        if err["type"] == "extra_forbidden":
            line = _add_key_hint(model, err["loc"], line)
        ctx_err = err.get("ctx", {}).get("error")
        if isinstance(ctx_err, ConfigError):
            line = f"{source}: {'.'.join(map(str, err['loc']))}: {ctx_err}"
        raise ConfigError(line) from None


class _Loader(yaml.SafeLoader):
    """YAML as users write it: `1e-4` is a number (PyYAML's YAML 1.1 rules read it as a string,
    which a strict config would then refuse)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    __import__("re").compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        data = parse_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str], source: str = "--set") -> dict:
    """Apply `key.sub=value` overrides (values parsed as YAML) onto a copy of `data`."""
    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: expected key=value, got {item!r}")
        key, raw = item.split("=", 1)
        if not all(part.strip() for part in key.split(".")):
            raise ConfigError(f"{source}: {item!r} names no key (expected key.sub=value)")
        try:
            value = parse_yaml(raw)
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: {key}: {p} is not a mapping")
        node[parts[-1]] = value
    return out
