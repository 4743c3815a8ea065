"""How a decode call is run (settings) and what it did (counters)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch


@dataclass(frozen=True)
class DecodeSettings:
    mode: Literal["greedy", "top_k"] = "greedy"
    top_k: int = 20
    temperature: float = 1.0
    # KV-cache positions a batch may plan for: rows x (longest prompt + the new tokens rows are
    # expected to need); rows that run longer grow the batch's cache, so this plans, not caps, memory.
    # None: what CACHE_BUDGET_BYTES of the model's cache holds (auto_tokens_per_batch)
    tokens_per_batch: int | None = None
    max_batch_size: int = 2048
    check_every: int = 8  # tokens between the host's looks at which rows are still generating
    # "lazy": look every check_every tokens, compact at half alive (a GPU's way); "eager": look at
    # every token and compact at once (a CPU's way, where a look is free); "auto": by the device
    compaction: str = "auto"


# The KV cache a decode batch plans for when tokens_per_batch is not set: a share of a GPU that
# leaves room for a trial's weights and a teacher's, and 2 GiB of a CPU machine's memory.
CACHE_BUDGET_BYTES = {"cuda": 8 << 30, "cpu": 2 << 30}
MAX_AUTO_TOKENS = 262144  # beyond this a batch has ~2,000 rows; more buys little and costs logits


def kv_bytes_per_position(config, dtype: torch.dtype) -> int:
    """Bytes one cache position takes across a causal LM's layers (keys and values)."""
    layers = getattr(config, "n_layer", None) or getattr(config, "num_hidden_layers")
    hidden = getattr(config, "n_embd", None) or getattr(config, "hidden_size")
    heads = getattr(config, "n_head", None) or getattr(config, "num_attention_heads")
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return layers * 2 * kv_heads * head_dim * torch.finfo(dtype).bits // 8


def auto_tokens_per_batch(bytes_per_position: int, device_type: str) -> int:
    budget = CACHE_BUDGET_BYTES.get(device_type, CACHE_BUDGET_BYTES["cpu"])
    return max(1024, min(MAX_AUTO_TOKENS, budget // max(1, bytes_per_position)))


@dataclass
class DecodeStats:
    sequences: int = 0
    new_tokens: int = 0
    forward_calls: int = 0  # sequential model calls: one prompt pass per batch, one per step
    batches: int = 0
    compactions: int = 0  # finished rows dropped from a batch's cache
    host_checks: int = 0  # the host waiting for the device to ask which rows are still alive
    graph_replays: int = 0  # steps run as a captured CUDA graph
    cache_positions_read: int = 0  # sum over steps of rows x filled cache columns (a bandwidth bound)


def amp(device: torch.device, dtype: torch.dtype | None, cache_enabled: bool = True):
    """Autocast to `dtype` on `device`, or nothing for fp32. CUDA graph capture needs autocast's
    weight-cast cache off (cached casts made during a capture would be freed under the graph)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache_enabled)
