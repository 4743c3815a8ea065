"""Batched KV-cache decoding: `decode()` continues prompts until EOS or their token budget.

Prompts of different lengths are left-padded with an attention mask and position ids that start at
0 for each row, so every row decodes as it would alone (greedy outputs equal one-at-a-time decoding;
top-k draws are keyed by row, see sampling.py).

How the work is laid out, and why:
- Batches are planned from the tokens rows are *expected* to need (`expect`: e.g. the longest answer
  a task's rows really have), not from the worst-case budget, so a batch holds hundreds of rows; a
  row may still run to its budget (LAMOL's cap: EOS or `max_total` tokens) and its batch's cache
  then grows.
- Finished rows stay in the batch under a mask; on a GPU the host looks at which rows are alive only
  every `check_every` tokens (each look is a wait for the device) and compacts the batch, dropping
  finished rows from the cache, only when at most half of it is alive. On a CPU, where a look costs
  nothing and a finished row costs its arithmetic, it looks at every token and compacts at once.
- GPT-2 decodes over a preallocated cache with its own step (steppers.GPT2Stepper), replayed as CUDA
  graphs on a GPU (graphs.py); any other model through its Hugging Face forward (steppers.HFStepper).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator, Sequence

import torch

from .graphs import BufferPool, GraphedSteps, rows_bucket
from .sampling import pick_next, row_keys, seed_from
from .settings import DecodeSettings, DecodeStats, amp, auto_tokens_per_batch, kv_bytes_per_position
from .steppers import GPT2Stepper, GPT2Weights, HFStepper, gpt2_fast_path_applies


def plan_batches(order: Sequence[int], lengths: Sequence[int], expect: Sequence[int],
                 s: DecodeSettings) -> Iterator[list[int]]:
    """Rows of `order` in batches whose rows x (longest prompt + most expected new tokens) stay
    within `s.tokens_per_batch` and whose size within `s.max_batch_size`."""
    batch: list[int] = []
    longest = most = 0
    for i in order:
        L, e = max(longest, lengths[i]), max(most, expect[i])
        if batch and ((L + e) * (len(batch) + 1) > s.tokens_per_batch or len(batch) >= s.max_batch_size):
            yield batch
            batch, L, e = [], lengths[i], expect[i]
        batch.append(i)
        longest, most = L, e
    if batch:
        yield batch


def _per_row(value: int | Sequence[int] | None, n: int, default: Sequence[int]) -> list[int]:
    if value is None:
        return list(default)
    return [value] * n if isinstance(value, int) else list(value)


class _Decoder:
    """The per-call state: the model's stepper factory, graphs and buffers, settings, counters."""

    def __init__(self, model, device, amp_dtype, settings: DecodeSettings, stats: DecodeStats | None,
                 graphs: bool | None, generic: bool = False):
        self.device, self.s, self.stats = device, settings, stats
        self.fast = not generic and gpt2_fast_path_applies(model)
        self.model = model
        self.pool = None  # with graphs only, below
        if self.fast:
            self.weights = GPT2Weights(model, amp_dtype)
        use_graphs = self.fast and device.type == "cuda" if graphs is None else (graphs and self.fast)
        self.graphs = GraphedSteps() if use_graphs else None
        if self.graphs is not None:  # graphs replay fixed addresses: every batch of a shape reuses them
            c = model.config
            self.pool = BufferPool(c.n_layer, c.n_head, c.n_embd // c.n_head, self.weights.cache_dtype, device)
        self.bytes_per_position = kv_bytes_per_position(model.config, amp_dtype or torch.float32)
        # on a CPU a look at the rows is free (nothing to wait for): every token, as the decoder did
        self.host_is_device = settings.compaction == "eager" or (settings.compaction == "auto"
                                                                 and device.type == "cpu")

    def tokens_per_batch(self) -> int:
        """The settings' planning budget, or what the cache budget of this device holds."""
        return self.s.tokens_per_batch or auto_tokens_per_batch(self.bytes_per_position, self.device.type)

    def stepper(self, rows: int, width: int):
        if self.fast:
            return GPT2Stepper(self.weights, rows, width, self.device, self.pool, self.graphs)
        return HFStepper(self.model, self.device)

    def rows_for(self, n: int) -> int:
        """Rows a batch of `n` live rows occupies: graph buckets on a GPU, exactly `n` otherwise."""
        return rows_bucket(n) if self.graphs is not None else n

    def batch(self, prompts: list[list[int]], limits: list[int], expect: int, keys: torch.Tensor | None,
              eos: int, pad: int, forced: list[int] | None) -> list[list[int]]:
        """Decode one batch; the new tokens of each prompt."""
        dev, s = self.device, self.s
        n, L = len(prompts), max(len(p) for p in prompts)
        R = self.rows_for(n)
        ids = torch.full((R, L), pad, dtype=torch.long)
        mask = torch.zeros((R, L), dtype=torch.long)
        for r in range(R):
            p = prompts[min(r, n - 1) if r < n else 0]  # bucket padding repeats row 0, dead from the start
            ids[r, L - len(p):] = torch.tensor(p)
            mask[r, L - len(p):] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        stepper = self.stepper(R, L + expect)
        logits = stepper.prefill(ids, mask, pos)
        longest = max(limits)
        pad_rows = R - n
        # row state, all on the device: a batch row's slot `n` (a scratch row) takes dead rows' writes
        slot = torch.cat([torch.arange(n), torch.full((pad_rows,), n)]).to(dev)
        alive = torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(pad_rows, dtype=torch.bool)]).to(dev)
        limit = torch.tensor(limits + [0] * pad_rows, dtype=torch.long, device=dev)
        stop = torch.tensor((forced or limits) + [0] * pad_rows, dtype=torch.long, device=dev)
        if keys is not None:
            keys = torch.cat([keys, keys[:1].expand(pad_rows, 2)]).to(dev)
        next_pos = pos[:, -1] + 1
        out = torch.full((n + 1, longest), pad, dtype=torch.long, device=dev)
        count = torch.zeros(n + 1, dtype=torch.long, device=dev)
        calls, t, read = 1, 0, 0
        while True:
            tok = pick_next(logits, s, keys, t)
            # a row that emits EOS (not kept) or, under a forced length, reaches it, is finished
            keep = alive & (tok != eos) & (t < stop)
            target = torch.where(keep, slot, n)
            out[target, t] = tok
            count.index_add_(0, target, keep.long())
            alive = keep & (t + 1 < limit)
            t += 1
            if t >= longest:
                break
            if self.host_is_device or t % s.check_every == 0:
                live = alive.nonzero().squeeze(1)  # the host's look (a wait for the device)
                if self.stats is not None:
                    self.stats.host_checks += 1
                if len(live) == 0:
                    break
                rows = self.rows_for(len(live))
                # compact: on a GPU only when at least half is gone (a copy of the cache and a new
                # graph shape); on a CPU, where finished rows cost their arithmetic, at once
                if rows < stepper.rows if self.host_is_device else rows <= stepper.rows // 2:
                    stepper.select(live, rows)
                    extra = rows - len(live)
                    def fill(x, v, live=live, extra=extra):  # the live rows, then `extra` rows of v
                        return torch.cat([x[live], x[live[:1]].new_full((extra, *x.shape[1:]), v)]) \
                            if extra else x[live]
                    slot, alive, limit, stop = fill(slot, n), fill(alive, False), fill(limit, 0), fill(stop, 0)
                    tok, next_pos = fill(tok, pad), fill(next_pos, 0)
                    if keys is not None:
                        keys = torch.cat([keys[live], keys[live[:1]].expand(extra, 2)]) if extra else keys[live]
                    if self.stats is not None:
                        self.stats.compactions += 1
            logits = stepper.step(tok, next_pos)
            next_pos = next_pos + 1
            calls += 1
            read += stepper.rows * (L + t)
        out, count = out[:n].cpu(), count[:n].tolist()
        generated = [out[r, : count[r]].tolist() for r in range(n)]
        if self.stats is not None:
            self.stats.sequences += n
            self.stats.new_tokens += sum(count)
            self.stats.forward_calls += calls
            self.stats.batches += 1
            self.stats.cache_positions_read += read
        return generated


@torch.no_grad()
def decode(model, prompts: list[list[int]], max_new: int | list[int], *, eos: int, pad: int,
           max_total: int, settings: DecodeSettings, device: torch.device,
           amp_dtype: torch.dtype | None = None, generator: torch.Generator | None = None,
           stats: DecodeStats | None = None, expect: int | list[int] | None = None,
           seed: int | None = None, keys: torch.Tensor | None = None,
           forced_lengths: list[int] | None = None, graphs: bool | None = None,
           generic: bool = False) -> list[list[int]]:
    """Continue every prompt until EOS (not kept), `max_new` new tokens, or `max_total` in all.

    `expect`: the new tokens rows are expected to need, for planning batches (default: the budget).
    Top-k draws are keyed by row: `keys` ((n, 2) from sampling.row_keys), or keys made from `seed`,
    or from one seed drawn from `generator`. `forced_lengths` (the bench's, to decode a random model
    as a trained one would) finish each row after that many tokens as if it had emitted EOS.
    `graphs`: CUDA graphs for GPT-2 (default: on a GPU); `generic`: the Hugging Face forward even for
    a GPT-2 (the tests' and the bench's comparison). Returns the new tokens of each prompt.
    """
    was_training = model.training
    model.eval()
    try:
        dec = _Decoder(model, device, amp_dtype, settings, stats, graphs, generic)
        # One autocast region for all of it: autocast keeps the casts of a trained model's weights
        # for as long as its region lasts (the GPT-2 stepper casts them once itself)
        with amp(device, amp_dtype, cache_enabled=dec.graphs is None):
            return decode_with(lambda: dec, prompts, max_new, eos=eos, pad=pad, max_total=max_total,
                               settings=settings, generator=generator, stats=stats, expect=expect,
                               seed=seed, keys=keys, forced_lengths=forced_lengths)
    finally:
        model.train(was_training)


def decode_with(make_decoder, prompts, max_new, *, eos, pad, max_total, settings, generator=None,
                stats=None, expect=None, seed=None, keys=None, forced_lengths=None) -> list[list[int]]:
    """`decode`'s planning and batches on the decoder `make_decoder()` makes (the bench counts calls
    with a model-free one)."""
    n = len(prompts)
    caps = _per_row(max_new, n, [])
    budget = [max(0, min(c, max_total - len(p))) for c, p in zip(caps, prompts)]
    expected = [min(b, e) for b, e in zip(budget, _per_row(expect, n, budget))]
    lengths = [len(p) for p in prompts]
    if settings.mode != "greedy" and keys is None:
        keys = row_keys(seed if seed is not None else seed_from(generator), n, torch.device("cpu"))
    keys = keys.cpu() if keys is not None else None
    order = sorted((i for i in range(n) if budget[i] > 0), key=lambda i: (-lengths[i] - expected[i], i))
    out: list[list[int]] = [[] for _ in range(n)]
    dec = make_decoder()
    planning = replace(settings, tokens_per_batch=dec.tokens_per_batch())
    for rows in plan_batches(order, lengths, expected, planning):
        got = dec.batch([prompts[i] for i in rows], [budget[i] for i in rows],
                        max(expected[i] for i in rows), keys[rows] if keys is not None else None, eos, pad,
                        [forced_lengths[i] for i in rows] if forced_lengths is not None else None)
        for i, g in zip(rows, got):
            out[i] = g
    if stats is not None and dec.graphs is not None:
        stats.graph_replays += dec.graphs.replays
    return out
