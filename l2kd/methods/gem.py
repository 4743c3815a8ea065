"""gem: Gradient Episodic Memory (Lopez-Paz & Ranzato 2017) on top of finetune (QA loss, no replay).

- Memory: when task k starts, the task just finished (k−1) gets an episodic memory of real training
  examples: int(γ·|task k|) of them (γ = `memory_ratio`, 0.2, as the reference), or `memory_size`,
  drawn without replacement by a seeded generator. Every past task keeps its own memory; the
  reference kept only the immediately previous task's memory at each stage (and drew with
  replacement).
- Every step, after the backward pass: the QA-loss gradient g_j on each past task's memory is
  compared with the current gradient g; if any ⟨g_j, g⟩ < 0, g is replaced by the closest gradient
  with every ⟨g_j, ·⟩ ≥ 0 (the GEM QP, solved exactly in losses.gem_dual; `margin` is the reference's
  qp_margin, v ≥ margin in the dual). The engine then clips and steps with it.
- `memory_batch_size` rows of each memory (redrawn every step) give g_j; 0 takes the whole memory
  every step, as the reference (in forward passes of at most 64 rows).
- DeepSpeed: the projection rewrites the parameters' .grad between engine.backward and
  engine.step, which is what ZeRO stage 0 (the default) steps with; ZeRO 1-2 keep gradients in their
  own partitioned buffers, so gem refuses them.
Memories are stored as training-file positions in the method's state, so a resumed trial uses the
same memories.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import Field

from ..data.batching import collate
from ..decode import amp
from ..losses import gem_project, token_ce
from ..model import TargetLogits
from .base import Method, MethodParams
from .registry import register

CHUNK = 64  # most memory rows in one forward pass


class GEMParams(MethodParams):
    memory_ratio: float = Field(0.2, gt=0, description="memory per past task = int(memory_ratio x "
                                "|current task|) examples (the reference's γ)")
    memory_size: int | None = Field(None, ge=1, description="a fixed memory size per past task "
                                    "(overrides memory_ratio)")
    memory_batch_size: int = Field(0, ge=0, description="rows of each memory whose gradient is taken "
                                   "each step, redrawn every step; 0: the whole memory (the reference)")
    margin: float = Field(0.5, ge=0, description="the reference's qp_margin: v >= margin in the GEM dual")


@register("gem")
class GEM(Method):
    Params = GEMParams

    def __init__(self, params):
        super().__init__(params)
        self.memory: dict[str, list[int]] = {}  # past task -> positions in its (capped) training set
        self._rows: dict[str, list] = {}
        self.stats = {"steps": 0, "projected": 0}

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.training.zero_stage != 0:
            raise ValueError("training.zero_stage must be 0: gem edits the gradients between backward "
                             "and step, and ZeRO stages 1-2 keep them in their own partitioned buffers")

    def begin_training(self, ctx, tasks):
        (task,) = tasks
        order = list(ctx.cfg.tasks)
        k = order.index(task)
        if k > 0 and order[k - 1] not in self.memory:
            prev = order[k - 1]
            n_prev = len(ctx.train[prev])
            size = self.p.memory_size or int(self.p.memory_ratio * len(ctx.train[task]))
            rng = np.random.default_rng(ctx.seed("gem_memory", prev))
            self.memory[prev] = sorted(rng.choice(n_prev, size=min(max(size, 1), n_prev), replace=False).tolist())
        self._rows = {}
        for t, idx in self.memory.items():
            rows = ctx.train_rows(t)
            self._rows[t] = [rows[i] for i in idx]
        self._rng = np.random.default_rng(ctx.seed("gem_draws", ctx.stage))
        self._params = [p for p in ctx.model.parameters() if p.requires_grad]
        self.stats = {"steps": 0, "projected": 0}

    def _memory_grad(self, ctx, rows) -> torch.Tensor:
        """The flat QA-loss gradient on `rows` (a token mean over all of them)."""
        pad = ctx.tokenizer.ids.pad
        head = TargetLogits(ctx.model)
        batches = [collate(rows[i:i + CHUNK], pad, with_lm=False) for i in range(0, len(rows), CHUNK)]
        n_total = sum(b.n_qa for b in batches)
        flat = None
        for b in batches:
            b = b.to(ctx.device)
            with amp(ctx.device, ctx.amp_dtype):
                logits = head(b.inputs, b.positions)
            loss = token_ce(logits, b.targets) * (b.n_qa / n_total)  # QA-only rows: every position is QA
            grads = torch.autograd.grad(loss, self._params, allow_unused=True)
            g = torch.cat([(x if x is not None else torch.zeros_like(p)).reshape(-1).float()
                           for x, p in zip(grads, self._params)])
            flat = g if flat is None else flat + g
        return flat

    def after_backward(self, ctx):
        if not self._rows:
            return
        self.stats["steps"] += 1
        g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                       for p in self._params])
        mems = []
        for rows in self._rows.values():
            if self.p.memory_batch_size and self.p.memory_batch_size < len(rows):
                pick = self._rng.choice(len(rows), self.p.memory_batch_size, replace=False)
                rows = [rows[i] for i in sorted(pick)]
            mems.append(self._memory_grad(ctx, rows))
        new, projected = gem_project(g, torch.stack(mems), self.p.margin)
        if not projected:
            return
        self.stats["projected"] += 1
        offset = 0
        for p in self._params:
            n = p.numel()
            piece = new[offset:offset + n].view_as(p).to(p.dtype)
            if p.grad is None:
                p.grad = piece.clone()
            else:
                p.grad.copy_(piece)
            offset += n

    def end_stage(self, ctx, tasks) -> dict[str, Any]:
        self._rows = {}
        return {"gem": {**self.stats, "memories": {t: len(i) for t, i in self.memory.items()}}}

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory = {t: list(i) for t, i in state.get("memory", {}).items()}
