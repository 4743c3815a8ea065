"""A finished teacher as a student uses it: from its folder, or from its weights in memory (Ray's
object store), loaded frozen on the student's device."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch

from ..checkpoint import PackedCheckpoint, latest_checkpoint
from ..errors import ArtifactError
from ..backbone import use_gelu
from ..model import TargetLogits
from ..tokenizer import Tokenizer

TeacherSource = Union[Path, PackedCheckpoint]  # a teacher folder, or its weights in memory


def teacher_folder(source: TeacherSource) -> Path:
    return source.path if isinstance(source, PackedCheckpoint) else Path(source)


def load_teacher(source: TeacherSource, device: torch.device, amp_dtype: torch.dtype | None = None,
                 compile_blocks: bool = False, gelu: str | None = None) -> tuple[TargetLogits, Tokenizer]:
    """The teacher as a frozen eval-mode module on `device`, its weights kept for autocast to
    `amp_dtype` (see TargetLogits.frozen), with its tokenizer; `gelu`: the GELU kernel its blocks
    run (the student's setting; a teacher trained before the setting existed ran gelu_new)."""
    ckpt = source if isinstance(source, PackedCheckpoint) else latest_checkpoint(Path(source))
    if ckpt is None or not ckpt.complete:
        raise ArtifactError(f"{teacher_folder(source)}: no finished teacher here")
    model = ckpt.model()
    if gelu is not None:
        use_gelu(model, gelu)
    return TargetLogits.frozen(model.to(device), amp_dtype, compile_blocks), ckpt.tokenizer()
