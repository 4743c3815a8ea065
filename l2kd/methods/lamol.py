"""lamol: QA + LM losses with pseudo-replay of earlier tasks sampled from the model itself."""

from __future__ import annotations

from pydantic import Field

from ..data.encoding import TrainRow, encode_train
from ..decode import generate_pseudo, pseudo_counts
from .base import LMParams, QALMMethod
from .registry import register


class LamolParams(LMParams):
    gen_ratio: float = Field(
        0.2, ge=0, description="pseudo samples per stage = ceil(gen_ratio x |current task|), split "
        "equally over the earlier tasks (LAMOL's gen_lm_sample_percentage; scripts used 0.2)")


@register("lamol")
class Lamol(QALMMethod):
    Params = LamolParams

    def replay(self, ctx, tasks):
        """Sample the earlier tasks before the new task's token exists (as the reference)."""
        previous = ctx.cfg.tasks[: ctx.cfg.tasks.index(tasks[0])]
        counts = pseudo_counts(sum(len(ctx.train[t]) for t in tasks), previous, self.p.gen_ratio)
        if not counts:
            return [], {}
        tokens = {t: ctx.tokenizer.task_id(t) for t in previous}
        # a sample is expected to be about as long as that task's longest real row (it sizes the
        # batches; LAMOL's cap, EOS or the model's length, still ends every sample)
        expect = {t: max(len(r.cqa) for r in ctx.train_rows(t)) for t in previous}
        samples, stats = generate_pseudo(
            ctx.model, tokens, counts, ctx.tokenizer.ids, max_total=ctx.max_len,
            settings=ctx.decode_settings(), device=ctx.device, amp_dtype=ctx.amp_dtype,
            seed=ctx.seed("pseudo", ctx.stage), stats=ctx.decode_stats, expect=expect)
        ids = ctx.tokenizer.ids
        rows: list[TrainRow] = [encode_train([], q, a, g, ids, ctx.max_len, task, is_pseudo=True)
                                for task, g, q, a in samples]
        info = stats.to_dict()
        info["per_task"] = counts
        info["samples"] = [{"task": task, "text": ctx.tokenizer.decode(q + [ids.ans] + a)}
                           for task, g, q, a in samples]
        return rows, info
