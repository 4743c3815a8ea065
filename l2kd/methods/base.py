"""The method interface: a few hooks the trial calls, in this order, for every stage.

    stages(order)                      which tasks each stage trains (once, at the start)
    replay(ctx, tasks)        -> rows   before the stage's task tokens exist (LAMOL samples here)
    train_rows(ctx, tasks)    -> rows   the stage's own rows (Seq-KD swaps in teacher answers)
    prepare_model(ctx, model)           before the stage's engine exists: add or freeze modules
    begin_training(ctx, tasks)          the model is on its device; load teachers, anchors, memories
    batches(ctx, rows, epoch) -> plan   one epoch's index lists into rows (sized; may be lazy)
    loss_terms(ctx, batch, logits) -> {name: tensor}   summed by the trial, each logged
    after_backward(ctx)                 gradients exist (GEM projects them)
    end_stage(ctx, tasks)               training done (EWC/MAS importance, GEM memories)
    state_dict() / load_state_dict()    everything a task-boundary checkpoint must carry

A hook returns values; it never reaches into the trial's state.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from ..config import Strict
from .catalog import LIFELONG, MethodFacts
from ..context import TrialContext
from ..data.batching import Batch, plan_epoch
from ..data.encoding import TrainRow
from pydantic import Field

from ..losses import ans_weighted, masked_mean, token_ce, weighted_nll


class MethodParams(Strict):
    """Parameters every method shares."""


class LMParams(MethodParams):
    lm_lambda: float = Field(0.25, ge=0, description="weight of the LM loss: total = qa + lm_lambda * lm")
    ans_weight: float = Field(5.0, gt=0, description="cross-entropy weight of the __ans__ target (LM loss)")


class Method:
    name: ClassVar[str] = ""
    Params: ClassVar[type[MethodParams]] = MethodParams
    facts: ClassVar[MethodFacts] = MethodFacts("", LIFELONG)  # set by @register (catalog.py)
    # Word-KD's loss: the teacher's distribution at every target position of the current task
    uses_teacher_logits: ClassVar[bool] = False

    def __init__(self, params: MethodParams):
        self.p = params

    # ------------------------------------------------------------------ structure
    # What the method is (catalog.py), asked of the class: nothing outside l2kd/methods/ matches names
    @classmethod
    def kind(cls) -> str:
        """The part its trials play: catalog.LIFELONG, SINGLE (one task alone) or MULTITASK."""
        return cls.facts.kind

    @classmethod
    def display_name(cls) -> str:
        return cls.facts.display_name

    @classmethod
    def needs_teachers(cls) -> bool:
        """Whether it learns from L2KD teachers at all (which ones a config needs: teachers_needed)."""
        return cls.facts.teachers

    @classmethod
    def graph_step(cls) -> bool:
        """Whether its step can run as one CUDA graph over bucketed batches (training.step_graph)."""
        return cls.facts.graph_step

    @property
    def uses_lm(self) -> bool:
        """Whether batches need the LM rows (gen_X/gen_Y) at all."""
        return False

    def teachers_needed(self, cfg) -> list[str]:
        """Tasks whose L2KD teacher this method needs for a trial with config `cfg`: each task's."""
        return list(cfg.tasks) if self.needs_teachers() else []

    def seq_kd_modes(self, cfg) -> tuple[str, ...]:
        """Decoding modes of the teacher-decoded training sets (Seq-KD data) this method reads; the
        teacher store makes them once, beside each teacher."""
        return ()

    @classmethod
    def check_tasks(cls, tasks: list[str]) -> None:
        """Raise ValueError when the method cannot train this task order."""

    @classmethod
    def check_config(cls, cfg) -> None:
        """Raise ValueError (naming the key) when the method cannot run with these settings."""

    def task_index(self, ctx: TrialContext) -> dict[str, int] | None:
        """Task name -> index when batches must carry each row's task (task-conditioned models)."""
        return None

    def stages(self, order: list[str]) -> list[tuple[str, ...]]:
        return [(t,) for t in order]

    # ------------------------------------------------------------------ hooks
    def replay(self, ctx: TrialContext, tasks: tuple[str, ...]) -> tuple[list[TrainRow], dict]:
        return [], {}

    def train_rows(self, ctx: TrialContext, tasks: tuple[str, ...]) -> list[TrainRow]:
        return [row for t in tasks for row in ctx.train_rows(t)]

    def prepare_model(self, ctx: TrialContext, model: torch.nn.Module) -> None:
        pass

    def begin_training(self, ctx: TrialContext, tasks: tuple[str, ...]) -> None:
        pass

    def batches(self, ctx: TrialContext, rows: list[TrainRow], epoch: int) -> Sequence[np.ndarray]:
        """The configured batch policy over all rows, reshuffled per stage and epoch."""
        rng = np.random.default_rng(ctx.seed("batches", ctx.stage, epoch))
        return plan_epoch(rows, ctx.cfg.training, rng)

    def loss_terms(self, ctx: TrialContext, batch: Batch, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """`logits` holds one row per target position: batch.n_qa QA positions, then LM positions."""
        return {"qa": token_ce(logits, batch.targets, select=batch.qa_positions if batch.with_lm else None)}

    def static_loss_terms(self, ctx: TrialContext, batch: Batch, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """loss_terms for a bucketed batch (data/buckets.py) in a step of fixed shapes (step_graph.py):
        the same values, with no host value of the batch read but its shapes and n_qa. Padded
        positions carry weight 0. loss_terms is that already where it reads nothing else."""
        return self.loss_terms(ctx, batch, logits)

    def after_backward(self, ctx: TrialContext) -> None:
        pass

    def end_stage(self, ctx: TrialContext, tasks: tuple[str, ...]) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class QALMMethod(Method):
    """QA cross-entropy plus lm_lambda x LM cross-entropy, with __ans__ weighted in the LM term."""

    Params = LMParams
    qa_only: bool = False

    @property
    def uses_lm(self) -> bool:
        return not self.qa_only

    def _weights(self, ctx: TrialContext, vocab: int) -> torch.Tensor:
        """The class weights over the vocabulary: made once per vocabulary size and device, not in
        every step (each making is a few kernel launches on a launch-bound GPU step)."""
        key = (vocab, ctx.tokenizer.ids.ans, ctx.device)
        cached = getattr(self, "_weight_cache", None)
        if cached is None or cached[0] != key:
            self._weight_cache = (key, ans_weighted(vocab, ctx.tokenizer.ids.ans, self.p.ans_weight, ctx.device))
        return self._weight_cache[1]

    def loss_terms(self, ctx, batch, logits):
        nll, w = weighted_nll(logits, batch.targets, self._weights(ctx, logits.shape[-1]))
        if not batch.with_lm:
            return {"qa": masked_mean(nll, w)}
        qa = batch.qa_positions
        return {"qa": masked_mean(nll, w, qa), "lm": self.p.lm_lambda * masked_mean(nll, w, ~qa)}
