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

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..config import TrainingConfig
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
    """One step's tensors. The forward pass runs `inputs` once: the QA rows (cqa, right-padded) and,
    for methods with an LM loss, the LM rows (gen_X) stacked under them. Losses need logits only where
    a target exists, so the LM head runs only at `positions` (flat indices into `inputs`, answer + EOS
    of the QA rows, then every real position of the LM rows). All indices are built here on the host
    and travel with the batch, so the training loop never reads anything back from the device."""

    inputs: torch.Tensor  # (B, W) or (2B, W) token ids
    positions: torch.Tensor  # (Nq + Nl,) flat indices into inputs where logits are needed
    n_qa: int  # the first n_qa positions belong to the QA loss, the rest to the LM loss
    targets: torch.Tensor  # (Nq + Nl,) the token to predict at each position
    row: torch.Tensor  # (Nq + Nl,) which example (0..B-1) each position belongs to
    is_pseudo: torch.Tensor  # (B,) bool
    n_examples: int
    n_tokens: int  # real tokens the forward pass reads
    with_lm: bool
    # (B,) or (2B,): the task index of every input row, for task-conditioned models (multitask_ca)
    # only; None on the plain path.
    task_ids: torch.Tensor | None = None
    n_pseudo: int = 0  # how many of the B examples are pseudo samples (known here, read on the host)
    # Where a batch mixes current-task and pseudo examples (None otherwise: all positions are one or
    # the other), the current-task part, for a Word-KD teacher that runs on those rows only:
    kd_index: torch.Tensor | None = None  # ascending indices into `positions` of current-task positions
    kd_rows: torch.Tensor | None = None  # the input rows of current-task examples (QA, then LM rows)
    kd_flat: torch.Tensor | None = None  # the kd_index positions as flat indices into inputs[kd_rows]
    kd_index_host: np.ndarray | None = None  # kd_index on the host (placed without a device read)
    index: torch.Tensor | None = None  # (B,) each example's TrainRow.index (a cached teacher's key)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor field that is set, by name."""
        names = ("inputs", "positions", "targets", "row", "is_pseudo", "task_ids", "kd_index", "kd_rows",
                 "kd_flat", "index")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    def _map(self, fn) -> "Batch":
        """The same batch with `fn` applied to every tensor."""
        return replace(self, **{k: fn(t) for k, t in self.tensors().items()})

    def to(self, device: torch.device) -> "Batch":
        return self._map(lambda t: t.to(device, non_blocking=True))

    def pin(self) -> "Batch":
        """Page-locked host tensors, so the copy to a GPU need not block the host."""
        return self._map(lambda t: t.pin_memory())

    @property
    def qa_targets(self) -> torch.Tensor:
        return self.targets[: self.n_qa]

    @property
    def lm_targets(self) -> torch.Tensor:
        return self.targets[self.n_qa:]

    @property
    def qa_positions(self) -> torch.Tensor:
        """(N,) bool: which target positions belong to the QA loss (the first n_qa)."""
        return torch.arange(len(self.targets), device=self.targets.device) < self.n_qa

    @property
    def pseudo_positions(self) -> torch.Tensor:
        """(N,) bool: which target positions belong to a pseudo sample."""
        return self.is_pseudo[self.row]

    def pseudo_mask(self, part: str) -> torch.Tensor:
        """Per position of the 'qa' or 'lm' part: does it belong to a pseudo sample?"""
        rows = self.row[: self.n_qa] if part == "qa" else self.row[self.n_qa:]
        return self.is_pseudo[rows]


def _padded(seqs: list[tuple[int, ...]], width: int, fill: int) -> np.ndarray:
    out = np.full((len(seqs), width), fill, dtype=np.int64)
    for b, seq in enumerate(seqs):
        out[b, :len(seq)] = seq
    return out


def collate(rows: list[TrainRow], pad: int, *, with_lm: bool,
            task_index: dict[str, int] | None = None) -> Batch:
    """Pad `rows` into one Batch; with `task_index` (task name -> index) it also carries each input
    row's task index, for task-conditioned models.

    Built with array operations, not a loop per token: in a trial it runs in a loader thread beside
    the training loop, and every millisecond it holds Python's lock is one the loop cannot launch in.
    """
    B = len(rows)
    width = max(len(r.gen_X) if with_lm else len(r.cqa) for r in rows)
    inputs = [_padded([r.cqa for r in rows], width, pad)]
    targets = [_padded([r.Y for r in rows], width, IGNORE)]
    if with_lm:
        inputs.append(_padded([r.gen_X for r in rows], width, pad))
        targets.append(_padded([r.gen_Y for r in rows], width, IGNORE))
    positions, target_ids, owner = [], [], []
    for part, Y in enumerate(targets):  # QA positions first, then LM positions, each row-major
        b, t = np.nonzero(Y != IGNORE)
        positions.append((part * B + b) * width + t)
        target_ids.append(Y[b, t])
        owner.append(b)
    n_qa = len(positions[0])
    n_tok = sum(len(r.cqa) for r in rows) + (sum(len(r.gen_X) for r in rows) if with_lm else 0)
    task_ids = None
    if task_index is not None:
        per_row = torch.tensor([task_index[r.task] for r in rows], dtype=torch.long)
        task_ids = torch.cat([per_row, per_row]) if with_lm else per_row
    as_tensor = lambda parts: torch.from_numpy(np.concatenate(parts))  # noqa: E731
    is_pseudo = np.array([r.is_pseudo for r in rows], dtype=bool)
    kd = _current_part(is_pseudo, np.concatenate(positions), np.concatenate(owner), width, len(inputs))
    return Batch(as_tensor(inputs), as_tensor(positions), n_qa, as_tensor(target_ids), as_tensor(owner),
                 torch.from_numpy(is_pseudo), B, n_tok, with_lm, task_ids, n_pseudo=int(is_pseudo.sum()),
                 index=torch.tensor([r.index for r in rows], dtype=torch.long), **kd)


def _current_part(is_pseudo: np.ndarray, positions: np.ndarray, owner: np.ndarray, width: int,
                  parts: int) -> dict:
    """Batch's kd_* fields: the current-task examples' positions, input rows and flat positions in
    those rows; empty where the batch is all current-task or all pseudo examples."""
    B = len(is_pseudo)
    current = np.flatnonzero(~is_pseudo)
    if len(current) in (0, B):
        return {}
    kd_index = np.flatnonzero(~is_pseudo[owner])
    kd_rows = np.concatenate([current + part * B for part in range(parts)])
    rank = np.full(parts * B, -1, dtype=np.int64)
    rank[kd_rows] = np.arange(len(kd_rows))
    flat = positions[kd_index]
    kd_flat = rank[flat // width] * width + flat % width
    return {"kd_index": torch.from_numpy(kd_index), "kd_rows": torch.from_numpy(kd_rows),
            "kd_flat": torch.from_numpy(kd_flat), "kd_index_host": kd_index}


def plan_epoch(rows: list[TrainRow], training: TrainingConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch's batches under the configured batch policy (index lists into `rows`)."""
    if training.batch_policy == "paper":
        size = paper_batch_size(len(rows), training.min_n_steps, training.min_batch_size)
        return paper_batches(len(rows), size, rng)
    return token_batches([len(r) for r in rows], training.tokens_per_batch, rng)
