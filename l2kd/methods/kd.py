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

from dataclasses import replace
from pathlib import Path
from typing import Union

import torch
from pydantic import Field

from ..checkpoint import PackedCheckpoint, latest_checkpoint
from ..context import TrialContext
from ..data import load_split
from ..data.encoding import encode_prompt, join_answers, split_answers
from ..data.lamol_json import Example, read_lamol, to_lamol
from ..decode import DecodeSettings, amp, decode
from ..errors import ArtifactError, DataError
from ..io import write_json
from ..losses import kl_each, masked_mean, weighted_nll
from ..model import TargetLogits
from ..tokenizer import Tokenizer, clean_up_tokenization
from .lamol import Lamol, LamolParams
from .registry import register


class KDParams(LamolParams):
    temperature: float = Field(2.0, gt=0, description="KD temperature T (the loss is scaled by T²)")


class SeqKDParams(LamolParams):
    decoding: str = Field("greedy", pattern="^(greedy|top_k)$",
                          description="how the teacher decodes the training answers: greedy (the "
                          "paper's wording) or top_k (the released distil files look sampled)")


class SeqKDSoftParams(KDParams, SeqKDParams):
    pass


# --------------------------------------------------------------------------- teachers
TeacherSource = Union[Path, PackedCheckpoint]  # a teacher folder, or its weights in memory


def teacher_folder(source: TeacherSource) -> Path:
    return source.path if isinstance(source, PackedCheckpoint) else Path(source)


def load_teacher(source: TeacherSource, device: torch.device, amp_dtype: torch.dtype | None = None,
                 compile_blocks: bool = False) -> tuple[TargetLogits, Tokenizer]:
    """The teacher as a frozen eval-mode module on `device`, its weights kept for autocast to
    `amp_dtype` (see TargetLogits.frozen), with its tokenizer."""
    ckpt = source if isinstance(source, PackedCheckpoint) else latest_checkpoint(Path(source))
    if ckpt is None or not ckpt.complete:
        raise ArtifactError(f"{teacher_folder(source)}: no finished teacher here")
    return TargetLogits.frozen(ckpt.model().to(device), amp_dtype, compile_blocks), ckpt.tokenizer()


def distil_file(teacher_dir: Path, mode: str) -> Path:
    return Path(teacher_dir) / f"distil-{mode}.json"


def decode_teacher_answers(source: TeacherSource, examples: list[Example], mode: str, *,
                           device: torch.device, amp_dtype, seed: int,
                           settings: DecodeSettings) -> list[Example]:
    """The teacher's answers to the training questions (the reference's --test_training_set)."""
    head, tok = load_teacher(source, device, amp_dtype)
    model = head.gpt2
    ids = tok.ids
    max_len = int(model.config.n_positions)
    C = tok.encode_batch([e.context for e in examples])
    Q = tok.encode_batch([e.question for e in examples])
    longest = max(len(join_answers(tok.encode_batch(list(e.answers)), ids.pad)) for e in examples)
    prompts = [encode_prompt(c, q, ids, max_len) for c, q in zip(C, Q)]
    outs = decode(model, prompts, longest, eos=ids.eos, pad=ids.pad, max_total=max_len,
                  settings=replace(settings, mode=mode), device=device, amp_dtype=amp_dtype,
                  generator=torch.Generator(device=device).manual_seed(seed))
    # As the reference's test decoder: decode with LAMOL's clean-up, several answers split at __pad__.
    answers = [tuple(clean_up_tokenization(tok.decode(part)) for part in split_answers(o, ids.pad))
               for o in outs]
    return [replace(e, answers=a) for e, a in zip(examples, answers)]


def teacher_answers(source: TeacherSource, train: list[Example], mode: str, *, device: torch.device,
                    amp_dtype, seed: int, settings: DecodeSettings) -> list[Example]:
    """Seq-KD data: the teacher's decoded training answers, decoded once per teacher and mode and
    cached beside the teacher (`distil-{mode}.json`), then checked against the training set."""
    path = distil_file(teacher_folder(source), mode)
    if not path.is_file():
        write_json(path, to_lamol(decode_teacher_answers(source, train, mode, device=device,
                                                         amp_dtype=amp_dtype, seed=seed,
                                                         settings=settings)))
    distil = read_lamol(path)
    check_aligned(distil, train, str(path))
    # the cache holds the (capped) training subset only: keep each item's training-file position
    return [replace(d, index=t.index) for d, t in zip(distil, train)]


def check_aligned(distil: list[Example], train: list[Example], source: str) -> None:
    """Seq-KD data must keep every id and context of the training examples, in order."""
    if len(distil) != len(train):
        raise DataError(f"{source}: {len(distil)} items, the training set has {len(train)}")
    for k, (d, t) in enumerate(zip(distil, train)):
        if d.id != t.id or d.context != t.context or d.question != t.question:
            raise DataError(f"{source}: item {k} ({d.id}) does not match training item {k} ({t.id}): "
                            "ids and contexts must be the same, in order")


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

    def begin_training(self, ctx: TrialContext, tasks: tuple[str, ...]) -> None:
        (task,) = tasks
        source = ctx.teachers[task]
        self.teacher, t_tok = load_teacher(source, ctx.device, ctx.amp_dtype, ctx.cfg.training.compile)
        in_map, col_map = vocabulary_maps(ctx.tokenizer, t_tok, task, str(teacher_folder(source)))
        self.input_map, self.col_map = in_map.to(ctx.device), col_map.to(ctx.device)

    def loss_terms(self, ctx, batch, logits):
        # one KL and one cross-entropy over all target positions, reduced by masks (no logits slices);
        # a batch with no current-task rows skips the teacher and the KL, one with no pseudo rows
        # the cross-entropy (all of the first task's batches): either term would be exactly 0
        has_current, has_pseudo = batch.n_pseudo < batch.n_examples, batch.n_pseudo > 0
        if has_current:
            with torch.no_grad(), amp(ctx.device, ctx.amp_dtype):
                t_logits = self.teacher(self.input_map[batch.inputs], batch.positions)
            kl = kl_each(logits, t_logits, self.p.temperature, self.col_map)
        if has_pseudo:
            nll, w = weighted_nll(logits, batch.targets, self._weights(ctx, logits.shape[-1]))
        qa, pseudo = batch.qa_positions, batch.pseudo_positions
        zero = None if has_current and has_pseudo else logits.new_zeros((), dtype=torch.float32)
        terms = {}
        for part, in_part in (("qa", qa), ("lm", ~qa)):
            scale = 1.0 if part == "qa" else self.p.lm_lambda
            terms[f"{part}_kd"] = (scale * masked_mean(kl, torch.ones_like(kl), in_part & ~pseudo)
                                   if has_current else zero)
            terms[f"{part}_ce"] = scale * masked_mean(nll, w, in_part & pseudo) if has_pseudo else zero
        return terms

    def end_stage(self, ctx, tasks):
        (task,) = tasks
        current = [r for r in self.train_rows(ctx, tasks) if not r.is_pseudo]
        diag = stage_diagnostics(ctx, self.teacher, self.input_map, self.col_map, task, current,
                                 self.p.temperature, teacher_folder(ctx.teachers[task]))
        self.teacher = None  # the teacher of a finished task is discarded (paper §1)
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
                               amp_dtype=ctx.amp_dtype, seed=ctx.seed("seq_kd", task),
                               settings=ctx.decode_settings())

    def seq_kd_modes(self, cfg) -> tuple[str, ...]:
        return () if cfg.data.distil_dir else (self.p.decoding,)

    def train_rows(self, ctx, tasks):
        return [row for t in tasks for row in ctx.train_rows(t, self.distilled(ctx, t), split="distil")]


@register("word_kd")
class WordKD(_WordKD, Lamol):
    Params = KDParams

    def teachers_needed(self, cfg) -> list[str]:
        return list(cfg.tasks)


@register("seq_kd")
class SeqKD(_SeqKDData, Lamol):
    Params = SeqKDParams

    def teachers_needed(self, cfg) -> list[str]:
        return [] if cfg.data.distil_dir else list(cfg.tasks)

    def end_stage(self, ctx, tasks):
        """The same diagnostics as Word-KD's, at T = 1 (Seq-KD learns the teacher's hard answers),
        where a teacher exists (not with precomputed distil files)."""
        info = super().end_stage(ctx, tasks)
        (task,) = tasks
        if ctx.cfg.data.distil_dir:
            return info
        source = ctx.teachers[task]
        teacher, t_tok = load_teacher(source, ctx.device, ctx.amp_dtype)
        in_map, col_map = vocabulary_maps(ctx.tokenizer, t_tok, task, str(teacher_folder(source)))
        current = [r for r in self.train_rows(ctx, tasks) if not r.is_pseudo]
        diag = stage_diagnostics(ctx, teacher, in_map.to(ctx.device), col_map.to(ctx.device), task,
                                 current, 1.0, teacher_folder(source))
        return {**info, "kd": diag}


@register("seq_kd_soft")
class SeqKDSoft(_WordKD, _SeqKDData, Lamol):
    Params = SeqKDSoftParams

    def teachers_needed(self, cfg) -> list[str]:
        return list(cfg.tasks)
