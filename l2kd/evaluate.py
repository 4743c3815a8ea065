"""Evaluation: decode every test prompt of a task and score the answers.

The prompt is cq (context + question + __ans__, no task token, as the reference); answers may be as
long as the task's longest gold answer. Greedy by default (the paper); top-k sampling is seeded.
Predictions and gold go through LAMOL's tokenisation clean-up for every task but WOZ and WikiSQL.
"""

from __future__ import annotations

from typing import Any

from .conditioning import conditioned
from .context import TrialContext
from .decode import decode
from .metrics import ScoreInput, score
from .tasks import TASKS
from .tokenizer import clean_up_tokenization


def evaluate_task(ctx: TrialContext, model, task: str, tag: str) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Scores of `model` on `task`'s test set, and one prediction record per example."""
    spec = TASKS.get(task)
    examples = ctx.test[task]
    prompts, max_answer = ctx.prompts(task)
    ids = ctx.tokenizer.ids
    with conditioned(model, task):  # a task-conditioned model (multitask_ca) answers as task `task`
        outs = decode(model, prompts, max_answer, eos=ids.eos, pad=ids.pad, max_total=ctx.max_len,
                      settings=ctx.decode_settings(), device=ctx.device, amp_dtype=ctx.amp_dtype,
                      generator=ctx.generator("eval", tag, task), stats=ctx.decode_stats)
    tidy = clean_up_tokenization if spec.cleanup else (lambda s: s)
    preds = [tidy(ctx.tokenizer.decode(o)) for o in outs]
    refs = [[tidy(a) for a in ex.answers] for ex in examples]
    gold = [ex.gold for ex in examples] if spec.gold else None  # aligned by the data layer
    scored = score(spec.metrics, ScoreInput(preds, refs, [ex.id for ex in examples], task, gold))
    records = []
    for k, (ex, p, r) in enumerate(zip(examples, preds, refs)):
        rec = {"index": ex.index, "id": ex.id, "prediction": p, "references": r}
        rec.update({m: vals[k] for m, vals in scored.per_example.items()})
        records.append(rec)
    return scored.aggregate, records


def evaluate_all(ctx: TrialContext, model, tag: str) -> tuple[dict[str, dict[str, float]], dict[str, list]]:
    scores, preds = {}, {}
    for task in ctx.cfg.tasks:
        scores[task], preds[task] = evaluate_task(ctx, model, task, tag)
        ctx.emit("eval", tag=tag, task=task, scores=scores[task])
    return scores, preds
