"""The reference's way of decoding: the benchmark's baseline and the tests' oracle for `decode`."""

from __future__ import annotations

import torch

from .sampling import pick_next, row_keys, seed_from
from .settings import DecodeSettings, DecodeStats


@torch.no_grad()
def decode_reference(model, prompt: list[int], max_new: int, *, eos: int, max_total: int,
                     settings: DecodeSettings, device: torch.device,
                     generator: torch.Generator | None = None, stats: DecodeStats | None = None,
                     key: torch.Tensor | None = None) -> list[int]:
    """One sequence, the whole prefix re-run every step, no KV cache. Top-k draws are keyed like
    `decode`'s (`key`: that row's (1, 2) key), so both give the same samples for the same key."""
    was_training = model.training
    model.eval()
    if settings.mode != "greedy" and key is None:
        key = row_keys(seed_from(generator), 1, device)
    key = key.to(device) if key is not None else None
    seq = list(prompt)
    new: list[int] = []
    try:
        while len(new) < max_new and len(seq) < max_total:
            logits = model(torch.tensor([seq], device=device)).logits[:, -1]
            tok = int(pick_next(logits, settings, key, len(new))[0])
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
