"""Loss functions: pure, on tensors, tested on hand-computed cases.

Every term is a weighted mean over the positions it covers and is exactly 0 when it covers none
(the reference produced NaN there and relied on fp16 loss scaling to skip the step). None of them
reads a value back to the host, so the training loop never waits on the device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .data.encoding import IGNORE


def token_ce(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None,
             select: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy averaged over target tokens: sum(w_y * nll) / sum(w_y), as the reference's
    CrossEntropyLoss(weight, ignore_index=-1) over a batch. `select` (bool per position) keeps some.

    logits: (N, V) at the target positions; targets: (N,); IGNORE entries carry no loss.
    """
    if select is not None:
        targets = targets.masked_fill(~select, IGNORE)
    nll_sum = F.cross_entropy(logits.float(), targets, weight=weight, ignore_index=IGNORE,
                              reduction="sum")
    valid = targets != IGNORE
    w = weight[targets.clamp(min=0)] if weight is not None else torch.ones_like(targets, dtype=torch.float)
    return nll_sum / (w * valid).sum().clamp(min=1e-12)  # 0 / tiny = 0 when nothing is covered


def token_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, select: torch.Tensor,
             temperature: float, teacher_to_student: torch.Tensor | None = None) -> torch.Tensor:
    """Word-KD: the per-token mean of KL(p_teacher || p_student) at temperature T, times T².

    This is the reference's KLDivLoss(batchmean) over its flattened selected tokens. The teacher's
    vocabulary may be smaller than the student's: `teacher_to_student[k]` is the student column of
    teacher column k. Student columns no teacher column maps to (other tasks' tokens) get target
    probability 0; the reference instead repeated the teacher's last column, so its target summed
    to more than 1.

    student_logits: (N, Vs); teacher_logits: (N, Vt); select: (N,) bool.
    """
    T = temperature
    log_ps = F.log_softmax(student_logits.float() / T, dim=-1)
    if teacher_to_student is not None:
        log_ps = log_ps.index_select(-1, teacher_to_student)
    log_pt = F.log_softmax(teacher_logits.float() / T, dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1)
    n = select.sum()
    return (kl * select).sum() / n.clamp(min=1) * (T * T)


def ans_weighted(vocab_size: int, ans_id: int, ans_weight: float, device: torch.device) -> torch.Tensor:
    """The reference's TOKENS_WEIGHT: 1 everywhere, `ans_weight` (5) on the __ans__ target."""
    w = torch.ones(vocab_size, device=device)
    w[ans_id] = ans_weight
    return w

