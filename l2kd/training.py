"""One stage's optimisation: the logits at a batch's targets (`forward`) and the stage's epochs of
steps over the method's batch plans (`train_stage`), with the learning-rate schedule and the
trial's step events. The trial (l2kd/trial.py) builds the engine and calls this once per stage."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import torch

from .context import TrialContext
from .data.batching import collate
from .data.encoding import TrainRow
from .data.prefetch import prefetch
from .engine import Engine
from .methods import Method
from .schedule import LinearWarmupDecay


def forward(engine: Engine, batch, fused: bool) -> torch.Tensor:
    """Logits at the batch's target positions: QA positions first, then LM positions. With `fused`
    the QA and LM rows share one forward call; otherwise two calls, as the reference did."""
    # task ids go along only for task-conditioned models (multitask_ca), the plain call stays as it was
    task = () if batch.task_ids is None else (batch.task_ids,)
    if fused or not batch.with_lm:
        return engine.logits(batch.inputs, batch.positions, *task)
    B, W = batch.n_examples, batch.inputs.shape[1]
    qa = engine.logits(batch.inputs[:B], batch.positions[: batch.n_qa], *(t[:B] for t in task))
    lm = engine.logits(batch.inputs[B:], batch.positions[batch.n_qa:] - B * W, *(t[B:] for t in task))
    return torch.cat([qa, lm])


class EagerStep:
    """Today's step through the DeepSpeed engine: batches as collated, any method."""

    def __init__(self, engine: Engine, method: Method, ctx: TrialContext, fused: bool):
        self.engine, self.method, self.ctx, self.fused = engine, method, ctx, fused

    def prepare(self, batch):
        return batch

    def run(self, batch, lr: float) -> dict[str, torch.Tensor]:
        batch = batch.to(self.ctx.device)
        logits = forward(self.engine, batch, self.fused)
        terms = self.method.loss_terms(self.ctx, batch, logits)
        # the losses keep what backward needs (one direction each): the (positions x vocabulary)
        # logits need not stay alive through backward and the method's after_backward
        del logits
        self.engine.backward(sum(terms.values()))
        self.method.after_backward(self.ctx)
        self.engine.step(lr)
        return terms

    def close(self) -> None:
        pass


def make_step(engine: Engine, method: Method, ctx: TrialContext, graph: bool):
    """The stage's step: the paper policy's step graph (training.step_graph; l2kd/step_graph.py) or
    today's eager step."""
    t = ctx.cfg.training
    if graph:
        from .step_graph import StepGraph

        return StepGraph(engine, method, ctx, t, forward)
    return EagerStep(engine, method, ctx, t.fused_qa_lm)


def train_stage(ctx: TrialContext, method: Method, engine: Engine, rows: list[TrainRow],
                tasks: tuple[str, ...], on_epoch_end: Callable[[int], None]) -> dict[str, Any]:
    t = ctx.cfg.training
    sched = LinearWarmupDecay.for_task(t.lr, len(rows), t.epochs, t.warmup_ratio)
    pad = ctx.tokenizer.ids.pad
    seen = steps = 0
    tokens = 0
    running: dict[str, torch.Tensor] = {}
    window_start, window_examples, window_tokens, window_steps = time.perf_counter(), 0, 0, 0
    plans = [method.batches(ctx, rows, e) for e in range(t.epochs)]  # may be lazy (uncertainty)
    task_index = method.task_index(ctx)
    total_steps = sum(len(p) for p in plans)
    pin = ctx.device.type == "cuda"
    step = make_step(engine, method, ctx, t.step_graph)

    def collated(plan) -> Iterator:
        for idx in plan:
            batch = step.prepare(collate([rows[i] for i in idx], pad, with_lm=method.uses_lm, task_index=task_index))
            yield batch.pin() if pin else batch

    for epoch, plan in enumerate(plans):
        # a plan fixed in advance is collated ahead, off the critical path; a lazy one (a sampler
        # that reads the model) runs in step with training
        source = prefetch(collated(plan)) if isinstance(plan, list) else collated(plan)
        for batch in source:
            seen += batch.n_examples
            terms = step.run(batch, sched(seen))
            steps += 1
            tokens += batch.n_tokens
            window_examples += batch.n_examples
            window_tokens += batch.n_tokens
            window_steps += 1
            for k, v in terms.items():
                running[k] = running.get(k, 0) + v.detach()
            if steps % t.log_every == 0 or steps == total_steps:
                # The only host read of the loop: once per log window, not per step.
                values = {k: float(v) / window_steps for k, v in running.items()}
                dt = max(time.perf_counter() - window_start, 1e-9)
                ctx.emit("step", stage=ctx.stage, tasks=list(tasks), epoch=epoch + 1, epochs=t.epochs,
                         step=steps, steps=total_steps, loss=sum(values.values()), terms=values,
                         examples_per_s=window_examples / dt, tokens_per_s=window_tokens / dt,
                         lr=sched(seen))
                running = {}
                window_start, window_examples, window_tokens, window_steps = time.perf_counter(), 0, 0, 0
        on_epoch_end(epoch + 1)
    step.close()
    return {"steps": steps, "examples": seen, "tokens": tokens, "rows": len(rows),
            "batch_policy": t.batch_policy}
