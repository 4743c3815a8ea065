"""CUDA graphs of GPT2Stepper's decoding step: one per (rows, cache width), captured once a decode
call and replayed at every later step of that shape, so a step costs its kernels' time, not
Python's and the launch queue's (GPT-2-small's step is ~300 small kernels).

Buffers: a graph reads and writes fixed addresses, so the KV caches, the mask and the write column
of each (rows, width) come from a pool that lives as long as the decode call, and every batch of that
shape reuses them. Graphs share one memory pool for their intermediates; they replay one at a time on
one stream and each keeps its output tensor, which makes the sharing safe. If a capture fails the call
goes on eagerly (logged once): a graph is an optimisation, never a requirement.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

# rows a graph is captured for: a batch is padded up to the next of these (at most 1.5x rows)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


def rows_bucket(n: int) -> int:
    for b in ROW_BUCKETS:
        if b >= n:
            return b
    return -(-n // 512) * 512


@dataclass
class CacheBuffers:
    k: list[torch.Tensor]
    v: list[torch.Tensor]
    valid: torch.Tensor  # (rows, width) bool: the cache columns each row may attend to
    length: torch.Tensor  # (1,) long: the next column to write


def new_buffers(layers: int, rows: int, heads: int, width: int, head_dim: int, dtype: torch.dtype,
                device: torch.device) -> CacheBuffers:
    shape = (rows, heads, width, head_dim)
    return CacheBuffers([torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)],
                        [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)],
                        torch.zeros((rows, width), dtype=torch.bool, device=device),
                        torch.zeros((1,), dtype=torch.long, device=device))


class BufferPool:
    """Cache buffers by (rows, width), reused by every batch of one decode call."""

    def __init__(self, layers: int, heads: int, head_dim: int, dtype: torch.dtype, device: torch.device):
        self.spec = (layers, heads, head_dim, dtype, device)
        self.buffers: dict[tuple[int, int], CacheBuffers] = {}

    def get(self, rows: int, width: int) -> CacheBuffers:
        key = (rows, width)
        if key not in self.buffers:
            layers, heads, head_dim, dtype, device = self.spec
            self.buffers[key] = new_buffers(layers, rows, heads, width, head_dim, dtype, device)
        return self.buffers[key]


@dataclass
class _Graph:
    graph: "torch.cuda.CUDAGraph"
    tokens: torch.Tensor
    pos: torch.Tensor
    out: torch.Tensor


class GraphedSteps:
    """Replays `stepper._step` as CUDA graphs keyed by the stepper's (rows, width)."""

    def __init__(self):
        self.graphs: dict[tuple[int, int], _Graph] = {}
        self.mempool = torch.cuda.graph_pool_handle()
        self.broken = False
        self.replays = 0

    def run(self, stepper, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if self.broken:
            return stepper._step(tokens, pos)
        key = (stepper.rows, stepper.width)
        g = self.graphs.get(key)
        if g is None:
            # this step runs eagerly on a side stream, as PyTorch asks of a warm-up before a capture
            # (libraries set up their handles and workspaces outside the graph); the capture then
            # records the step without running it, so the state moves once
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = stepper._step(tokens, pos)
            torch.cuda.current_stream().wait_stream(side)
            self._capture(stepper, key, tokens, pos)
            return out
        g.tokens.copy_(tokens)
        g.pos.copy_(pos)
        g.graph.replay()
        self.replays += 1
        return g.out

    def _capture(self, stepper, key, tokens, pos) -> None:
        static_tokens, static_pos = tokens.clone(), pos.clone()
        graph = torch.cuda.CUDAGraph()
        try:
            torch.cuda.synchronize()
            with torch.cuda.graph(graph, pool=self.mempool):
                out = stepper._step(static_tokens, static_pos)
        except Exception as e:  # noqa: BLE001 - fall back to eager decoding, never fail a trial
            log.warning("decoding: CUDA graph capture failed (%s: %s); decoding eagerly",
                        type(e).__name__, str(e).splitlines()[0][:200])
            self.broken = True
            return
        self.graphs[key] = _Graph(graph, static_tokens, static_pos, out)
