"""Multitask samplers: which rows make up each step's batch in the single multitask stage.

Every mode yields index lists into the stage's rows, grouped by task. One epoch is always
steps = ceil(N / B) batches, N = all rows of the stage and B the paper policy's batch size
(max(N // min_n_steps, min_batch_size)); every batch holds B rows except possibly the last. So an
epoch sees N examples in every mode and the learning-rate schedule (ticked per example) means the
same thing whatever the sampler.

- concat: the shuffled union cut into batches; each row exactly once per epoch (LAMOL's multitask
  and the reference's upper bound; the trial's configured batch policy, `plan_epoch`).
- uniform: every slot of a batch draws its task with probability 1/T, then takes the next row of
  that task's own shuffled stream. A stream is reshuffled when it runs out (rows are drawn without
  replacement within a pass over the task), so a small task's rows repeat within an epoch and a
  large task's may not all be seen. Batches mix tasks.
- temperature: as uniform with P(task t) ∝ |D_t|^(1/τ): τ = 1 is size-proportional mixing (concat
  in expectation, but with replacement across passes), τ → ∞ is uniform.
- uncertainty: CA-MTL's MT-Uncertainty (ca-mtl.md §3.1): every step takes m candidate rows from each
  task's stream (a task-uniform pool of T·m), scores them without gradients and keeps the B with the
  highest score s(x) = Ĥ(x) · H̄_t / max_t' H̄_t' (the code's form; `paper` form: s = Ĥ), where Ĥ is
  the candidate's normalised answer entropy (`answer_entropy`) and H̄_t the mean Ĥ of task t's
  candidates in this step. Candidates not kept are not trained on this step (their stream moves on).
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Literal, Sequence

import numpy as np
import torch

Mode = Literal["concat", "uniform", "temperature", "uncertainty"]


def task_probabilities(sizes: Sequence[int], mode: Mode, temperature: float = 1.0) -> np.ndarray:
    """P(task) per draw: uniform 1/T; temperature ∝ size^(1/τ)."""
    sizes_arr = np.asarray(sizes, dtype=np.float64)
    if mode == "uniform":
        return np.full(len(sizes_arr), 1.0 / len(sizes_arr))
    if mode == "temperature":
        w = sizes_arr ** (1.0 / temperature)
        return w / w.sum()
    raise ValueError(f"no task probabilities for mode {mode!r}")


class TaskStreams:
    """Per task an endless stream of its row indices: shuffled, reshuffled at each pass's end."""

    def __init__(self, groups: Sequence[np.ndarray], rng: np.random.Generator):
        self.groups = [np.asarray(g) for g in groups]
        self.rng = rng
        self.order = [rng.permutation(g) for g in self.groups]
        self.pos = [0] * len(self.groups)

    def take(self, task: int, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            if self.pos[task] == len(self.order[task]):
                self.order[task] = self.rng.permutation(self.groups[task])
                self.pos[task] = 0
            k = min(n - len(out), len(self.order[task]) - self.pos[task])
            out += self.order[task][self.pos[task]:self.pos[task] + k].tolist()
            self.pos[task] += k
        return out


def epoch_shape(n_rows: int, batch_size: int) -> list[int]:
    """The batch sizes of one epoch: B, B, ..., and the remainder."""
    full, rest = divmod(n_rows, batch_size)
    return [batch_size] * full + ([rest] if rest else [])


class MixtureSampler:
    """uniform / temperature: each slot draws a task from `probs`, then that task's next row."""

    def __init__(self, groups: Sequence[np.ndarray], probs: np.ndarray, batch_size: int,
                 rng: np.random.Generator):
        self.streams = TaskStreams(groups, rng)
        self.probs = np.asarray(probs, dtype=np.float64)
        self.shape = epoch_shape(sum(len(g) for g in groups), batch_size)
        self.rng = rng

    def __len__(self) -> int:
        return len(self.shape)

    def __iter__(self) -> Iterator[np.ndarray]:
        for size in self.shape:
            tasks = self.rng.choice(len(self.probs), size=size, p=self.probs)
            yield np.asarray([self.streams.take(int(t), 1)[0] for t in tasks])


def select_uncertain(entropy: np.ndarray, task_of: np.ndarray, k: int,
                     form: Literal["code", "paper"] = "code") -> np.ndarray:
    """Positions of the k candidates with the highest MT-Uncertainty score (ties: earlier first).

    code: s = Ĥ · H̄_t / max H̄ (CA-MTL's released code); paper: s = Ĥ (the paper's formula, whose
    common factor 1/max H̄ cannot change the ranking)."""
    entropy = np.asarray(entropy, dtype=np.float64)
    task_of = np.asarray(task_of)
    score = entropy.copy()
    if form == "code":
        means = {t: entropy[task_of == t].mean() for t in np.unique(task_of)}
        top = max(means.values())
        if top > 0:
            score = entropy * np.asarray([means[t] / top for t in task_of])
    order = np.argsort(-score, kind="stable")
    return np.sort(order[:k])


def answer_entropy(logits: torch.Tensor, row: torch.Tensor, n_rows: int,
                   label_ids: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """Normalised entropy of each candidate's answer, in [0, 1] (nats / max nats).

    logits: (P, V) at the QA target positions (answer tokens + EOS, teacher-forced); row: (P,) the
    candidate of each position; label_ids[r]: for a classification row, the first tokens of its
    task's label words (else None). Generation rows: the mean over their answer positions of the
    whole-vocabulary entropy / log V. Classification rows: the entropy of the softmax restricted to
    the label tokens at the first answer position / log K (CA-MTL's normalisation by log K_t;
    ca-mtl.md §5.1: the whole-vocabulary entropy is a poor signal there).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    H = -(logp.exp() * logp).sum(-1) / math.log(logits.shape[-1])
    total = torch.zeros(n_rows, dtype=H.dtype, device=H.device).index_add_(0, row, H)
    count = torch.zeros(n_rows, dtype=H.dtype, device=H.device).index_add_(0, row, torch.ones_like(H))
    out = total / count.clamp(min=1)
    P = row.shape[0]
    first = torch.full((n_rows,), P, dtype=torch.long, device=row.device).scatter_reduce(
        0, row, torch.arange(P, device=row.device), reduce="amin")  # each row's first answer position
    for r, labels in enumerate(label_ids):
        if labels is None or len(labels) < 2 or first[r] >= P:
            continue
        lp = torch.log_softmax(logits[first[r]].float().index_select(0, labels.to(logits.device)), -1)
        out[r] = -(lp.exp() * lp).sum() / math.log(len(labels))
    return out


class UncertaintySampler:
    """MT-Uncertainty; `score(indices) -> Ĥ per index` runs the current model (lazily, per step)."""

    def __init__(self, groups: Sequence[np.ndarray], batch_size: int, candidates_per_task: int,
                 score: Callable[[list[int]], np.ndarray], rng: np.random.Generator,
                 form: Literal["code", "paper"] = "code"):
        self.streams = TaskStreams(groups, rng)
        self.n_tasks = len(groups)
        self.m = candidates_per_task
        self.score = score
        self.form = form
        self.shape = epoch_shape(sum(len(g) for g in groups), batch_size)

    def __len__(self) -> int:
        return len(self.shape)

    def __iter__(self) -> Iterator[np.ndarray]:
        for size in self.shape:
            cand, task_of = [], []
            for t in range(self.n_tasks):
                cand += self.streams.take(t, self.m)
                task_of += [t] * self.m
            keep = select_uncertain(self.score(cand), np.asarray(task_of), size, self.form)
            yield np.asarray(cand)[keep]
