"""ewc and mas: finetune (QA loss only, no replay) plus a quadratic pull towards earlier weights.

    loss = qa + λ · Σ_k Ω_k (θ_k − θ*_k)²

- Ω, the importance of each weight, is measured at the end of every task over one pass of that
  task's training data (in the paper batch size, dropout off), divided by the number of examples,
  and summed over tasks (as the reference's regularizers.py):
    ewc: Ω += (∇ QA loss of a batch)²                        (the diagonal empirical Fisher)
    mas: Ω += |∇ MSE(softmax(logits at the last cq position), 0)| (the output's squared norm)
- θ* (`anchor`): `previous` (default) = the weights after the previous task, as in EWC and MAS;
  `pretrained` = the weights before the first task, which the reference kept for every task (it
  stored them once and never refreshed them).
- As a loss term the penalty's gradient 2λΩ(θ − θ*) goes through AdamW and clipping; the reference
  applied that same gradient decoupled, inside its optimiser step (p −= lr · 2λΩ(p − θ*)).
- Embedding rows grown for later task tokens carry no importance: Ω and θ* cover the rows that
  existed when they were taken (the reference lost the resized embeddings from its penalty
  altogether, and crashed with task tokens).
- Ω and θ* cover the trainable parameters only: with `model.lora`, the adapters and the embeddings
  (whose frozen base rows get no gradient, so no importance), not the frozen base.
Ω and θ* are the method's state, so a resumed trial continues with exactly the same penalty.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from ..data.batching import collate, paper_batch_size
from ..decode import amp
from ..losses import quadratic_penalty, token_ce
from ..model import TargetLogits
from .base import Method, MethodParams
from .registry import register


class RegParams(MethodParams):
    reg_lambda: float = Field(1.0, ge=0, description="λ of the penalty λ·ΣΩ(θ−θ*)² (the reference's "
                              "--reg_lambda)")
    anchor: Literal["previous", "pretrained"] = Field(
        "previous", description="θ*: the weights after the previous task, or the weights before the "
        "first task ('pretrained', what the reference did)")


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    """`t` cut or zero-padded to `rows` leading rows (embeddings grow between tasks)."""
    if t.shape[0] >= rows:
        return t[:rows]
    return torch.cat([t, t.new_zeros((rows - t.shape[0], *t.shape[1:]))])


def _trainable_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """θ*: the trainable weights only (a LoRA model's adapters and embeddings, not its frozen base,
    which cannot move and carries no importance)."""
    return {n: p.detach().float().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


class _Regularized(Method):
    Params = RegParams

    def __init__(self, params):
        super().__init__(params)
        self.omega: dict[str, torch.Tensor] = {}  # on the CPU; the state
        self.anchor: dict[str, torch.Tensor] = {}
        self._dev: tuple[dict, dict] = ({}, {})

    # ------------------------------------------------------------------ importance
    def batch_importance_loss(self, batch, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def accumulate(self, grad: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def importance(self, ctx, task: str) -> dict[str, torch.Tensor]:
        """One pass over `task`'s training rows: Σ over batches of g² (ewc) or |g| (mas), / N."""
        model = ctx.model
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        rows = ctx.train_rows(task)
        t = ctx.cfg.training
        size = paper_batch_size(len(rows), t.min_n_steps, t.min_batch_size)
        total = [torch.zeros_like(p, dtype=torch.float32) for _, p in named]
        head = TargetLogits(model)
        was_training = model.training
        model.eval()
        try:
            for start in range(0, len(rows), size):
                batch = collate(rows[start:start + size], ctx.tokenizer.ids.pad, with_lm=False).to(ctx.device)
                with amp(ctx.device, ctx.amp_dtype):
                    logits = head(batch.inputs, batch.positions)
                loss = self.batch_importance_loss(batch, logits)
                # autograd.grad leaves the parameters' .grad (and DeepSpeed's buffers) alone
                grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
                for acc, g in zip(total, grads):
                    if g is not None:
                        acc += self.accumulate(g.float())
        finally:
            model.train(was_training)
        return {n: (acc / len(rows)).cpu() for (n, _), acc in zip(named, total)}

    # ------------------------------------------------------------------ hooks
    def begin_training(self, ctx, tasks):
        if self.p.anchor == "pretrained" and not self.anchor:  # before the first task trains
            self.anchor = _trainable_copy(ctx.model)
        self._params = dict(ctx.model.named_parameters())
        self._dev = ({n: o.to(ctx.device) for n, o in self.omega.items()},
                     {n: a.to(ctx.device) for n, a in self.anchor.items() if n in self.omega})

    def loss_terms(self, ctx, batch, logits):
        terms = super().loss_terms(ctx, batch, logits)
        if self.omega:
            omega, anchor = self._dev
            terms["reg"] = self.p.reg_lambda * quadratic_penalty(self._params, anchor, omega)
        return terms

    def end_stage(self, ctx, tasks):
        (task,) = tasks
        if self.p.anchor == "previous":
            self.anchor = _trainable_copy(ctx.model)
        new = self.importance(ctx, task)
        for name, imp in new.items():
            rows = self.anchor[name].shape[0]  # rows without an anchor carry no importance
            old = self.omega.get(name)
            self.omega[name] = _pad_rows(imp, rows) + (_pad_rows(old, rows) if old is not None else 0)
        self._dev = ({}, {})
        return {"importance_mean": {task: float(sum(v.sum() for v in new.values())
                                               / sum(v.numel() for v in new.values()))}}

    def state_dict(self) -> dict[str, Any]:
        return {"omega": self.omega, "anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.omega = dict(state.get("omega", {}))
        self.anchor = dict(state.get("anchor", {}))


@register("ewc")
class EWC(_Regularized):
    """ewc: finetune + λ·ΣΩ(θ−θ*)², Ω = squared QA-loss gradients over each finished task."""

    def batch_importance_loss(self, batch, logits):
        return token_ce(logits, batch.targets)  # the QA loss (QA-only rows), as the reference

    def accumulate(self, grad):
        return grad.pow(2)


@register("mas")
class MAS(_Regularized):
    """mas: finetune + λ·ΣΩ(θ−θ*)², Ω = |gradient| of the answer distribution's squared norm."""

    def batch_importance_loss(self, batch, logits):
        # as the reference: MSE(softmax(logits at the last cq position), 0), a mean over B x V; the
        # last cq position (__ans__) is each row's first QA target position
        qa_rows = batch.row[: batch.n_qa]
        P = qa_rows.shape[0]
        first = torch.full((batch.n_examples,), P, dtype=torch.long, device=qa_rows.device).scatter_reduce(
            0, qa_rows, torch.arange(P, device=qa_rows.device), reduce="amin")
        probs = torch.softmax(logits[first].float(), dim=-1)
        return probs.pow(2).mean()

    def accumulate(self, grad):
        return grad.abs()
