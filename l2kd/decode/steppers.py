"""One batch's model calls with a KV cache: a prompt pass, then one call per new token.

Two steppers share one interface (`prefill`, `step`, `select`, `rows`):
- `GPT2Stepper`: GPT-2's own blocks over a preallocated (static) KV cache that every row writes at
  the same column each step, with the weights of its matrix products cast once per decode call
  (a frozen teacher's already are) and its LM head padded as in training. Its step has static shapes
  for a (rows, cache width) pair, so on CUDA it is captured once as a CUDA graph and replayed
  (graphs.py). The values are GPT-2's: the same modules and products, the cache masked instead of cut.
- `HFStepper`: any Hugging Face causal LM through its own forward and dynamic cache (the generic
  path: task-conditioned GPT-2s, other architectures).
Finished rows stay in the batch under the caller's mask until the caller compacts it (`select`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..model import padded_head_weight
from .graphs import BufferPool, CacheBuffers, new_buffers

CACHE_ALIGN = 64  # cache widths are multiples of this: few distinct shapes, few CUDA graphs


def _round_up(n: int, align: int = CACHE_ALIGN) -> int:
    return -(-n // align) * align


def gpt2_fast_path_applies(model) -> bool:
    """A plain GPT-2 LM whose blocks `GPT2Stepper` reproduces exactly (no task conditioning, no
    cross-attention, none of the attention variants it does not implement)."""
    from transformers import GPT2LMHeadModel

    from ..conditioning import spec_from_config

    from transformers.pytorch_utils import Conv1D

    if type(model) is not GPT2LMHeadModel:
        return False
    c = model.config
    # every product a plain Conv1D: a LoRA (or any other) wrapper adds to the product, which the
    # stepper, reading the weights, would leave out
    plain = all(type(m) is Conv1D for b in model.transformer.h
                for m in (b.attn.c_attn, b.attn.c_proj, b.mlp.c_fc, b.mlp.c_proj))
    return (plain and spec_from_config(c) is None and not getattr(c, "add_cross_attention", False)
            and not getattr(c, "reorder_and_upcast_attn", False))


def _conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """transformers' Conv1D (x @ W + b) on given weights."""
    out = torch.addmm(bias, x.reshape(-1, x.shape[-1]), weight)
    return out.view(*x.shape[:-1], weight.shape[1])


@dataclass
class _BlockWeights:
    attn_w: torch.Tensor
    attn_b: torch.Tensor
    proj_w: torch.Tensor
    proj_b: torch.Tensor
    fc_w: torch.Tensor
    fc_b: torch.Tensor
    out_w: torch.Tensor
    out_b: torch.Tensor


class GPT2Weights:
    """A GPT-2's product weights as a decode call uses them: cast to the autocast dtype once (what
    autocast would give each product; a no-op for a frozen teacher stored in it), the head padded."""

    def __init__(self, gpt2, amp_dtype: torch.dtype | None):
        cast = (lambda t: t.detach().to(amp_dtype)) if amp_dtype is not None else (lambda t: t.detach())
        self.gpt2 = gpt2
        self.blocks = [
            _BlockWeights(cast(b.attn.c_attn.weight), cast(b.attn.c_attn.bias),
                          cast(b.attn.c_proj.weight), cast(b.attn.c_proj.bias),
                          cast(b.mlp.c_fc.weight), cast(b.mlp.c_fc.bias),
                          cast(b.mlp.c_proj.weight), cast(b.mlp.c_proj.bias))
            for b in gpt2.transformer.h]
        self.head = padded_head_weight(cast(gpt2.lm_head.weight))
        self.vocab = gpt2.lm_head.weight.shape[0]
        self.cache_dtype = amp_dtype or gpt2.lm_head.weight.dtype


class GPT2Stepper:
    """One batch's cache over a GPT-2: `rows` rows, columns written left to right by all rows at once."""

    def __init__(self, weights: GPT2Weights, rows: int, width: int, device: torch.device,
                 pool: BufferPool | None = None, graphs=None):
        c = weights.gpt2.config
        self.w = weights
        self.n_head, self.head_dim = c.n_head, c.n_embd // c.n_head
        self.device = device
        # a pool only where graphs replay fixed addresses; elsewhere every shape is a fresh tensor
        # (a CPU compacts at every finished row: a pool would zero and keep a cache per row count)
        self.pool = pool
        self.spec = (c.n_layer, self.n_head, self.head_dim, weights.cache_dtype, device)
        self.graphs = graphs  # a graphs.GraphedSteps on CUDA
        self._use(rows, _round_up(width))
        self.buf.valid.zero_()
        self.written = 0  # columns written, on the host

    def _use(self, rows: int, width: int) -> None:
        self.rows, self.width = rows, width
        if self.pool is not None:
            self.buf = self.pool.get(rows, width)
        else:
            layers, heads, head_dim, dtype, device = self.spec
            self.buf = new_buffers(layers, rows, heads, width, head_dim, dtype, device)

    # ------------------------------------------------------------------ the model
    def _blocks(self, h: torch.Tensor, cols: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, q, d = h.shape
        k_cache, v_cache = self.buf.k, self.buf.v
        for i, (block, w) in enumerate(zip(self.w.gpt2.transformer.h, self.w.blocks)):
            x = block.ln_1(h)
            qs, ks, vs = _conv1d(x, w.attn_w, w.attn_b).split(d, dim=2)
            qs, ks, vs = (t.view(B, q, self.n_head, self.head_dim).transpose(1, 2) for t in (qs, ks, vs))
            k_cache[i].index_copy_(2, cols, ks.to(k_cache[i].dtype))
            v_cache[i].index_copy_(2, cols, vs.to(v_cache[i].dtype))
            a = F.scaled_dot_product_attention(qs, k_cache[i], v_cache[i], attn_mask=mask,
                                               scale=block.attn.scaling)
            h = h + _conv1d(a.transpose(1, 2).reshape(B, q, d), w.proj_w, w.proj_b)
            x = block.ln_2(h)
            h = h + _conv1d(block.mlp.act(_conv1d(x, w.fc_w, w.fc_b)), w.out_w, w.out_b)
        return h

    def _logits(self, h_last: torch.Tensor) -> torch.Tensor:
        logits = F.linear(self.w.gpt2.transformer.ln_f(h_last), self.w.head)
        return logits if logits.shape[-1] == self.w.vocab else logits[..., : self.w.vocab]

    def _embed(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        t = self.w.gpt2.transformer
        return t.wte(ids) + t.wpe(pos)

    # ------------------------------------------------------------------ the interface
    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The prompt pass over left-padded `ids` (rows, L); logits at the last position."""
        L = ids.shape[1]
        if L > self.width:
            self.grow(L)
        valid = self.buf.valid
        valid[:, :L] = mask.bool()
        cols = torch.arange(L, device=self.device)
        causal = cols[None, :] <= cols[:, None]  # (query, key)
        # a row's padding is masked out as a key; a padded query attends to itself too, so that no
        # row of the softmax is empty (NaN) and no NaN reaches the cache
        keys = (valid[:, None, :L] & causal[None]) | torch.eye(L, dtype=torch.bool, device=self.device)[None]
        mask4 = torch.zeros((ids.shape[0], 1, L, self.width), dtype=torch.bool, device=self.device)
        mask4[:, 0, :, :L] = keys
        h = self._blocks(self._embed(ids, pos), cols, mask4)
        self.buf.length.fill_(L)
        self.written = L
        return self._logits(h[:, -1])

    def _step(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """One token per row at column `length`, all on the device (what a CUDA graph captures)."""
        b = self.buf
        b.valid.index_fill_(1, b.length, True)
        h = self._blocks(self._embed(tokens[:, None], pos[:, None]), b.length, b.valid[:, None, None, :])
        b.length.add_(1)
        return self._logits(h[:, -1])

    def step(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if self.written >= self.width:
            self.grow(self.written + 1)
        self.written += 1
        if self.graphs is not None:
            return self.graphs.run(self, tokens, pos)
        return self._step(tokens, pos)

    def _move(self, rows: int, width: int, idx: torch.Tensor | None) -> None:
        """Into the buffers of (rows, width): the rows `idx` (all when None), the first `written` columns."""
        old = self.buf
        if self.pool is None:  # fresh tensors: select and pad what is there (unwritten columns are 0)
            pad = width - self.width
            sel = (lambda t: t) if idx is None else (lambda t: t.index_select(0, idx))
            grow = (lambda t: F.pad(t, (0, 0, 0, pad))) if pad else (lambda t: t)
            self.buf = CacheBuffers([grow(sel(t)) for t in old.k], [grow(sel(t)) for t in old.v],
                                    F.pad(sel(old.valid), (0, pad)) if pad else sel(old.valid), old.length)
            self.rows, self.width = rows, width
            return
        self._use(rows, width)
        new, n = self.buf, self.written
        pick = (lambda t: t) if idx is None else (lambda t: t.index_select(0, idx))
        for src, dst in zip(old.k + old.v, new.k + new.v):
            dst[:, :, :n].copy_(pick(src[:, :, :n]))
        new.valid.zero_()
        new.valid[:, :n].copy_(pick(old.valid[:, :n]))
        new.length.copy_(old.length)

    def grow(self, need: int) -> None:
        """A wider cache (rare: widths are planned from the lengths rows are expected to need)."""
        self._move(self.rows, _round_up(max(need, self.width + max(CACHE_ALIGN, self.width // 2))), None)

    def select(self, idx: torch.Tensor, rows: int) -> None:
        """Keep the rows `idx` (in that order), padded with copies of the first up to `rows` rows."""
        if rows > len(idx):
            idx = torch.cat([idx, idx[:1].expand(rows - len(idx))])
        self._move(rows, self.width, idx)


class HFStepper:
    """Any causal LM through its own forward: a dynamic cache, the attention mask grown each step."""

    def __init__(self, model, device: torch.device):
        self.model = model
        self.device = device
        self.cache = None
        self.mask: torch.Tensor | None = None
        self.padded = False
        self.rows = 0
        self.graphs = None
        # transformers 5 renamed the forward's `past_key_values` to `cache`
        self._cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def _call(self, ids, pos, **kw):
        res = self.model(ids, attention_mask=self.mask if self.padded else None, position_ids=pos,
                         use_cache=True, logits_to_keep=1, **kw)
        self.cache = getattr(res, "cache", None) or res.past_key_values
        return res.logits[:, -1]

    def prefill(self, ids, mask, pos):
        self.rows = ids.shape[0]
        self.mask = mask
        self.padded = bool((mask == 0).any())
        return self._call(ids, pos)

    def step(self, tokens, pos):
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        return self._call(tokens[:, None], pos[:, None], **{self._cache_kw: self.cache})

    def select(self, idx, rows):
        if rows > len(idx):
            idx = torch.cat([idx, idx[:1].expand(rows - len(idx))])
        self.cache.batch_select_indices(idx)
        self.mask = self.mask.index_select(0, idx)
        self.rows = rows
