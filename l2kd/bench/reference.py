"""The reference's training step, rebuilt to be measured against: what LAMOL/L2KD computed per step.

Two forward passes of the whole GPT-2 (cqa for the QA loss, gen_X for the LM loss), each producing
logits over the full vocabulary at every position, each scored by
CrossEntropyLoss(weight=TOKENS_WEIGHT, ignore_index=-1); total = qa + lm_lambda * lm; fp32; plain
AdamW with gradient clipping (`utils.py` get_losses, `train.py` of the reference). Padding as the
reference: inputs with __pad__, targets with -1, no attention mask.

It doubles as an oracle: on the same rows and weights its loss must equal the fast path's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import CrossEntropyLoss

from ..data.encoding import IGNORE, TrainRow


@dataclass
class ReferenceBatch:
    cqa: torch.Tensor  # (B, W) inputs of the QA pass
    Y: torch.Tensor  # (B, W) QA targets, -1 where no loss
    gen_X: torch.Tensor  # (B, W+1) inputs of the LM pass
    gen_Y: torch.Tensor  # (B, W+1) LM targets
    n_tokens: int  # real tokens through the model (both passes, as the fast path counts them)
    lengths: list[int]  # real length of every row the model reads, for FLOP counting
    n_targets: int  # positions a loss reads


def row_lengths(rows, with_lm: bool) -> list[int]:
    """The real length of every input row a step's forward reads (QA rows, then LM rows), for FLOPs.
    Counted from the rows: inside a row, __pad__ also separates several answers."""
    return [len(r.cqa) for r in rows] + ([len(r.gen_X) for r in rows] if with_lm else [])


def reference_batch(rows: list[TrainRow], pad: int, with_lm: bool, device: torch.device) -> ReferenceBatch:
    """As the reference's collate: everything padded to the longest cqa (+1 for the LM pass)."""
    width = max(len(r.cqa) for r in rows)
    B = len(rows)
    cqa = torch.full((B, width), pad, dtype=torch.long)
    Y = torch.full((B, width), IGNORE, dtype=torch.long)
    gen_X = torch.full((B, width + 1), pad, dtype=torch.long)
    gen_Y = torch.full((B, width + 1), IGNORE, dtype=torch.long)
    for b, r in enumerate(rows):
        cqa[b, :len(r.cqa)] = torch.tensor(r.cqa)
        Y[b, :len(r.Y)] = torch.tensor(r.Y)
        gen_X[b, :len(r.gen_X)] = torch.tensor(r.gen_X)
        gen_Y[b, :len(r.gen_Y)] = torch.tensor(r.gen_Y)
    lengths = row_lengths(rows, with_lm)
    n_targets = int((Y != IGNORE).sum()) + (int((gen_Y != IGNORE).sum()) if with_lm else 0)
    return ReferenceBatch(cqa.to(device), Y.to(device), gen_X.to(device), gen_Y.to(device),
                          sum(lengths), lengths, n_targets)


class ReferenceStep:
    """One reference-style optimisation step per call (fp32, two full-vocabulary passes)."""

    def __init__(self, model, weight: torch.Tensor, lm_lambda: float, with_lm: bool, *, lr: float,
                 eps: float, weight_decay: float, max_grad_norm: float):
        self.model = model
        self.ce = CrossEntropyLoss(weight=weight, ignore_index=IGNORE)
        self.lm_lambda, self.with_lm, self.max_grad_norm = lm_lambda, with_lm, max_grad_norm
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, eps=eps, weight_decay=weight_decay)

    def loss(self, b: ReferenceBatch) -> torch.Tensor:
        logits = self.model(b.cqa).logits
        qa = self.ce(logits.reshape(-1, logits.shape[-1]), b.Y.reshape(-1))
        if not self.with_lm:
            return qa
        logits = self.model(b.gen_X).logits
        return qa + self.lm_lambda * self.ce(logits.reshape(-1, logits.shape[-1]), b.gen_Y.reshape(-1))

    def __call__(self, b: ReferenceBatch) -> torch.Tensor:
        loss = self.loss(b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()
