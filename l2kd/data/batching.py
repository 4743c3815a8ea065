"""Training batches: which rows go together, and how they become padded tensors.

Two policies (config `training.batch_policy`):
- `paper`: shuffled batches of max(N // min_n_steps, min_batch_size) examples: the reference's cap,
  which is what its memory-based sampler amounted to on the NLG and WCS tasks (4-6 examples).
- `tokens`: batches under a padded-token budget, rows of similar length together (sorted inside
  shuffled pools), batch order shuffled. Far fewer, fuller steps; a different optimisation.

As the reference, inputs are right-padded with __pad__ and no attention mask is passed: GPT-2 is
causal, so padding after a row's tokens never changes the logits at its real positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .encoding import IGNORE, TrainRow


def paper_batch_size(n_rows: int, min_n_steps: int, min_batch_size: int) -> int:
    return max(n_rows // min_n_steps, min_batch_size)


def paper_batches(n_rows: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    perm = rng.permutation(n_rows)
    return [perm[i:i + batch_size] for i in range(0, n_rows, batch_size)]


def token_batches(lengths: list[int], tokens_per_batch: int, rng: np.random.Generator,
                  pool_batches: int = 50) -> list[np.ndarray]:
    """Length-bucketed batches whose padded size (rows x longest row) stays within the budget."""
    perm = rng.permutation(len(lengths))
    lengths_arr = np.asarray(lengths)
    typical = max(1, tokens_per_batch // max(1, int(np.median(lengths_arr))))
    pool = typical * pool_batches
    batches: list[np.ndarray] = []
    for start in range(0, len(perm), pool):
        chunk = perm[start:start + pool]
        chunk = chunk[np.argsort(lengths_arr[chunk], kind="stable")]
        cur: list[int] = []
        widest = 0
        for i in chunk:
            width = max(widest, int(lengths_arr[i]))
            if cur and width * (len(cur) + 1) > tokens_per_batch:
                batches.append(np.asarray(cur))
                cur, width = [], int(lengths_arr[i])
            cur.append(int(i))
            widest = width
        if cur:
            batches.append(np.asarray(cur))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


@dataclass
class Batch:
    """Padded tensors of one step. gen_X/gen_Y are one position longer than cqa/Y (the task token)."""

    cqa: torch.Tensor  # (B, L)
    Y: torch.Tensor  # (B, L)
    gen_X: torch.Tensor | None  # (B, L + 1); None for QA-only methods
    gen_Y: torch.Tensor | None  # (B, L + 1)
    is_pseudo: torch.Tensor  # (B,) bool
    n_examples: int
    n_tokens: int  # real (unpadded) tokens of the rows the forward pass reads

    def to(self, device: torch.device) -> "Batch":
        def move(t):
            return t.to(device, non_blocking=True) if t is not None else None

        return Batch(move(self.cqa), move(self.Y), move(self.gen_X), move(self.gen_Y),
                     move(self.is_pseudo), self.n_examples, self.n_tokens)


def _pad(seqs: list[tuple[int, ...]], width: int, value: int) -> torch.Tensor:
    out = torch.full((len(seqs), width), value, dtype=torch.long)
    for r, s in enumerate(seqs):
        out[r, :len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def collate(rows: list[TrainRow], pad: int, *, with_lm: bool) -> Batch:
    width = max(len(r.cqa) for r in rows)
    n_tok = sum(len(r.cqa) for r in rows) + (sum(len(r.gen_X) for r in rows) if with_lm else 0)
    return Batch(
        cqa=_pad([r.cqa for r in rows], width, pad),
        Y=_pad([r.Y for r in rows], width, IGNORE),
        gen_X=_pad([r.gen_X for r in rows], width + 1, pad) if with_lm else None,
        gen_Y=_pad([r.gen_Y for r in rows], width + 1, IGNORE) if with_lm else None,
        is_pseudo=torch.tensor([r.is_pseudo for r in rows], dtype=torch.bool),
        n_examples=len(rows), n_tokens=n_tok)
