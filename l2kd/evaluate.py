"""Evaluation: decode every test prompt of a task and score the answers.

The prompt is cq (context + question + __ans__, no task token, as the reference); answers may be as
long as the task's longest gold answer. Greedy by default (the paper); top-k sampling is keyed by
(trial seed, evaluation, task, example). Predictions and gold go through LAMOL's tokenisation clean-up
for every task but WOZ and WikiSQL. All tasks of an evaluation decode in one call (their rows share
batches: fewer, fuller batches), except on a task-conditioned model, which answers one task at a time.
"""

from __future__ import annotations

from typing import Any

import torch

from .conditioning import conditioned, spec_from_config
from .context import TrialContext
from .decode import decode, row_keys
from .metrics import ScoreInput, score
from .tasks import TASKS
from .tokenizer import clean_up_tokenization


def _decode_tasks(ctx: TrialContext, model, tasks: list[str], tag: str) -> dict[str, list[list[int]]]:
    """Each task's new tokens for its test prompts, decoded together in one call."""
    prompts, budgets, keys, spans = [], [], [], {}
    for task in tasks:
        p, max_answer = ctx.prompts(task)
        spans[task] = (len(prompts), len(prompts) + len(p))
        prompts += p
        budgets += [max_answer] * len(p)
        keys.append(row_keys(ctx.seed("eval", tag, task), len(p), torch.device("cpu")))
    ids = ctx.tokenizer.ids
    outs = decode(model, prompts, budgets, eos=ids.eos, pad=ids.pad, max_total=ctx.max_len,
                  settings=ctx.decode_settings(), device=ctx.device, amp_dtype=ctx.amp_dtype,
                  keys=torch.cat(keys), stats=ctx.decode_stats)
    return {task: outs[a:b] for task, (a, b) in spans.items()}


def score_task(ctx: TrialContext, task: str, outs: list[list[int]]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Scores of decoded answers `outs` to `task`'s test set, and one prediction record per example."""
    spec = TASKS.get(task)
    examples = ctx.test[task]
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


def evaluate_task(ctx: TrialContext, model, task: str, tag: str) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Scores of `model` on `task`'s test set, and one prediction record per example."""
    with conditioned(model, task):  # a task-conditioned model (multitask_ca) answers as task `task`
        outs = _decode_tasks(ctx, model, [task], tag)[task]
    return score_task(ctx, task, outs)


def evaluate_all(ctx: TrialContext, model, tag: str) -> tuple[dict[str, dict[str, float]], dict[str, list]]:
    scores, preds = {}, {}
    tasks = list(ctx.cfg.tasks)
    if spec_from_config(model.config) is not None:
        decoded = None
    else:
        decoded = _decode_tasks(ctx, model, tasks, tag)
    for task in tasks:
        if decoded is None:
            scores[task], preds[task] = evaluate_task(ctx, model, task, tag)
        else:
            scores[task], preds[task] = score_task(ctx, task, decoded[task])
        ctx.emit("eval", tag=tag, task=task, scores=scores[task])
    return scores, preds
