"""Static shapes for a step of fixed shapes (training.step_graph): a batch padded up to its bucket.

A CUDA graph replays fixed shapes, and a paper-policy batch's shapes vary in three ways: its width
(its longest row), its QA target positions (answers + EOS) and its LM target positions (every real
token of its LM rows). The bucket of a batch rounds each up: width to WIDTH_STEP (at most the
model's positions), each part's target positions to TARGET_STEP. The number of examples is kept as
it is: a paper-policy stage has two (the batch size and the last batch's remainder).

Padding changes no loss: the inputs are right-padded with pad tokens further (GPT-2 is causal and no
attention mask is passed, so the real positions' logits are unchanged; as collate pads), and the
padded target positions read position 0 with target IGNORE, which every loss weighs 0 in its
numerator and its denominator (losses.py). The QA part stays first, padded to its bucket, so
`n_qa` is the bucket's and fixed with it. Done on the host, in the loader thread.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .batching import Batch
from .encoding import IGNORE

WIDTH_STEP = 16  # tokens
TARGET_STEP = 32  # target positions of each part (QA, LM)

BucketKey = tuple[int, int, int, int]  # (examples, width, QA target positions, LM target positions)


def _round_up(n: int, step: int) -> int:
    return max(step, -(-n // step) * step)


def bucket_of(batch: Batch, max_width: int) -> BucketKey:
    """The bucket `batch` is padded to; `max_width`: the model's positions (a width never exceeds)."""
    width = batch.inputs.shape[1]
    n_lm = len(batch.positions) - batch.n_qa
    return (batch.n_examples, min(_round_up(width, WIDTH_STEP), max(max_width, width)),
            _round_up(batch.n_qa, TARGET_STEP), _round_up(n_lm, TARGET_STEP) if batch.with_lm else 0)


def _padded_part(t: torch.Tensor, size: int, fill: int) -> torch.Tensor:
    return torch.cat([t, t.new_full((size - len(t),), fill)])


def pad_to_bucket(batch: Batch, key: BucketKey, pad: int) -> Batch:
    """`batch` (host tensors) padded to bucket `key`: the same losses and gradients (tested). The
    Word-KD current-task indices (kd_*) are left out: a step of fixed shapes masks instead."""
    examples, width, n_qa, n_lm = key
    rows, w = batch.inputs.shape
    assert examples == batch.n_examples and width >= w, (key, tuple(batch.inputs.shape))
    inputs = batch.inputs.new_full((rows, width), pad)
    inputs[:, :w] = batch.inputs
    flat = batch.positions // w * width + batch.positions % w  # the same (row, column) in the wider rows
    q = slice(0, batch.n_qa)
    lm = slice(batch.n_qa, len(batch.positions))

    def both(t: torch.Tensor, fill: int) -> torch.Tensor:
        return torch.cat([_padded_part(t[q], n_qa, fill), _padded_part(t[lm], n_lm, fill)])

    return replace(batch, inputs=inputs, positions=both(flat, 0), targets=both(batch.targets, IGNORE),
                   row=both(batch.row, 0), n_qa=n_qa, kd_index=None, kd_rows=None, kd_flat=None,
                   kd_index_host=None)
