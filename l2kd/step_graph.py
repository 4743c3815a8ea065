"""The paper policy's step at the launch floor (training.step_graph): one CUDA graph per bucket.

A paper-policy step (4-6 examples) is a few hundred small kernels; eagerly, the host's launches
take longer than the GPU's work. Here each batch is padded to its bucket (data/buckets.py, in the
loader thread) and the whole step — forward, the method's static loss terms, backward, gradient
clipping, AdamW — is captured once per bucket as a CUDA graph and replayed for every later batch of
that bucket: the step costs one launch and a few copies into the bucket's input buffers.

A CUDA graph rather than torch.compile(mode="reduce-overhead"): the step's losses are autograd
Functions with chunk loops and the optimiser sits inside the step; a graph records them as they
are, with no recompilation per bucket and no second source of truth for the numerics.

What the graph holds, and why it is safe to replay in any order:
- the optimiser is its own AdamW (fused, capturable on CUDA) with the learning rate a device tensor
  filled from the schedule before each replay; its state is made before any capture (a step at lr 0
  on zero gradients, then its step counts reset: the same state as a fresh optimiser's);
- gradients live in fixed buffers made once and zeroed at the start of every step, so every graph
  reads and writes the same ones; parameters, optimiser state and input buffers are made outside
  the graphs, and the graphs share one pool for their intermediates (they replay one at a time on
  one stream, and each step's loss terms are added up before the next replay, as decoding's graphs);
- DeepSpeed cannot sit inside a captured step: its engine still builds and holds the module, and
  the step bypasses `engine.step` (at ZeRO 0 in one process that step is AdamW and the clipping,
  which this does the same way; engine.py). The refusals (`check_step_graph`) are where it is not.
- a capture that fails (an operation a graph cannot hold) is logged and the stage steps eagerly on
  its buckets from then on, as decoding's graphs do: a graph is an optimisation, never a requirement;
- each bucket's first batch runs forward and backward eagerly on a side stream before its capture
  (as PyTorch asks: libraries set up handles and workspaces outside a graph), with no optimiser step,
  and its gradients are then discarded; the capture records without running and one replay makes the
  step. With dropout that warm-up draws masks, so steps draw other masks than an eager run's.
On a CPU (no graphs) the same bucketed step with its tensor learning rate runs eagerly: the tests'
faithfulness check of this path against today's step.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

import torch

from .data.batching import Batch
from .data.buckets import bucket_of, pad_to_bucket
from .decode import amp
from .errors import ConfigError

log = logging.getLogger(__name__)

MAX_GRAPHS = 128  # buckets captured per stage; later buckets step eagerly (padded), logged once


def check_step_graph(cfg, method_cls) -> None:
    """Raise ValueError saying why training.step_graph cannot apply to trial config `cfg`."""
    t = cfg.training
    if not t.step_graph:
        return
    if t.batch_policy != "paper":
        raise ValueError("applies to the paper batch policy only (training.batch_policy: paper): token-budget "
                         "batches vary in examples and width too much for a graph per bucket")
    if t.zero_stage:
        raise ValueError("needs training.zero_stage 0: ZeRO 1-2 shard the optimiser inside DeepSpeed's step, "
                         "which a captured step bypasses")
    if t.precision == "fp16":
        raise ValueError("cannot run with fp16: its loss scaler reads the gradients on the host to skip steps")
    if t.compile:
        raise ValueError("cannot run with training.compile: choose one (compiled blocks with dynamic shapes "
                         "are not captured)")
    if not method_cls.graph_step():
        raise ValueError(f"the step of method {cfg.method.name} cannot be one graph (a hook between backward "
                         "and the optimiser, or batches that read the model; l2kd/methods/catalog.py)")


def graph_key(batch: Batch) -> tuple:
    """The shapes a captured step is fixed to: one graph (and one set of input buffers) per key."""
    return (batch.n_examples, *batch.inputs.shape, batch.n_qa, len(batch.positions))


@dataclass
class _Graph:
    graph: "torch.cuda.CUDAGraph"
    terms: dict[str, torch.Tensor]


class StepGraph:
    """A stage's steps: `prepare(batch)` pads a host batch to its bucket (loader thread), `run(batch,
    lr)` makes one optimisation step and returns its loss terms (device tensors, read by nobody
    until the loop's log window)."""

    def __init__(self, engine, method, ctx, training, forward: Callable[..., torch.Tensor]):
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("training.step_graph: runs in one process only (several processes reduce "
                              "their gradients inside DeepSpeed's step)")
        self.method, self.ctx, self.device, self.amp_dtype = method, ctx, ctx.device, ctx.amp_dtype
        self.module, self.fused, self.forward = engine.target_logits, training.fused_qa_lm, forward
        self.max_grad_norm, self.pad, self.max_width = training.max_grad_norm, ctx.tokenizer.ids.pad, ctx.max_len
        self.params = list(engine.params)
        self.capture = self.device.type == "cuda"
        self.lr = torch.zeros((), dtype=torch.float32, device=self.device)
        # the engine's groups and their hyperparameters; the learning rate is the one tensor
        groups = [{"params": g["params"], "weight_decay": g["weight_decay"], "betas": g["betas"], "eps": g["eps"]}
                  for g in engine.optimizer.param_groups]
        self.optimizer = torch.optim.AdamW(groups, lr=self.lr, fused=True, capturable=self.capture)
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr
        self.grads = [torch.zeros_like(p) for p in self.params]
        for p, g in zip(self.params, self.grads):
            p.grad = g
        self._make_optimizer_state()
        self.buffers: dict[tuple, Batch] = {}
        self.graphs: dict[tuple, _Graph] = {}
        self.pool = torch.cuda.graph_pool_handle() if self.capture else None
        self._full_logged = False

    def _make_optimizer_state(self) -> None:
        """AdamW's state, made before any capture (made inside one, a replay would reset it): a step
        at lr 0 over zero gradients moves no weight and leaves zero moments; its counts are reset."""
        self.optimizer.step()
        for state in self.optimizer.state.values():
            state["step"].zero_()

    def prepare(self, batch: Batch) -> Batch:
        return pad_to_bucket(batch, bucket_of(batch, self.max_width), self.pad)

    def run(self, batch: Batch, lr: float) -> dict[str, torch.Tensor]:
        key = graph_key(batch)
        static = self.buffers.get(key)
        if static is None:  # the bucket's input buffers: every later batch of it is copied into these
            static = self.buffers[key] = batch._map(lambda t: t.to(self.device, copy=True))
        else:
            for name, t in batch.tensors().items():
                getattr(static, name).copy_(t, non_blocking=True)
        self.lr.fill_(lr)  # a fill kernel with the value as its argument: no copy, no wait
        if not self.capture:
            return self._step(static)
        g = self.graphs.get(key)
        if g is None:
            if len(self.graphs) >= MAX_GRAPHS:
                if not self._full_logged:
                    log.info("step graph: %d buckets captured; further buckets step eagerly", MAX_GRAPHS)
                    self._full_logged = True
                return self._step(static)
            g = self._capture(static)
            if g is None:  # the capture failed (logged): this and every later step run eagerly
                return self._step(static)
            self.graphs[key] = g
        g.graph.replay()
        return g.terms

    def _step(self, b: Batch, optimise: bool = True) -> dict[str, torch.Tensor]:
        """The step of fixed shapes: what a graph records, and what runs eagerly on a CPU."""
        torch._foreach_zero_(self.grads)
        logits = self.forward(self, b, self.fused)
        terms = self.method.static_loss_terms(self.ctx, b, logits)
        del logits
        sum(terms.values()).backward()
        if not (self.capture and torch.cuda.is_current_stream_capturing()):
            self._check_gradient_buffers()
        torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm, foreach=True)
        if optimise:
            self.optimizer.step()
        return {k: v.detach() for k, v in terms.items()}

    def _check_gradient_buffers(self) -> None:
        """Backward must have accumulated into the fixed buffers (zeroed at each step's start), not
        put new tensors in their place: every graph reads those buffers. A host-side check."""
        if any(p.grad is not g for p, g in zip(self.params, self.grads)):
            raise RuntimeError("step graph: backward replaced a parameter's gradient buffer")

    def logits(self, input_ids, positions, *task_ids) -> torch.Tensor:
        """training.forward's view of an engine: the module under autocast, as DeepSpeed's forward
        runs it (autocast's weight-cast cache off: casts cached in a capture would be freed under it)."""
        with amp(self.device, self.amp_dtype, cache_enabled=False):
            return self.module(input_ids, positions, *task_ids)

    def _capture(self, static: Batch) -> _Graph | None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._step(static, optimise=False)  # warm-up: no optimiser step; its gradients are zeroed next
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: the loader thread pins the next batches' host memory meanwhile, which the
            # default ("global") capture mode forbids in any thread while a capture runs
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                terms = self._step(static)
        except Exception as e:  # noqa: BLE001 - a graph is an optimisation: step eagerly, never fail a trial
            # nothing ran in the failed capture (a capture records, it does not execute): the weights,
            # the optimiser state and the gradient buffers are as before it
            log.warning("step graph: capture failed (%s: %s); the stage steps eagerly (bucketed)",
                        type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
            self.capture = False
            self.graphs.clear()
            return None
        log.info("step graph: bucket %s captured (%d so far)", tuple(static.inputs.shape), len(self.graphs) + 1)
        return _Graph(graph, terms)

    def close(self) -> None:
        """Free the graphs, buffers and optimiser state; the parameters keep no gradient."""
        self.graphs.clear()
        self.buffers.clear()
        self.optimizer = None
        for p in self.params:
            p.grad = None
        self.grads = []
