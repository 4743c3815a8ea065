"""What a trial spent: trained and generated tokens, device-seconds per phase, peak memory.

A trial keeps running totals in `TrialResult.compute` (saved with every stage, so a resumed trial
adds to them). Phases:
    train    the training steps (Word-KD's teacher forward runs inside them and is counted here)
    pseudo   LAMOL's pseudo-sample generation before a stage
    eval     decoding and scoring the test sets (the untrained model's evaluation too)
    teacher  teacher work inside the trial: Seq-KD decoding the teacher's answers for a stage;
             training the teachers themselves is the teachers' own result (the Single rows)
Device-seconds are the wall seconds the trial held its device in that phase (one device a trial).
Peak memory: the GPU's peak allocated bytes on a GPU; on a CPU the process's peak resident size.
"""

from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator

import torch

PHASES = ("train", "pseudo", "eval", "teacher")


def empty() -> dict[str, Any]:
    return {"trained_tokens": 0, "generated_tokens": 0, "seconds": {p: 0.0 for p in PHASES},
            "peak_memory_bytes": 0, "device": ""}


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB, macOS bytes


class ComputeMeter:
    """Adds a trial's spending into `totals` (a result's `compute` mapping, updated in place)."""

    def __init__(self, totals: dict[str, Any], device: torch.device, decode_stats):
        base = empty()
        base.update(totals)
        base["seconds"] = {**empty()["seconds"], **totals.get("seconds", {})}
        totals.clear()
        totals.update(base)
        totals["device"] = str(device)
        self.totals, self.device, self.stats = totals, device, decode_stats
        self.inner: list[float] = []  # per open phase: seconds of phases nested in it

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase; tokens the trial's decoder generates meanwhile are counted too. A phase
        inside another (an evaluation after an epoch, inside training) counts only as itself."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0, tokens0 = time.perf_counter(), self.stats.new_tokens
        self.inner.append(0.0)
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            spent = time.perf_counter() - t0
            nested = self.inner.pop()
            if self.inner:
                self.inner[-1] += spent
            self.totals["seconds"][name] += spent - nested
            if not self.inner:  # tokens once, by the outermost phase
                self.totals["generated_tokens"] += self.stats.new_tokens - tokens0
            self.totals["peak_memory_bytes"] = max(self.totals["peak_memory_bytes"],
                                                   peak_memory_bytes(self.device))

    def trained(self, tokens: int) -> None:
        self.totals["trained_tokens"] += int(tokens)
