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
             rows: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy averaged over target tokens: sum(w_y * nll) / sum(w_y), as the reference's
    CrossEntropyLoss(weight, ignore_index=-1). `rows` (bool, per batch row) keeps only some rows.

    logits: (B, L, V); targets: (B, L) with IGNORE where no loss applies.
    """
    if rows is not None:
        targets = targets.masked_fill(~rows[:, None], IGNORE)
    flat_t = targets.reshape(-1)
    nll_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), flat_t, weight=weight,
                              ignore_index=IGNORE, reduction="sum")
    valid = flat_t != IGNORE
    w = weight[flat_t.clamp(min=0)] if weight is not None else torch.ones_like(flat_t, dtype=torch.float)
    denom = (w * valid).sum()
    return nll_sum / denom.clamp(min=1e-12)  # 0 / tiny = 0 when no position is covered


def token_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, valid: torch.Tensor,
             temperature: float, teacher_to_student: torch.Tensor | None = None) -> torch.Tensor:
    """Word-KD: the per-token mean of KL(p_teacher || p_student) at temperature T, times T².

    This is the reference's KLDivLoss(batchmean) over flattened selected tokens. The teacher's
    vocabulary may be smaller than the student's: `teacher_to_student[k]` is the student column of
    teacher column k. Student columns no teacher column maps to (other tasks' tokens) get
    probability 0 in the target; the reference instead repeated the teacher's last column, which
    made the target sum to more than 1.

    student_logits: (B, L, Vs); teacher_logits: (B, L, Vt); valid: (B, L) bool.
    """
    T = temperature
    log_ps = F.log_softmax(student_logits.float() / T, dim=-1)
    if teacher_to_student is not None:
        log_ps = log_ps.index_select(-1, teacher_to_student)
    log_pt = F.log_softmax(teacher_logits.float() / T, dim=-1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(-1)  # (B, L)
    n = valid.sum()
    return (kl * valid).sum() / n.clamp(min=1) * (T * T)


def ans_weighted(vocab_size: int, ans_id: int, ans_weight: float, device: torch.device) -> torch.Tensor:
    """The reference's TOKENS_WEIGHT: 1 everywhere, `ans_weight` (5) on the __ans__ target."""
    w = torch.ones(vocab_size, device=device)
    w[ans_id] = ans_weight
    return w

