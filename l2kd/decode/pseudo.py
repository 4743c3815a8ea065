"""LAMOL's pseudo samples: how many, and sampling and parsing them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from ..data.encoding import SpecialIds, parse_pseudo
from .loop import decode
from .sampling import seed_from
from .settings import DecodeSettings, DecodeStats


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
                    amp_dtype: torch.dtype | None, generator: torch.Generator | None = None,
                    seed: int | None = None, stats: DecodeStats | None = None,
                    expect: dict[str, int] | None = None, forced_lengths: list[int] | None = None):
    """Sample pseudo examples of earlier tasks, each prompted by that task's generation token alone.

    Sampling is always top-k (LAMOL: top_k_qa = 20 at temperature 1), up to `max_total` tokens, the
    draws keyed by `seed` (or one seed drawn from `generator`) and the sample's place in the request.
    `expect` (task -> tokens): the length that task's samples are expected to reach (its real rows'
    longest), which sizes the batches; it never cuts a sample.
    Returns ([(task, generation token, question ids, answer ids)], PseudoStats).
    """
    sampler = replace(settings, mode="top_k")
    prompts, tasks = [], []
    for task, n in counts.items():
        prompts += [[prompts_by_task[task]]] * n
        tasks += [task] * n
    want = [expect[t] for t in tasks] if expect else None
    outs = decode(model, prompts, max_total, eos=ids.eos, pad=ids.pad, max_total=max_total,
                  settings=sampler, device=device, amp_dtype=amp_dtype,
                  seed=seed if seed is not None else seed_from(generator), stats=stats, expect=want,
                  forced_lengths=forced_lengths)
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
