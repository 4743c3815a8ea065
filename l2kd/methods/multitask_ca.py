"""multitask_ca: a stronger, task-aware upper bound — multitask with CA-MTL-style task conditioning.

Labelled as stronger than the published bound: the network knows each row's task (a task
embedding) and has extra parameters, which no lifelong method here has. The modules
(l2kd/conditioning.py) are a task embedding, FiLM-conditioned layer norms on the upper half of the
blocks and a conditional bottleneck adapter after the top block, all starting as the identity, so
training starts from exactly the plain model. `freeze_lower` freezes the lower half of the blocks
(never the token embeddings: the LM head shares them and the task tokens are new rows). Batches
carry each row's task; evaluation runs every task's prompts under that task's embedding. Samplers
as `multitask` (MT-Uncertainty scores the candidates with their own task's conditioning).
"""

from __future__ import annotations

from pydantic import Field

from ..errors import ConfigError
from ..conditioning import ConditioningSpec, freeze_lower_half, install
from .multitask import Multitask, MultitaskParams
from .registry import register


class MultitaskCAParams(MultitaskParams):
    task_dim: int = Field(64, ge=1, description="size of the task embedding z_t (each FiLM is "
                          "Linear(task_dim -> 2 x n_embd))")
    adapter_dim: int | None = Field(None, ge=1, description="bottleneck width of the conditional "
                                    "adapter (default n_embd // 3, as CA-MTL's d/3)")
    freeze_lower: bool = Field(False, description="freeze blocks 0 .. n_layer//2 - 1 (CA-MTL froze "
                               "the lower half; the token embeddings always stay trainable)")


@register("multitask_ca")
class MultitaskCA(Multitask):
    Params = MultitaskCAParams

    @classmethod
    def check_config(cls, cfg) -> None:
        # the conditioning hooks GPT-2's own modules (ln_1/ln_2 of transformer.h, ln_f); other
        # architectures name and place their norms differently, and a LoRA base is frozen
        kind = cfg.model.model_type()
        if kind not in ("gpt2", None):
            raise ValueError(f"multitask_ca conditions GPT-2's layer norms; model_type {kind!r} is "
                             "not supported (use multitask)")
        if cfg.model.lora is not None:
            raise ValueError("multitask_ca trains its task modules on a full model; model.lora is not supported")

    def task_index(self, ctx):
        return {t: i for i, t in enumerate(ctx.cfg.tasks)}

    def prepare_model(self, ctx, model):
        from ..backbone import is_gpt2

        if not is_gpt2(model):  # a pretrained model named without a local config.json
            raise ConfigError(f"method (multitask_ca): conditions GPT-2's layer norms; "
                              f"{type(model).__name__} is not supported (use multitask)")
        cfg = model.config
        spec = ConditioningSpec(tuple(ctx.cfg.tasks), self.p.task_dim,
                                self.p.adapter_dim or max(1, cfg.n_embd // 3), cfg.n_layer // 2)
        before = sum(p.numel() for p in model.parameters())
        install(model, spec)
        model.to(ctx.device)
        self._info = {"added_parameters": sum(p.numel() for p in model.parameters()) - before,
                      "frozen_parameters": freeze_lower_half(model) if self.p.freeze_lower else 0}

    def end_stage(self, ctx, tasks):
        return {**super().end_stage(ctx, tasks), "conditioning": self._info}
