"""A finished teacher as a student uses it: from its folder, or from its weights in memory (Ray's
object store), loaded frozen on the student's device; a LoRA teacher over a LoRA student's base
holds the student's frozen base tensors, not a copy (l2kd.lora.share_frozen_base)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Union

import torch

from .. import lora
from ..checkpoint import PackedCheckpoint, latest_checkpoint
from ..errors import ArtifactError
from ..backbone import use_gelu
from ..model import TargetLogits
from ..tokenizer import Tokenizer

log = logging.getLogger(__name__)
TeacherSource = Union[Path, PackedCheckpoint]  # a teacher folder, or its weights in memory
# False: a teacher always holds a base of its own, as before sharing existed (tests compare the two)
SHARE_STUDENT_BASE = True


def teacher_folder(source: TeacherSource) -> Path:
    return source.path if isinstance(source, PackedCheckpoint) else Path(source)


def load_teacher(source: TeacherSource, device: torch.device, amp_dtype: torch.dtype | None = None,
                 compile_blocks: bool = False, gelu: str | None = None,
                 student: torch.nn.Module | None = None) -> tuple[TargetLogits, Tokenizer]:
    """The teacher as a frozen eval-mode module on `device`, its weights kept for autocast to
    `amp_dtype` (see TargetLogits.frozen), with its tokenizer; `gelu`: the GELU kernel its blocks
    run (the student's setting; a teacher trained before the setting existed ran gelu_new).
    `student` (on `device`): where teacher and student are LoRA models over one base, the teacher
    takes the student's frozen base tensors, before it moves to the device (so the device never holds
    its copy), and they stay exactly as the student holds them (no stored casts)."""
    ckpt = source if isinstance(source, PackedCheckpoint) else latest_checkpoint(Path(source))
    if ckpt is None or not ckpt.complete:
        raise ArtifactError(f"{teacher_folder(source)}: no finished teacher here")
    model = ckpt.model()
    if gelu is not None:
        use_gelu(model, gelu)
    shared = lora.share_frozen_base(model, student) if student is not None and SHARE_STUDENT_BASE else []
    if shared:
        log.info("teacher %s: %.1f MiB of frozen base shared with the student", teacher_folder(source),
                 sum(p.numel() * p.element_size() for p in shared) / 2**20)
    return TargetLogits.frozen(model.to(device), amp_dtype, compile_blocks, keep=shared), ckpt.tokenizer()
