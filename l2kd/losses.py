"""Loss functions: pure, on tensors, tested on hand-computed cases.

Every term is a weighted mean over the positions it covers and is exactly 0 when it covers none
(the reference produced NaN there and relied on fp16 loss scaling to skip the step). None of them
reads a value back to the host, so the training loop never waits on the device.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .data.encoding import IGNORE


# The (positions x vocabulary) work of the two token losses is done in row chunks of about this many
# elements, and each loss's gradient with respect to the logits is formed in its forward pass: it is
# a per-row direction (softmax - target) that backward only scales by the upstream gradient of each
# row. Autograd then keeps one (positions x vocabulary) tensor per loss, in the logits' dtype (bf16 on
# a GPU), where F.cross_entropy kept its fp32 log-softmax and the KL three fp32 tensors; the forward's
# temporaries are one chunk's; nothing is computed twice.
CHUNK_ELEMENTS = 1 << 26  # 256 MiB of fp32 per temporary; few enough chunks to keep launches few


def _row_chunks(n_rows: int, width: int) -> list[slice]:
    step = max(1, CHUNK_ELEMENTS // max(width, 1))
    return [slice(a, min(a + step, n_rows)) for a in range(0, n_rows, step)]


class _ScaledRows(torch.autograd.Function):
    """values (N,) whose gradient with respect to the logits is scale * direction * the upstream
    gradient of each row: the direction is computed with the values, in forward."""

    @staticmethod
    def forward(ctx, logits, values, direction, scale):
        ctx.save_for_backward(direction)
        ctx.scale = scale
        return values

    @staticmethod
    def backward(ctx, grad_out):
        (direction,) = ctx.saved_tensors
        return direction * (grad_out[:, None] * ctx.scale).to(direction.dtype), None, None, None


def _nll_and_direction(logits, targets, w_row):
    values = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    direction = torch.empty_like(logits)
    with torch.no_grad():
        for rows in _row_chunks(*logits.shape):
            z = logits[rows].float()
            lse = torch.logsumexp(z, -1, keepdim=True)
            values[rows] = (lse.squeeze(1) - z.gather(1, targets[rows, None]).squeeze(1)) * w_row[rows]
            # softmax - onehot(y), times the row's weight; written in place where the dtypes agree
            in_place = direction.dtype == torch.float32
            p = direction[rows] if in_place else torch.empty_like(z)
            torch.sub(z, lse, out=p).exp_()
            p.scatter_add_(1, targets[rows, None], p.new_full((p.shape[0], 1), -1.0))
            p.mul_(w_row[rows, None])
            if not in_place:
                direction[rows] = p
    return values, direction


def weighted_nll(logits: torch.Tensor, targets: torch.Tensor,
                 weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position: w_y * -log p(y) (0 where the target is IGNORE), and w_y (0 there too).

    One pass over all of a batch's target positions. Losses over parts of them (QA and LM, current
    and pseudo rows) are masked means of these vectors, so no slice of the (positions x vocabulary)
    logits reaches autograd: each such slice would cost a zero-filled gradient of the full size.
    Equal to F.cross_entropy(logits.float(), weight=weight, reduction="none") in value and gradient
    (tested), computed in row chunks.
    """
    valid = targets != IGNORE
    safe = targets.clamp(min=0)
    w = weight[safe] * valid if weight is not None else valid.float()
    values, direction = _nll_and_direction(logits, safe, w)
    return _ScaledRows.apply(logits, values, direction, 1.0), w


def masked_mean(values: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """sum(values) / sum(weights) over the positions in `mask`: 0 (not NaN) when it covers none."""
    if mask is not None:
        values, weights = values * mask, weights * mask
    return values.sum() / weights.sum().clamp(min=1e-12)


def token_ce(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None,
             select: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy averaged over target tokens: sum(w_y * nll) / sum(w_y), as the reference's
    CrossEntropyLoss(weight, ignore_index=-1) over a batch. `select` (bool per position) keeps some.

    logits: (N, V) at the target positions; targets: (N,); IGNORE entries carry no loss.
    """
    return masked_mean(*weighted_nll(logits, targets, weight), select)


def _kl_and_direction(s, t, T, col):
    """T² KL(softmax(t/T) || softmax(s/T)) per row and its gradient direction softmax(s/T) - q (times
    T in backward), q the teacher's probabilities on student columns."""
    values = torch.empty(s.shape[0], dtype=torch.float32, device=s.device)
    direction = torch.empty_like(s)
    with torch.no_grad():
        for rows in _row_chunks(*s.shape):
            log_ps = F.log_softmax(s[rows].float() / T, dim=-1)
            log_pt = F.log_softmax(t[rows].float() / T, dim=-1)
            pt = log_pt.exp()
            mapped = log_ps.index_select(-1, col) if col is not None else log_ps
            values[rows] = (pt * (log_pt - mapped)).sum(-1) * (T * T)
            ps = log_ps.exp_()
            if col is not None:
                ps.index_add_(1, col, pt, alpha=-1.0)
            else:
                ps.sub_(pt)
            direction[rows] = ps  # T is applied in backward
    return values, direction


def kl_each(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            teacher_to_student: torch.Tensor | None = None) -> torch.Tensor:
    """KL(p_teacher || p_student) at temperature T at every position, times T² (Word-KD's summand).

    The teacher's vocabulary may be smaller than the student's: `teacher_to_student[k]` is the
    student column of teacher column k. Student columns no teacher column maps to (other tasks'
    tokens) get target probability 0; the reference instead repeated the teacher's last column, so
    its target summed to more than 1. The teacher gets no gradient; computed in row chunks, equal to
    the unchunked formula in value and gradient (tested).

    student_logits: (N, Vs); teacher_logits: (N, Vt) -> (N,)
    """
    values, direction = _kl_and_direction(student_logits, teacher_logits, float(temperature), teacher_to_student)
    return _ScaledRows.apply(student_logits, values, direction, float(temperature))


def token_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, select: torch.Tensor,
             temperature: float, teacher_to_student: torch.Tensor | None = None) -> torch.Tensor:
    """Word-KD: the per-token mean of KL(p_teacher || p_student) at temperature T, times T², over
    the selected positions: the reference's KLDivLoss(batchmean) over its flattened selected tokens."""
    kl = kl_each(student_logits, teacher_logits, temperature, teacher_to_student)
    return masked_mean(kl, torch.ones_like(kl), select)


def _kd_row_weights(targets: torch.Tensor, weight: torch.Tensor | None, kd: torch.Tensor, T: float):
    """What kd_and_nll_each and kd_and_nll_masked weigh each position by, from `kd` (1 at a KD
    position): (targets clamped for gathers, w_y of the cross-entropy (0 at KD and IGNORE positions),
    each row's softmax temperature, and the scale of its gradient direction)."""
    safe = targets.clamp(min=0)
    w_ce = (weight[safe] if weight is not None else torch.ones_like(kd)) * (targets != IGNORE) * (1 - kd)
    row_t = 1 + (T - 1) * kd  # each row's temperature
    row_scale = w_ce + T * kd  # d(term)/d(logits) = row_scale * p - (w_y at y | T q at KD rows)
    return safe, w_ce, row_t, row_scale


def kd_and_nll_each(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None,
                    teacher_logits: torch.Tensor, temperature: float,
                    teacher_to_student: torch.Tensor | None = None,
                    kd_index: torch.Tensor | None = None,
                    kd_index_host: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Word-KD's two token losses in one pass over the logits: per position, T² KL(teacher ||
    student) at the KD positions and w_y · -log p(y) at the others; and the weight each position
    carries in its term's mean (1 at a KD position, w_y elsewhere, 0 where the target is IGNORE).

    The KD positions are `kd_index` (ascending indices into the positions; all of them when None),
    `teacher_logits` one row for each, in that order: the teacher need not run on rows that have
    no KD term (pseudo rows). `kd_index_host`, the same indices on the host, places each chunk's
    teacher rows without reading anything back from the device. Equal in value and gradient to
    kl_each at the KD positions and weighted_nll at the others (tested): each row's softmax is formed
    once, at its own temperature (T at KD positions, 1 elsewhere), and one gradient direction is
    kept for both terms, where the two separate losses formed and kept one each over every position.
    """
    T = float(temperature)
    n, device = logits.shape[0], logits.device
    if kd_index is None:  # every position is a KD position: the KL alone, as kl_each
        return kl_each(logits, teacher_logits, T, teacher_to_student), torch.ones(n, device=device)
    kd = torch.zeros(n, dtype=torch.float32, device=device).index_fill_(0, kd_index, 1.0)
    safe, w_ce, row_t, row_scale = _kd_row_weights(targets, weight, kd, T)
    values = torch.empty(n, dtype=torch.float32, device=device)
    direction = torch.empty_like(logits)
    with torch.no_grad():
        for rows in _row_chunks(*logits.shape):
            # log p at each row's temperature (log_softmax: one fused kernel, where logsumexp is several)
            z = F.log_softmax(logits[rows].float() / row_t[rows, None], dim=-1)
            c0, c1 = (int(i) for i in np.searchsorted(kd_index_host, [rows.start, rows.stop]))
            local = kd_index[c0:c1] - rows.start
            v = -z.gather(1, safe[rows, None]).squeeze(1) * w_ce[rows]
            pt = None
            if c1 > c0:
                log_pt = F.log_softmax(teacher_logits[c0:c1].float() / T, dim=-1)
                pt = log_pt.exp()
                log_ps = z.index_select(0, local)
                if teacher_to_student is not None:
                    log_ps = log_ps.index_select(1, teacher_to_student)
                v.index_add_(0, local, (pt * (log_pt - log_ps)).sum(-1) * (T * T))
            p = z.exp_().mul_(row_scale[rows, None])
            p.scatter_add_(1, safe[rows, None], -w_ce[rows, None])
            if pt is not None:
                q = pt.mul_(T)
                if teacher_to_student is None:
                    p.index_add_(0, local, q, alpha=-1.0)
                else:
                    p.index_put_((local[:, None], teacher_to_student[None, :]), -q, accumulate=True)
            values[rows] = v
            direction[rows] = p
    return _ScaledRows.apply(logits, values, direction, 1.0), w_ce + kd


def kd_and_nll_masked(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None,
                      teacher_logits: torch.Tensor, temperature: float, teacher_to_student: torch.Tensor | None,
                      kd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """kd_and_nll_each with the KD positions as a mask: `kd` (N,) is 1 at a KD position, 0 elsewhere,
    and `teacher_logits` has a row for every position (rows where kd is 0 are read and multiplied by
    0). Every shape is fixed by the inputs' and no index is read on the host, so it runs inside a
    CUDA graph (step_graph.py); the same values and gradient as kd_and_nll_each (tested). Positions
    whose target is IGNORE carry no term and no weight, KD or not (a bucket's padding)."""
    T = float(temperature)
    kd = kd.float() * (targets != IGNORE)
    safe, w_ce, row_t, row_scale = _kd_row_weights(targets, weight, kd, T)
    values = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    direction = torch.empty_like(logits)
    with torch.no_grad():
        for rows in _row_chunks(*logits.shape):
            z = F.log_softmax(logits[rows].float() / row_t[rows, None], dim=-1)
            log_pt = F.log_softmax(teacher_logits[rows].float() / T, dim=-1)
            pt = log_pt.exp()
            log_ps = z.index_select(1, teacher_to_student) if teacher_to_student is not None else z
            kl = (pt * (log_pt - log_ps)).sum(-1) * (T * T)
            values[rows] = kd[rows] * kl - z.gather(1, safe[rows, None]).squeeze(1) * w_ce[rows]
            p = z.exp_().mul_(row_scale[rows, None])
            p.scatter_add_(1, safe[rows, None], -w_ce[rows, None])
            q = pt.mul_((T * kd[rows])[:, None])
            if teacher_to_student is None:
                p.sub_(q)
            else:
                p.index_add_(1, teacher_to_student, q, alpha=-1.0)
            direction[rows] = p
    return _ScaledRows.apply(logits, values, direction, 1.0), w_ce + kd


def grouped_means(values: torch.Tensor, weights: torch.Tensor, groups: torch.Tensor,
                  n_groups: int) -> torch.Tensor:
    """(n_groups,): sum(values) / sum(weights) over the positions of each group (0..n_groups-1),
    0 for a group with none: masked_mean for every group at once, in one product with the groups'
    membership (a handful of kernels, where a masked_mean per group is six each; deterministic,
    unlike an atomic index_add on a GPU)."""
    member = (groups[:, None] == torch.arange(n_groups, device=groups.device)).to(values.dtype)
    sums = torch.stack([values, weights.to(values.dtype)]) @ member
    return sums[0] / sums[1].clamp(min=1e-12)


def ans_weighted(vocab_size: int, ans_id: int, ans_weight: float, device: torch.device) -> torch.Tensor:
    """The reference's TOKENS_WEIGHT: 1 everywhere, `ans_weight` (5) on the __ans__ target."""
    w = torch.ones(vocab_size, device=device)
    w[ans_id] = ans_weight
    return w



# --------------------------------------------------------------------------- EWC / MAS
def quadratic_penalty(params: dict[str, torch.Tensor], anchors: dict[str, torch.Tensor],
                      importance: dict[str, torch.Tensor]) -> torch.Tensor:
    """sum_k Ω_k (θ_k − θ*_k)² over the named parameters that have an importance.

    Its gradient is 2 Ω (θ − θ*): the reference applied exactly that inside its optimiser step,
    decoupled (p −= lr·2λΩ(p − θ*)); as a loss term it passes through Adam's scaling and clipping.
    Rows a parameter gained after Ω was measured (embeddings grown for new task tokens) carry no
    importance: Ω and θ* cover the leading rows only.
    """
    total: torch.Tensor | None = None
    for name, omega in importance.items():
        p = params[name]
        rows = omega.shape[0]
        term = (omega * (p[:rows] - anchors[name]).pow(2)).sum()
        total = term if total is None else total + term
    if total is None:
        device = next(iter(params.values())).device if params else None
        return torch.zeros((), device=device)
    return total


# --------------------------------------------------------------------------- GEM
def gem_dual(K: torch.Tensor, c: torch.Tensor, margin: float = 0.0, tol: float = 1e-9) -> torch.Tensor:
    """The GEM dual exactly: argmin_v ½ vᵀKv + cᵀv subject to v ≥ margin.

    K = M Mᵀ (t × t) and c = M g for t memory gradients M and the current gradient g; the projected
    gradient is g + Mᵀv and has M(g + Mᵀv) = c + Kv ≥ 0 (the KKT conditions). t is the number of
    past tasks, so we enumerate active sets (2^t small solves) and return the one satisfying the KKT
    conditions: exact, with no ridge term. The reference solved the same dual with quadprog after
    adding 1e-3·I to K, which leaves dot products slightly negative (−1e-3·v).
    """
    K, c = K.double(), c.double()
    t = K.shape[0]
    if t > 16:
        raise ValueError(f"gem_dual enumerates 2^t active sets; t = {t} past tasks is too many")
    base = torch.full((t,), float(margin), dtype=torch.float64)
    c = c + K @ base  # v = margin + u, u ≥ 0
    scale = max(float(K.diagonal().abs().max()), float(c.abs().max()), 1e-30)
    best: torch.Tensor | None = None
    best_obj = float("inf")
    for mask in range(1 << t):  # the free (u > 0) set; u = 0 elsewhere
        free = [k for k in range(t) if mask >> k & 1]
        u = torch.zeros(t, dtype=torch.float64)
        if free:
            idx = torch.tensor(free)
            sol = torch.linalg.lstsq(K[idx][:, idx], -c[idx].unsqueeze(1)).solution.squeeze(1)
            if (sol < -tol * max(1.0, float(sol.abs().max()))).any():
                continue
            u[idx] = sol.clamp(min=0)
        dual_grad = c + K @ u  # = M x at this point: must be ≥ 0 everywhere
        if (dual_grad < -tol * scale).any():
            continue
        obj = float(0.5 * u @ K @ u + c @ u)
        if obj < best_obj - tol * scale:
            best, best_obj = u, obj
    if best is None:  # only reachable through rounding; the unconstrained point is then safe
        best = torch.zeros(t, dtype=torch.float64)
    return base + best


def gem_project(g: torch.Tensor, memories: torch.Tensor, margin: float = 0.0) -> tuple[torch.Tensor, bool]:
    """GEM (Lopez-Paz & Ranzato 2017): the gradient closest to `g` whose dot product with every
    memory gradient (rows of `memories`) is ≥ 0. Returns (gradient, whether it was projected);
    `g` comes back unchanged when no dot product is negative."""
    dots = memories @ g
    if bool((dots >= 0).all()):
        return g, False
    M = memories.double()
    v = gem_dual(M @ M.T, M @ g.double(), margin)
    return (g.double() + M.T @ v).to(g.dtype), True
