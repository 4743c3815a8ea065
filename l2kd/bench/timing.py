"""Timing on the device at hand: waits for a GPU around a timed call, warm passes, host-wait counts."""

from __future__ import annotations

import time
from dataclasses import fields
from typing import Any, Callable

import torch

from ..decode import DecodeStats


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[Any, float]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def count_syncs(device: torch.device, fn: Callable[[], Any]) -> tuple[int, list[str]] | None:
    """How often `fn` makes the host wait for the GPU, and from which lines; None off a GPU, where
    there is nothing to wait for. PyTorch's sync debug mode flags the waits inside operators (a read
    of a value, a copy to pageable memory); a device-wide `torch.cuda.synchronize` goes past it, so
    those calls are counted as well (DeepSpeed's throughput timer made two a step unseen)."""
    if device.type != "cuda":
        return None
    import collections
    import traceback
    import warnings

    device_wide: list[str] = []
    real_synchronize = torch.cuda.synchronize

    def counted_synchronize(*args, **kwargs):
        # named by the first caller outside an accelerator wrapper (DeepSpeed calls it through one)
        callers = [f for f in traceback.extract_stack()[:-1] if "accelerator" not in f.filename]
        device_wide.append(f"{callers[-1].filename.rsplit('/', 1)[-1]}:{callers[-1].lineno}")
        return real_synchronize(*args, **kwargs)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        torch.cuda.synchronize = counted_synchronize
        try:
            fn()
        finally:
            torch.cuda.synchronize = real_synchronize
            torch.cuda.set_sync_debug_mode("default")
    hits = [f"{w.filename.rsplit('/', 1)[-1]}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)]
    sites = collections.Counter(hits + device_wide)
    return len(hits) + len(device_wide), [f"{site} x{n}" for site, n in sites.most_common(5)]


def timed_warm(device: torch.device, fn: Callable[[], Any], stats: DecodeStats) -> tuple[Any, float]:
    """`fn` once untimed, then timed, `stats` counting the timed pass only: a decoder meets a new shape
    at every step (the KV cache grows), and on a GPU the first meeting of each builds attention plans
    and picks kernels (a cold pass there was 10x slower than a warm one); a trial decodes the same
    shapes batch after batch, so a cold pass would measure set-up, not decoding."""
    fn()
    for f in fields(stats):  # every counter back to zero, whatever DecodeStats counts
        setattr(stats, f.name, f.default)
    return timed(device, fn)
