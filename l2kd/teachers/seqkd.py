"""Seq-KD data: a teacher's decoded answers to its task's training questions, decoded once per
teacher and decoding mode and kept beside the teacher (`distil-{mode}.json`), or precomputed
distil files; either is checked against the training set it replaces."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ..data.encoding import encode_prompt, join_answers, split_answers
from ..data.lamol_json import Example, read_lamol, to_lamol
from ..decode import DecodeSettings, decode
from ..errors import DataError
from ..io import write_json
from ..backbone import n_positions
from ..tokenizer import clean_up_tokenization
from .loading import TeacherSource, load_teacher, teacher_folder

SEQ_KD_SEED = "seq_kd"  # the seed label of a teacher's decoded answers (the store and Seq-KD decode alike)


def distil_file(teacher_dir: Path, mode: str) -> Path:
    return Path(teacher_dir) / f"distil-{mode}.json"


def decode_teacher_answers(source: TeacherSource, examples: list[Example], mode: str, *,
                           device: torch.device, amp_dtype, seed: int,
                           settings: DecodeSettings) -> list[Example]:
    """The teacher's answers to the training questions (the reference's --test_training_set)."""
    head, tok = load_teacher(source, device, amp_dtype)
    model = head.gpt2
    ids = tok.ids
    max_len = n_positions(model)
    C = tok.encode_batch([e.context for e in examples])
    Q = tok.encode_batch([e.question for e in examples])
    longest = max(len(join_answers(tok.encode_batch(list(e.answers)), ids.pad)) for e in examples)
    prompts = [encode_prompt(c, q, ids, max_len) for c, q in zip(C, Q)]
    outs = decode(model, prompts, longest, eos=ids.eos, pad=ids.pad, max_total=max_len,
                  settings=replace(settings, mode=mode), device=device, amp_dtype=amp_dtype,
                  seed=seed)
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
