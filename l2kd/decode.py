"""Batched KV-cache decoding: greedy or top-k; LAMOL's pseudo samples and their parsing.

Prompts of different lengths are left-padded with an attention mask and position ids that start at
0 for each row, so every row decodes exactly as it would alone. Rows that emit EOS or reach their
length limit leave the batch (and the KV cache) at once, so long stragglers do not drag finished
rows through the model.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Iterator, Literal

import torch

from .data.encoding import SpecialIds, parse_pseudo


@dataclass(frozen=True)
class DecodeSettings:
    mode: Literal["greedy", "top_k"] = "greedy"
    top_k: int = 20
    temperature: float = 1.0
    tokens_per_batch: int = 16384  # (longest prompt + answer budget) x rows
    max_batch_size: int = 256


@dataclass
class DecodeStats:
    sequences: int = 0
    new_tokens: int = 0
    forward_calls: int = 0


def amp(device: torch.device, dtype: torch.dtype | None):
    """Autocast to `dtype` on `device`, or nothing for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def pick_next(logits: torch.Tensor, s: DecodeSettings, generator: torch.Generator | None) -> torch.Tensor:
    """Greedy argmax, or the reference's sampler: logits / T -> top-k filter -> softmax -> draw."""
    if s.mode == "greedy":
        return logits.argmax(-1)
    logits = logits.float() / s.temperature
    k = min(s.top_k, logits.shape[-1])
    top, idx = logits.topk(k, dim=-1)
    probs = torch.softmax(top, dim=-1)
    # torch.multinomial's one-sample draw, step for step (argmax of p / q, q ~ Exp(1): the same
    # samples from the same generator state) without its two validity checks, each a read of a value
    # that makes the host wait for the GPU at every token; a softmax is always a valid distribution.
    choice = (probs / torch.empty_like(probs).exponential_(1, generator=generator)).argmax(-1, keepdim=True)
    return idx.gather(-1, choice).squeeze(-1)


def _plan(order: list[int], lengths: list[int], budget: list[int], s: DecodeSettings) -> Iterator[list[int]]:
    batch: list[int] = []
    widest = 0
    for i in order:
        width = max(widest, lengths[i] + budget[i])
        if batch and (width * (len(batch) + 1) > s.tokens_per_batch or len(batch) >= s.max_batch_size):
            yield batch
            batch, width = [], lengths[i] + budget[i]
        batch.append(i)
        widest = width
    if batch:
        yield batch


@torch.no_grad()
def decode(model, prompts: list[list[int]], max_new: int | list[int], *, eos: int, pad: int,
           max_total: int, settings: DecodeSettings, device: torch.device,
           amp_dtype: torch.dtype | None = None, generator: torch.Generator | None = None,
           stats: DecodeStats | None = None) -> list[list[int]]:
    """Continue every prompt until EOS (not kept), `max_new` new tokens, or `max_total` in all.

    Returns the new tokens of each prompt, in the order of `prompts`.
    """
    n = len(prompts)
    caps = [max_new] * n if isinstance(max_new, int) else list(max_new)
    budget = [max(0, min(c, max_total - len(p))) for c, p in zip(caps, prompts)]
    lengths = [len(p) for p in prompts]
    order = sorted(range(n), key=lambda i: (-lengths[i], i))  # similar lengths share a batch
    out: list[list[int]] = [[] for _ in range(n)]
    was_training = model.training
    model.eval()
    # One autocast region for all of it: autocast keeps the casts of a trained model's weights for as
    # long as its region lasts, so a region per token cast every weight again at every token.
    try:
        with amp(device, amp_dtype):
            for rows in _plan([i for i in order if budget[i] > 0], lengths, budget, settings):
                got = _decode_batch(model, [prompts[i] for i in rows], [budget[i] for i in rows], eos,
                                    pad, settings, device, generator, stats)
                for i, g in zip(rows, got):
                    out[i] = g
    finally:
        model.train(was_training)
    return out


def _decode_batch(model, prompts, limits, eos, pad, s, device, generator, stats):
    B, L = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((B, L), pad, dtype=torch.long)
    mask = torch.zeros((B, L), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, L - len(p):] = torch.tensor(p)
        mask[r, L - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    padded = any(len(p) < L for p in prompts)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    # Only the last position's logits are read: without logits_to_keep the prompt pass would
    # materialise batch x prompt x 50k-vocabulary floats (GBs on a GPU batch) to keep one row each.
    res = model(ids, attention_mask=mask if padded else None, position_ids=pos, use_cache=True,
                logits_to_keep=1)
    cache, logits = res.past_key_values, res.logits[:, -1]
    next_pos = pos[:, -1] + 1
    alive = list(range(B))  # batch rows still generating, in cache order
    generated: list[list[int]] = [[] for _ in range(B)]
    calls = 1
    while True:
        tokens = pick_next(logits, s, generator)
        keep = []
        for slot, (row, tok) in enumerate(zip(alive, tokens.tolist())):
            if tok == eos:
                continue
            generated[row].append(tok)
            if len(generated[row]) < limits[row]:
                keep.append(slot)
        if not keep:
            break
        if len(keep) < len(alive):
            idx = torch.tensor(keep, device=device)
            cache.batch_select_indices(idx)
            tokens, mask, next_pos = tokens[idx], mask[idx], next_pos[idx]
            alive = [alive[k] for k in keep]
        mask = torch.cat([mask, mask.new_ones((len(alive), 1))], dim=1)
        res = model(tokens[:, None], attention_mask=mask if padded else None,
                    position_ids=next_pos[:, None], past_key_values=cache, use_cache=True)
        cache, logits = res.past_key_values, res.logits[:, -1]
        next_pos = next_pos + 1
        calls += 1
    if stats is not None:
        stats.sequences += B
        stats.new_tokens += sum(len(g) for g in generated)
        stats.forward_calls += calls
    return generated


# --------------------------------------------------------------------------- pseudo samples
def pseudo_counts(current_size: int, previous: list[str], gen_ratio: float) -> dict[str, int]:
    """LAMOL: ceil(gen_ratio x |current task|) samples, rounded down to a multiple of the number of
    previous tasks and split equally among them. The reference took |current task| from its
    data_attrs.json (where `ag` has a typo); we count the training set actually used."""
    if not previous:
        return {}
    total = math.ceil(current_size * gen_ratio)
    total -= total % len(previous)
    return {t: total // len(previous) for t in previous}


@dataclass
class PseudoStats:
    requested: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: {"no_ans": 0, "multi_ans": 0})

    def to_dict(self) -> dict:
        return {"requested": self.requested, "kept": self.kept, "dropped": dict(self.dropped)}


def generate_pseudo(model, prompts_by_task: dict[str, int], counts: dict[str, int], ids: SpecialIds,
                    *, max_total: int, settings: DecodeSettings, device: torch.device,
                    amp_dtype: torch.dtype | None, generator: torch.Generator,
                    stats: DecodeStats | None = None):
    """Sample pseudo examples of earlier tasks, each prompted by that task's generation token alone.

    Sampling is always top-k (LAMOL: top_k_qa = 20 at temperature 1), up to `max_total` tokens.
    Returns ([(task, generation token, question ids, answer ids)], PseudoStats).
    """
    sampler = DecodeSettings("top_k", settings.top_k, settings.temperature,
                             settings.tokens_per_batch, settings.max_batch_size)
    prompts, tasks = [], []
    for task, n in counts.items():
        prompts += [[prompts_by_task[task]]] * n
        tasks += [task] * n
    outs = decode(model, prompts, max_total, eos=ids.eos, pad=ids.pad, max_total=max_total,
                  settings=sampler, device=device, amp_dtype=amp_dtype, generator=generator, stats=stats)
    pstats = PseudoStats(requested=len(prompts))
    samples = []
    for task, prompt, gen in zip(tasks, prompts, outs):
        parsed = parse_pseudo(gen, ids)
        if isinstance(parsed, str):
            pstats.dropped[parsed] += 1
            continue
        samples.append((task, prompt[0], parsed[0], parsed[1]))
    pstats.kept = len(samples)
    return samples, pstats


@torch.no_grad()
def decode_reference(model, prompt: list[int], max_new: int, *, eos: int, max_total: int,
                     settings: DecodeSettings, device: torch.device,
                     generator: torch.Generator | None = None, stats: DecodeStats | None = None) -> list[int]:
    """The reference's way: one sequence, the whole prefix re-run every step, no KV cache.

    The benchmark's baseline and the tests' oracle for `decode`.
    """
    was_training = model.training
    model.eval()
    seq = list(prompt)
    new: list[int] = []
    try:
        while len(new) < max_new and len(seq) < max_total:
            logits = model(torch.tensor([seq], device=device)).logits[:, -1]
            tok = int(pick_next(logits, settings, generator)[0])
            if stats is not None:
                stats.forward_calls += 1
            if tok == eos:
                break
            new.append(tok)
            seq.append(tok)
    finally:
        model.train(was_training)
    if stats is not None:
        stats.sequences += 1
        stats.new_tokens += len(new)
    return new
