"""A Word-KD teacher's final hidden states at the target positions of a stage's rows, made once.

The teacher is frozen and in eval mode (no dropout), and a stage shows it the same current-task rows
every epoch, so its blocks' output at a row's target positions never changes: they are computed
once at the start of the stage, in batches under the token budget, and every step after runs only
the teacher's LM head over the cached rows (the blocks are most of a teacher forward: for GPT-2
small about 170 MFLOP per position against the head's 77 per target). The values are those of the
per-step forward up to the rounding of other batch shapes (tested); in the autocast dtype they are
exactly what the head's product reads (autocast casts its fp32 input to that dtype).

Memory: one (targets x n_embd) tensor in the autocast dtype (fp32 without one), on the device:
targets = the stage's current-task rows x (answer + EOS + every LM position). It is made only when
it fits the method's `teacher_cache_mib`; otherwise the teacher runs every step, as before.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ..data.batching import Batch, collate, token_batches
from ..data.encoding import IGNORE, TrainRow
from ..decode import amp
from ..backbone import hidden_size

log = logging.getLogger(__name__)


def target_counts(rows: list[TrainRow], with_lm: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per row: its QA targets (answer + EOS) and LM targets (every real position)."""
    qa = np.array([sum(y != IGNORE for y in r.Y) for r in rows], dtype=np.int64)
    lm = np.array([sum(y != IGNORE for y in r.gen_Y) for r in rows] if with_lm else [0] * len(rows),
                  dtype=np.int64)
    return qa, lm


def cache_bytes(rows: list[TrainRow], with_lm: bool, n_embd: int, dtype: torch.dtype) -> int:
    qa, lm = target_counts(rows, with_lm)
    return int(qa.sum() + lm.sum()) * n_embd * torch.empty((), dtype=dtype).element_size()


class TeacherCache:
    """The teacher's hidden states at every target position of `rows` (current-task rows, keyed by
    TrainRow.index), and the head over them for a batch's current-task positions."""

    def __init__(self, teacher, input_map: torch.Tensor, rows: list[TrainRow], *, pad: int, with_lm: bool,
                 device: torch.device, amp_dtype: torch.dtype | None, tokens_per_batch: int):
        self.teacher, self.device, self.amp_dtype = teacher, device, amp_dtype
        keys = np.array([r.index for r in rows], dtype=np.int64)
        qa, lm = target_counts(rows, with_lm)
        n_embd = hidden_size(teacher.gpt2)
        self.hidden = torch.empty(int(qa.sum() + lm.sum()), n_embd, dtype=amp_dtype or torch.float32,
                                  device=device)
        qa_start = np.zeros(len(rows), dtype=np.int64)
        lm_start = np.zeros(len(rows), dtype=np.int64)
        offset = 0
        plan = token_batches([len(r) for r in rows], tokens_per_batch, np.random.default_rng(0))
        with torch.no_grad(), amp(device, amp_dtype):
            for idx in plan:
                batch = collate([rows[i] for i in idx], pad, with_lm=with_lm).to(device)
                h = teacher.hidden_at(input_map[batch.inputs], batch.positions)
                self.hidden[offset:offset + len(h)] = h
                # collate's order: every row's QA targets, then every row's LM targets
                q, l_ = qa[idx], lm[idx]
                qa_start[idx] = offset + np.cumsum(q) - q
                lm_start[idx] = offset + q.sum() + np.cumsum(l_) - l_
                offset += len(h)
        assert offset == len(self.hidden), "the targets counted and the targets collated differ"
        table = np.full((2, int(keys.max()) + 1), -1, dtype=np.int64)
        table[0, keys], table[1, keys] = qa_start, lm_start
        self.start = torch.from_numpy(table).to(device)  # [part, key] -> the row's first target

    @classmethod
    def build(cls, teacher, input_map, rows: list[TrainRow], *, budget_mib: int, **kw) -> "TeacherCache | None":
        """The cache, or None where it would not fit `budget_mib` or the rows have no unique keys."""
        if budget_mib <= 0 or not rows:
            return None
        keys = [r.index for r in rows]
        if min(keys) < 0 or len(set(keys)) != len(keys):
            log.info("teacher cache: the rows have no unique indices; the teacher runs every step")
            return None
        size = cache_bytes(rows, kw["with_lm"], hidden_size(teacher.gpt2), kw["amp_dtype"] or torch.float32)
        if size > budget_mib * 2**20:
            log.info("teacher cache: %.0f MiB is over teacher_cache_mib (%d); the teacher runs every step",
                     size / 2**20, budget_mib)
            return None
        cache = cls(teacher, input_map, rows, **kw)
        log.info("teacher cache: %d target positions of %d rows, %.0f MiB", len(cache.hidden), len(rows),
                 size / 2**20)
        return cache

    def logits(self, batch: Batch) -> torch.Tensor:
        """The teacher's logits at the batch's current-task positions, in their order (kd_index's, or
        all positions where the batch has no pseudo rows): a gather and the head, on the device."""
        n = len(batch.positions)
        is_lm = (torch.arange(n, device=batch.positions.device) >= batch.n_qa).long()
        group = is_lm * batch.n_examples + batch.row  # (part, example): ascending in collate's order
        ordinal = torch.arange(n, device=group.device) - torch.searchsorted(group, group)
        where = self.start[is_lm, batch.index[batch.row]] + ordinal
        if batch.kd_index is not None:
            where = where.index_select(0, batch.kd_index)
        with torch.no_grad(), amp(self.device, self.amp_dtype):
            return self.teacher.head(self.hidden.index_select(0, where))
