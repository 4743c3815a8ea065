"""o_lora: O-LoRA (Wang et al., EMNLP 2023 Findings), a fresh LoRA adapter per task kept orthogonal to
the earlier tasks' adapters; o_lora_lamol: the same with LAMOL's QA + LM losses and pseudo-replay.

- Adapters: the first task trains `model.lora`'s adapter (`default`); task k (k ≥ 1) gets a fresh
  one (`task{k}`, the same r, alpha, dropout and modules). Every adapter stays active in the forward;
  the earlier ones are frozen, not merged into the base, so the base and every adapter stay apart and
  a checkpoint stays small (O-LoRA's code keeps them unmerged too).
- Loss: the method's own task loss (o_lora: QA cross-entropy, as O-LoRA's task loss; o_lora_lamol:
  LAMOL's) + λ₁ · Σ over adapted modules Σ_ij |(A_old A_tᵀ)_ij| + λ₂ · Σ ‖θ‖₂ over the new adapter's A
  and B. A_t is the new adapter's down-projection (r × d_in, peft's lora_A weight: its rows span
  the task's input subspace), A_old the earlier tasks' stacked; A_old A_tᵀ is 0 exactly when the
  subspaces are orthogonal. Defaults λ₁ = 0.5, λ₂ = 0 (O-LoRA's scripts).
- LAMOL's token rows (l2kd/lora.py) are shared by every task and keep training, as with any LoRA
  model here; O-LoRA had no added tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from .. import lora
from .base import MethodParams
from .finetune import Finetune
from .lamol import Lamol, LamolParams
from .registry import register


class OLoRAParams(MethodParams):
    lambda_orth: float = Field(0.5, ge=0, description="λ₁ of the orthogonality penalty "
                               "λ₁·Σ|A_old A_newᵀ| against the earlier tasks' adapters (O-LoRA: 0.5)")
    lambda_l2: float = Field(0.0, ge=0, description="λ₂ of the L2 penalty λ₂·Σ‖θ‖₂ on the new "
                             "adapter's weights (O-LoRA: 0)")


class OLoRALamolParams(OLoRAParams, LamolParams):
    pass


def orthogonality_penalty(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Σ over (A_old, A_new) pairs of Σ_ij |(A_old A_newᵀ)_ij|: A_old (r_old × d) stacks the earlier
    adapters' down-projections of one module, A_new (r × d) the new adapter's."""
    total = None
    for old, new in pairs:
        term = (old.to(new.dtype) @ new.T).abs().sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


def stage_adapter(stage: int) -> str:
    return lora.DEFAULT if stage == 0 else f"task{stage}"


class _OLoRA:
    """The adapter per task and the two penalties; mixed into a method that gives the task loss."""

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.model.lora is None:
            raise ValueError("needs model.lora ({r, alpha, dropout, target_modules}): every task's "
                             "adapter is made with those settings")
        super().check_config(cfg)

    def prepare_model(self, ctx, model):
        super().prepare_model(ctx, model)
        self._adapter = stage_adapter(ctx.stage)
        lora.add_adapter(model, self._adapter)
        lora.activate(model, [self._adapter])

    def begin_training(self, ctx, tasks):
        super().begin_training(ctx, tasks)
        new = self._adapter
        older = [n for n in lora.adapter_names(ctx.model) if n != new]
        self._pairs, self._new_params = [], []
        for layer in lora.lora_layers(ctx.model):
            a = layer.lora_A[new].weight
            self._new_params += [a, layer.lora_B[new].weight]
            old = [layer.lora_A[n].weight.detach() for n in older if n in layer.lora_A]
            if old:
                self._pairs.append((torch.cat(old), a))

    def loss_terms(self, ctx, batch, logits):
        terms = super().loss_terms(ctx, batch, logits)
        if self._pairs and self.p.lambda_orth:
            terms["orth"] = self.p.lambda_orth * orthogonality_penalty(self._pairs)
        if self.p.lambda_l2:
            terms["l2"] = self.p.lambda_l2 * sum(p.norm() for p in self._new_params)
        return terms

    def end_stage(self, ctx, tasks) -> dict[str, Any]:
        with torch.no_grad():
            orth = float(orthogonality_penalty(self._pairs)) if self._pairs else 0.0
        self._pairs, self._new_params = [], []
        return {**super().end_stage(ctx, tasks),
                "o_lora": {"adapter": self._adapter, "adapters": len(lora.adapter_names(ctx.model)),
                           "overlap": orth}}


@register("o_lora")
class OLoRA(_OLoRA, Finetune):
    """o_lora: a fresh LoRA per task, orthogonal to the earlier (frozen) ones; QA loss, no replay."""

    Params = OLoRAParams


@register("o_lora_lamol")
class OLoRALamol(_OLoRA, Lamol):
    """o_lora_lamol: O-LoRA's adapter per task and penalties with LAMOL's losses and pseudo-replay."""

    Params = OLoRALamolParams
