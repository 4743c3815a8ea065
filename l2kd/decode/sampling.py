"""Choosing the next token: greedy, or top-k with counter-based noise keyed by row and step.

Top-k follows the reference's sampler (logits / T -> top-k filter -> softmax -> one draw) and draws by
the exponential race that torch.multinomial uses for one sample (argmax of p / q, q ~ Exp(1)). The
noise q is not taken from a generator's stream but hashed from (row key, step, column): a row's
draws depend only on its key, never on which rows share its batch, how the batch was compacted, or
the device, and no generator state has to be carried from one step to the next. So the decoder may
plan, mask and reorder rows freely (and replay steps as CUDA graphs) while a seed still fixes every
sample. We deviate from the reference on purpose here: it sampled from torch's global stream.
"""

from __future__ import annotations

import torch

from .settings import DecodeSettings

_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, m: int) -> torch.Tensor:
    """(x * m) mod 2**32 for int64 tensors of 32-bit values, never overflowing int64: m is split in
    16-bit halves so every product stays below 2**49 (signed overflow is undefined in C++)."""
    lo = x * (m & 0xFFFF)
    hi = ((x * (m >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _M32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser (lowbias32: good avalanche) on int64 tensors holding 32-bit values."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def row_keys(seed: int, n: int, device: torch.device) -> torch.Tensor:
    """Keys of rows 0..n-1 of one decode call from one seed: (n, 2) 32-bit halves as int64."""
    rows = torch.arange(n, dtype=torch.int64, device=device)
    lo = _hash32((rows ^ (seed & _M32)) & _M32)
    hi = _hash32(((rows * 0x9E37 + (seed >> 32)) ^ 0x5BD1E995) & _M32)
    return torch.stack([lo, hi], dim=1)


def exponential_noise(keys: torch.Tensor, step: torch.Tensor | int, k: int) -> torch.Tensor:
    """Exp(1) draws of shape (rows, k), a function of each row's key, the step and the column only."""
    step = torch.as_tensor(step, dtype=torch.int64, device=keys.device)
    cols = torch.arange(k, dtype=torch.int64, device=keys.device)
    h = _hash32(keys[:, :1] ^ _hash32((step * 0x27D4EB2F + 0x165667B1) & _M32))
    h = _hash32(h ^ keys[:, 1:])
    h = _hash32(h ^ _hash32(cols[None, :] + 0x61C88647))
    u = ((h >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))  # 24 bits: uniform on (0, 1)
    return -torch.log(u)


def pick_next(logits: torch.Tensor, s: DecodeSettings, keys: torch.Tensor | None = None,
              step: torch.Tensor | int = 0) -> torch.Tensor:
    """Greedy argmax, or one top-k draw per row keyed by (row key, step)."""
    if s.mode == "greedy":
        return logits.argmax(-1)
    if keys is None:
        raise ValueError("top-k sampling needs row keys")
    logits = logits.float() / s.temperature
    k = min(s.top_k, logits.shape[-1])
    top, idx = logits.topk(k, dim=-1)
    probs = torch.softmax(top, dim=-1)
    choice = (probs / exponential_noise(keys, step, k)).argmax(-1, keepdim=True)
    return idx.gather(-1, choice).squeeze(-1)


def seed_from(generator: torch.Generator | None) -> int:
    """One 63-bit seed for a decode call, drawn from `generator` (advancing it), or 0 without one."""
    if generator is None:
        return 0
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
