"""multitask: the upper bound. One stage over the union of every task's training data.

As LAMOL's `multitask` it trains on the shuffled union by default (the `concat` sampler); QA + LM by
default (L2KD's `multilm`, the paper's "Multi (QA+LM)" rows) or QA only with `qa_only` ("Multi
(QA)"). Every task keeps its own generation token for the LM rows (L2KD's --multitask_specific),
since LAMOL's single shared token is an artefact of its code, not a design choice.

`sampler` chooses how rows become batches (l2kd/samplers.py says exactly what each mode does):
concat (the reference), uniform, temperature, uncertainty (CA-MTL's MT-Uncertainty). Every mode
keeps the paper policy's batch size and an epoch of ceil(N / B) steps, N = the union's size.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from ..data.batching import collate, paper_batch_size
from ..decode import amp
from ..model import TargetLogits
from ..samplers import MixtureSampler, UncertaintySampler, answer_entropy, task_probabilities
from ..tasks import TASKS
from .base import LMParams, QALMMethod
from .registry import register


class MultitaskParams(LMParams):
    qa_only: bool = Field(False, description="train the QA loss only (the paper's 'Multi (QA)')")
    sampler: Literal["concat", "uniform", "temperature", "uncertainty"] = Field(
        "concat", description="how rows become batches: concat (shuffled union, the reference), "
        "uniform (task drawn uniformly per row), temperature (task drawn with p ∝ size^(1/τ)), "
        "uncertainty (CA-MTL's MT-Uncertainty: top-B of T·m candidates by answer entropy)")
    temperature: float = Field(2.0, gt=0, description="τ of the temperature sampler (1: by size)")
    candidates_per_task: int | None = Field(
        None, ge=1, description="uncertainty: candidate rows per task and step (default: the batch "
        "size B, as CA-MTL; at least ceil(B/T)); the step's extra no-grad forward runs over T·m rows")
    uncertainty_form: Literal["code", "paper"] = Field(
        "code", description="uncertainty score: 'code' Ĥ·H̄_t/max H̄ (CA-MTL's code), 'paper' Ĥ alone")


@register("multitask")
class Multitask(QALMMethod):
    Params = MultitaskParams

    def __init__(self, params):
        super().__init__(params)
        self._drawn: dict[str, int] = {}
        self._labels: dict[str, torch.Tensor | None] = {}

    @property
    def qa_only(self) -> bool:  # type: ignore[override]
        return self.p.qa_only

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.training.step_graph and cfg.method.params.get("sampler") == "uncertainty":
            raise ValueError("sampler uncertainty reads the model between steps; with training.step_graph "
                             "use concat, uniform or temperature")
        super().check_config(cfg)

    def stages(self, order):
        return [tuple(order)]

    # ------------------------------------------------------------------ samplers
    def batches(self, ctx, rows, epoch):
        if self.p.sampler == "concat":
            return super().batches(ctx, rows, epoch)
        tasks = [t for t in ctx.cfg.tasks if any(r.task == t for r in rows)]
        task_of = np.asarray([tasks.index(r.task) for r in rows])
        groups = [np.flatnonzero(task_of == k) for k in range(len(tasks))]
        t = ctx.cfg.training
        size = paper_batch_size(len(rows), t.min_n_steps, t.min_batch_size)
        rng = np.random.default_rng(ctx.seed("batches", ctx.stage, epoch))
        if self.p.sampler == "uncertainty":
            m = max(self.p.candidates_per_task or size, -(-size // len(groups)))  # T·m ≥ B always
            sampler = UncertaintySampler(
                groups, size, m,
                lambda idx: self.entropies(ctx, [rows[i] for i in idx]), rng, self.p.uncertainty_form)
        else:
            probs = task_probabilities([len(g) for g in groups], self.p.sampler, self.p.temperature)
            sampler = MixtureSampler(groups, probs, size, rng)
        return _Counted(sampler, task_of, tasks, self._drawn)

    @torch.no_grad()
    def entropies(self, ctx, rows) -> np.ndarray:
        """Ĥ of each candidate row under the model being trained (eval mode: no dropout; CA-MTL
        scored in train mode, with dropout on)."""
        model = ctx.model
        batch = collate(rows, ctx.tokenizer.ids.pad, with_lm=False,
                        task_index=self.task_index(ctx)).to(ctx.device)
        was_training = model.training
        model.eval()
        try:
            with amp(ctx.device, ctx.amp_dtype):
                logits = TargetLogits(model)(batch.inputs, batch.positions, batch.task_ids)
        finally:
            model.train(was_training)
        labels = [self._label_ids(ctx, r.task) for r in rows]
        return answer_entropy(logits, batch.row, len(rows), labels).cpu().numpy()

    def _label_ids(self, ctx, task: str) -> torch.Tensor | None:
        """The distinct first tokens of a classification task's label words (its verbaliser)."""
        if task not in self._labels:
            words = TASKS.get(task).label_words
            firsts = sorted({ids[0] for ids in ctx.tokenizer.encode_batch(list(words)) if ids})
            self._labels[task] = torch.tensor(firsts) if len(firsts) >= 2 else None
        return self._labels[task]

    # ------------------------------------------------------------------ bookkeeping
    def begin_training(self, ctx, tasks):
        self._drawn = {t: 0 for t in tasks}
        super().begin_training(ctx, tasks)

    def end_stage(self, ctx, tasks) -> dict[str, Any]:
        info = {"sampler": self.p.sampler, **super().end_stage(ctx, tasks)}
        if self.p.sampler != "concat":
            info["trained_rows_per_task"] = dict(self._drawn)
        return info


class _Counted:
    """A plan that counts the rows it yields per task (for the stage's info)."""

    def __init__(self, plan, task_of: np.ndarray, names: list[str], counts: dict[str, int]):
        self.plan, self.task_of, self.names, self.counts = plan, task_of, names, counts

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self):
        for idx in self.plan:
            for k, n in zip(*np.unique(self.task_of[idx], return_counts=True)):
                self.counts[self.names[int(k)]] += int(n)
            yield idx
