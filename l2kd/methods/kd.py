"""L2KD: word_kd, seq_kd and seq_kd_soft — the lifelong model learns each new task from a teacher.

The teacher of task t is a single-task LAMOL model (QA + LM) trained on t alone; the trial receives
its folder (`ctx.teachers[t]`) and never trains it. Pseudo-replay rows of earlier tasks always keep
plain cross-entropy: their teachers are gone (paper §2.3).

- word_kd: on current-task rows, cross-entropy is replaced by KL(teacher || student) at temperature
  T, times T², at the QA positions (answer + EOS) and at every LM position. qa = KD(current) +
  CE(pseudo), lm likewise, each a separate mean, total = qa + lm_lambda x lm (as the reference).
- seq_kd: the current task's training answers are replaced by the teacher's decoded answers, then
  ordinary LAMOL losses. Decoded once per teacher and decoding mode, cached in the teacher's folder;
  or read from precomputed `{task}_to_squad-distil-v2.0.json` files (`data.distil_dir`).
- seq_kd_soft: Word-KD along the teacher-decoded sequences.

Vocabulary mapping. Teacher and student share the base vocabulary and LAMOL's added tokens (same
ids); the teacher knows only its own task token. Student inputs are mapped onto the teacher's ids:
the current task's token -> the teacher's task token, every other task token -> the teacher's
__unk__ (they occur only in pseudo rows, which KD masks out). Teacher output columns are mapped onto
student columns the same way; student columns of other tasks' tokens get target probability 0.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field

from ..context import TrialContext
from ..data import load_split
from ..data.lamol_json import Example
from ..decode import amp
from ..errors import ArtifactError
from ..losses import grouped_means, kd_and_nll_each, kd_and_nll_masked, weighted_nll
from ..model import TargetLogits
from ..teachers.loading import load_teacher, teacher_folder
from ..teachers.seqkd import SEQ_KD_SEED, check_aligned, teacher_answers
from ..tokenizer import Tokenizer
from .base import Method
from .lamol import Lamol, LamolParams
from .registry import register
from .teacher_cache import TeacherCache

class KDParams(LamolParams):
    temperature: float = Field(2.0, gt=0, description="KD temperature T (the loss is scaled by T²)")
    teacher_cache_mib: int = Field(
        4096, ge=0,
        description="Word-KD: keep the frozen teacher's final hidden states at the stage's target "
        "positions (current-task rows x (answer + EOS + LM positions) x n_embd, in the autocast "
        "dtype) on the device when they fit this many MiB, made once a stage, so later steps run "
        "only the teacher's head; 0 runs the whole teacher every step. Same values up to rounding",
    )


class SeqKDParams(LamolParams):
    decoding: str = Field("greedy", pattern="^(greedy|top_k)$",
                          description="how the teacher decodes the training answers: greedy (the "
                          "paper's wording) or top_k (the released distil files look sampled)")


class SeqKDSoftParams(KDParams, SeqKDParams):
    pass


# --------------------------------------------------------------------------- Word-KD's step
def teacher_logits(teacher, input_map: torch.Tensor, batch, device, amp_dtype) -> torch.Tensor | None:
    """The teacher's logits at the batch's current-task positions (in their order), from a forward
    over the current-task rows only: pseudo rows carry no KD term (their teachers are gone). None
    when the batch has no current-task rows."""
    if batch.n_pseudo == batch.n_examples:
        return None
    inputs, positions = batch.inputs, batch.positions
    if batch.kd_index is not None:  # a mixed batch: the current-task rows only
        inputs, positions = inputs.index_select(0, batch.kd_rows), batch.kd_flat
    with torch.no_grad(), amp(device, amp_dtype):
        return teacher(input_map[inputs], positions)


WORD_KD_TERMS = ("qa_kd", "lm_kd", "qa_ce", "lm_ce")  # the order of their groups in word_kd_terms


def word_kd_terms(batch, logits, t_logits, weight, temperature, col_map, lm_lambda) -> dict:
    """qa = KD(current) + CE(pseudo), lm likewise, each a separate mean (as the reference): the KL
    at current-task positions and the cross-entropy at pseudo ones, both from one pass over the
    logits (kd_and_nll_each), reduced to the four means in one grouped product. A term whose
    positions are absent is exactly 0."""
    if t_logits is None:  # only pseudo rows: plain cross-entropy
        values, w = weighted_nll(logits, batch.targets, weight)
    else:
        values, w = kd_and_nll_each(logits, batch.targets, weight, t_logits, temperature, col_map,
                                    batch.kd_index, batch.kd_index_host)
    n = len(batch.targets)
    is_lm = torch.arange(n, device=logits.device) >= batch.n_qa
    if batch.n_pseudo == 0:
        groups = is_lm.long()
    elif t_logits is None:
        groups = is_lm.long() + 2
    else:
        groups = is_lm.long() + 2 * batch.pseudo_positions.long()
    return _four_terms(grouped_means(values, w, groups, 4), lm_lambda)


def _four_terms(m: torch.Tensor, lm_lambda: float) -> dict:
    return dict(zip(WORD_KD_TERMS, (m[0], lm_lambda * m[1], m[2], lm_lambda * m[3])))


def word_kd_static_terms(batch, logits, t_logits, weight, temperature, col_map, lm_lambda) -> dict:
    """word_kd_terms for a step of fixed shapes (step_graph.py): the teacher's logits `t_logits` at
    every position of the (bucketed) batch, the KD positions a mask, the groups read from the
    batch's tensors alone; the same four terms (tested). The teacher then runs on pseudo rows too,
    whose logits the mask multiplies by 0: a fixed shape costs that."""
    pseudo = batch.pseudo_positions
    values, w = kd_and_nll_masked(logits, batch.targets, weight, t_logits, temperature, col_map, ~pseudo)
    is_lm = torch.arange(len(batch.targets), device=logits.device) >= batch.n_qa
    return _four_terms(grouped_means(values, w, is_lm.long() + 2 * pseudo.long(), 4), lm_lambda)


# --------------------------------------------------------------------------- the methods
def vocabulary_maps(s_tok: Tokenizer, t_tok: Tokenizer, task: str, source: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(input map, column map) between a student and the teacher of `task` (see the module's notes):
    student input id -> teacher input id, and teacher column -> student column."""
    if t_tok.base_fingerprint() != s_tok.base_fingerprint():
        raise ArtifactError(f"{source}: the teacher's vocabulary differs from the student's")
    t_task, s_task = t_tok.task_id(task), s_tok.task_id(task)
    if t_task is None:
        raise ArtifactError(f"{source}: the teacher has no token for task {task}")
    n_shared = s_tok.ids.unk + 1  # base vocabulary + __ans__ __pad__ __unk__, same ids in both
    in_map = torch.arange(len(s_tok))
    in_map[n_shared:] = t_tok.ids.unk
    in_map[s_task] = t_task
    col_map = torch.arange(len(t_tok))
    col_map[t_task] = s_task
    return in_map, col_map


def stage_diagnostics(ctx: TrialContext, teacher: TargetLogits, input_map: torch.Tensor,
                      col_map: torch.Tensor, task: str, rows: list, temperature: float,
                      teacher_dir: Path | None) -> dict:
    """The teacher's targets at `temperature` and the student's top-1 agreement with it after the
    stage, over a sample of the stage's current-task rows (see l2kd.diagnostics)."""
    from .. import diagnostics as D

    student = TargetLogits(ctx.model)
    was_training = ctx.model.training
    ctx.model.eval()
    try:
        seen = D.seen_ids(ctx.train_rows(task), len(ctx.tokenizer))
        sample = D.sample_rows(rows, D.SAMPLE_ROWS, ctx.seed("diagnostics", ctx.stage))
        out = D.measure(teacher, sample, ctx.tokenizer.ids.pad, seen, temperature, device=ctx.device,
                        amp_ctx=amp(ctx.device, ctx.amp_dtype), student=student, input_map=input_map,
                        col_map=col_map, n_student=len(ctx.tokenizer))
    finally:
        ctx.model.train(was_training)
    out["task"] = task
    if teacher_dir is not None:
        out.update(D.teacher_test_spread(teacher_dir, task))
    out["flags"] = D.degenerate_flags(out)
    return out


class _WordKD:
    """Word-KD losses and teacher handling; mixed into LAMOL-based methods."""

    uses_teacher_logits = True
    cache = None  # the teacher's cached hidden states of the current stage (teacher_cache.py), if made

    def begin_training(self, ctx: TrialContext, tasks: tuple[str, ...]) -> None:
        (task,) = tasks
        source = ctx.teachers[task]
        # a LoRA teacher over the student's base borrows the student's frozen base (no second copy)
        teacher, t_tok = load_teacher(source, ctx.device, ctx.amp_dtype, ctx.cfg.training.compile,
                                      ctx.cfg.model.gelu, student=ctx.model)
        in_map, col_map = vocabulary_maps(ctx.tokenizer, t_tok, task, str(teacher_folder(source)))
        self.use_teacher(teacher, in_map.to(ctx.device), col_map.to(ctx.device))
        # made once, it pays from the second epoch on; a step graph runs the teacher on every row instead
        if ctx.cfg.training.epochs > 1 and not ctx.cfg.training.step_graph:
            rows = [r for r in self.train_rows(ctx, tasks) if not r.is_pseudo]
            self.cache = TeacherCache.build(
                self.teacher, self.input_map, rows, budget_mib=self.p.teacher_cache_mib,
                pad=ctx.tokenizer.ids.pad, with_lm=self.uses_lm, device=ctx.device, amp_dtype=ctx.amp_dtype,
                tokens_per_batch=ctx.cfg.training.tokens_per_batch)

    def use_teacher(self, teacher, input_map: torch.Tensor, col_map: torch.Tensor,
                    cache: TeacherCache | None = None) -> None:
        """The stage's teacher (a frozen TargetLogits), its vocabulary maps and its cache, if made:
        what loss_terms reads (begin_training loads them; the bench hands in its own)."""
        self.teacher, self.input_map, self.col_map, self.cache = teacher, input_map, col_map, cache

    def loss_terms(self, ctx, batch, logits):
        if batch.n_pseudo == batch.n_examples:
            t_logits = None
        elif self.cache is not None:
            t_logits = self.cache.logits(batch)
        else:
            t_logits = teacher_logits(self.teacher, self.input_map, batch, ctx.device, ctx.amp_dtype)
        return word_kd_terms(batch, logits, t_logits, self._weights(ctx, logits.shape[-1]),
                             self.p.temperature, self.col_map, self.p.lm_lambda)

    def static_loss_terms(self, ctx, batch, logits):
        """The teacher over every row of the bucketed batch (a fixed shape; no cache), then the terms."""
        with torch.no_grad(), amp(ctx.device, ctx.amp_dtype, cache_enabled=False):
            t_logits = self.teacher(self.input_map[batch.inputs], batch.positions)
        return word_kd_static_terms(batch, logits, t_logits, self._weights(ctx, logits.shape[-1]),
                                    self.p.temperature, self.col_map, self.p.lm_lambda)

    def end_stage(self, ctx, tasks):
        (task,) = tasks
        current = [r for r in self.train_rows(ctx, tasks) if not r.is_pseudo]
        diag = stage_diagnostics(ctx, self.teacher, self.input_map, self.col_map, task, current,
                                 self.p.temperature, teacher_folder(ctx.teachers[task]))
        self.teacher = self.cache = None  # the teacher of a finished task is discarded (paper §1)
        return {**super().end_stage(ctx, tasks), "kd": diag}


class _SeqKDData:
    """Seq-KD training data: the teacher's decoded answers in place of the gold ones."""

    def distilled(self, ctx: TrialContext, task: str) -> list[Example]:
        train = ctx.train[task]
        if ctx.cfg.data.distil_dir:
            distil = load_split(task, "distil", ctx.cfg.data)
            check_aligned(distil, train, str(Path(ctx.cfg.data.distil_dir)))
            return distil
        return teacher_answers(ctx.teachers[task], train, self.p.decoding, device=ctx.device,
                               amp_dtype=ctx.amp_dtype, seed=ctx.seed(SEQ_KD_SEED, task),
                               settings=ctx.decode_settings())

    def seq_kd_modes(self, cfg) -> tuple[str, ...]:
        return () if cfg.data.distil_dir else (self.p.decoding,)

    def train_rows(self, ctx, tasks):
        return [row for t in tasks for row in ctx.train_rows(t, self.distilled(ctx, t), split="distil")]


@register("word_kd")
class WordKD(_WordKD, Lamol):
    Params = KDParams


def bench_steps(method: Method) -> tuple[Method, _WordKD]:
    """The two steps `cli.py bench` times for a trial of `method`: its step without a teacher (its
    own; a Word-KD method's is the LAMOL step whose cross-entropy the KL replaces) and a Word-KD
    step, which gives a teacher's cost (its own, at its temperature; for any other method Word-KD
    with that method's LM settings, since a grid's KD cells are costed from it)."""
    lm = {k: v for k, v in method.p.model_dump().items() if k in LamolParams.model_fields}
    if isinstance(method, _WordKD):
        return Lamol(LamolParams(**lm)), method
    return method, WordKD(KDParams(**lm))


@register("seq_kd")
class SeqKD(_SeqKDData, Lamol):
    Params = SeqKDParams

    def teachers_needed(self, cfg) -> list[str]:
        return [] if cfg.data.distil_dir else super().teachers_needed(cfg)  # precomputed answers: none

    def end_stage(self, ctx, tasks):
        """The same diagnostics as Word-KD's, at T = 1 (Seq-KD learns the teacher's hard answers),
        where a teacher exists (not with precomputed distil files)."""
        info = super().end_stage(ctx, tasks)
        (task,) = tasks
        if ctx.cfg.data.distil_dir:
            return info
        source = ctx.teachers[task]
        teacher, t_tok = load_teacher(source, ctx.device, ctx.amp_dtype, student=ctx.model)
        in_map, col_map = vocabulary_maps(ctx.tokenizer, t_tok, task, str(teacher_folder(source)))
        current = [r for r in self.train_rows(ctx, tasks) if not r.is_pseudo]
        diag = stage_diagnostics(ctx, teacher, in_map.to(ctx.device), col_map.to(ctx.device), task,
                                 current, 1.0, teacher_folder(source))
        return {**info, "kd": diag}


@register("seq_kd_soft")
class SeqKDSoft(_WordKD, _SeqKDData, Lamol):
    Params = SeqKDSoftParams
