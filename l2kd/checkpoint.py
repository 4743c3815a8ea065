"""Task-boundary checkpoints: everything needed to continue a trial at its next stage.

A checkpoint describes itself: the weights (fp32) and model config (a LoRA model's adapters and
LAMOL's embedding rows, and how to rebuild its base: l2kd/lora.py), the tokenizer with the task
tokens added so far, the method's state, and the trial's result so far (R rows, metrics, pseudo
statistics, the config and its hash). Randomness needs no saved state: every stage draws from
generators seeded by (trial seed, stage, purpose), so a resumed stage draws what it would have.
Checkpoints are built under a temporary name and renamed into place; older ones are pruned.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import ArtifactError
from .io import atomic_dir, read_json, write_json
from .model import load_weights, model_from_state, read_weights, save_weights
from .results import TrialResult
from .tokenizer import EOS, Tokenizer

CHECKPOINTS = "checkpoints"
STATE = "state.json"
EOS_FILE = "tokenizer_eos.txt"  # only where the EOS is not GPT-2's (older checkpoints have none)


def _eos_of(folder: Path) -> str:
    f = folder / EOS_FILE
    return f.read_text(encoding="utf-8") if f.is_file() else EOS


def stage_dir(workdir: Path, stage: int) -> Path:
    return Path(workdir) / CHECKPOINTS / f"stage-{stage:02d}"


@dataclass
class Checkpoint:
    path: Path
    stages_done: int
    result: TrialResult

    @property
    def complete(self) -> bool:
        return self.result.complete

    def model(self):
        with _unreadable(self.path / "model.safetensors"):
            return load_weights(self.path)

    def tokenizer(self) -> Tokenizer:
        with _unreadable(self.path / "tokenizer.json"):
            return Tokenizer.from_json((self.path / "tokenizer.json").read_text(), f"checkpoint:{self.path}",
                                       _eos_of(self.path))

    def method_state(self) -> dict[str, Any]:
        f = self.path / "method_state.pt"
        with _unreadable(f):
            return torch.load(f, weights_only=False) if f.exists() else {}


@contextmanager
def _unreadable(path: Path) -> Iterator[None]:
    """A damaged checkpoint file (truncated, overwritten) as one ArtifactError naming it."""
    try:
        yield
    except ArtifactError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors, torch and the tokenizer each raise their own
        raise ArtifactError(f"{path}: unreadable checkpoint file ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160] if str(e) else ''}); start the trial afresh "
                            "(--fresh)") from None


@dataclass
class PackedCheckpoint:
    """A finished checkpoint's weights and tokenizer held in memory, e.g. a teacher shipped to every
    trial through Ray's object store. It answers like a Checkpoint; `path` is where it lives on disk
    (files derived from it, such as Seq-KD data, are kept beside it there)."""

    path: Path
    stages_done: int
    complete: bool
    config_json: str
    state: dict[str, torch.Tensor]
    tokenizer_json: str
    tokenizer_eos: str = EOS

    def model(self):
        return model_from_state(self.config_json, self.state, f"packed:{self.path}")

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_json(self.tokenizer_json, f"packed:{self.path}", self.tokenizer_eos)


def pack_checkpoint(ckpt: Checkpoint) -> PackedCheckpoint:
    config_json, state = read_weights(ckpt.path)
    return PackedCheckpoint(ckpt.path.parent.parent, ckpt.stages_done, ckpt.result.complete,
                            config_json, state, (ckpt.path / "tokenizer.json").read_text(),
                            _eos_of(ckpt.path))


def save_checkpoint(workdir: Path, model, tokenizer: Tokenizer, method_state: dict[str, Any],
                    result: TrialResult, keep_last: int = 1) -> Path:
    stage = result.stages_done - 1

    def fill(tmp: Path) -> None:
        save_weights(model, tmp)
        (tmp / "tokenizer.json").write_text(tokenizer.to_json())
        if tokenizer.eos_token != EOS:
            (tmp / EOS_FILE).write_text(tokenizer.eos_token, encoding="utf-8")
        if method_state:
            torch.save(method_state, tmp / "method_state.pt")
        write_json(tmp / STATE, {"stages_done": result.stages_done, "result": result.to_dict()})

    path = atomic_dir(stage_dir(workdir, stage), fill)
    for old in sorted((Path(workdir) / CHECKPOINTS).glob("stage-*"))[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def read_checkpoint(path: Path) -> Checkpoint:
    path = Path(path)
    state_file = path / STATE
    if not state_file.is_file():
        raise ArtifactError(f"{path}: not a trial checkpoint (no {STATE})")
    with _unreadable(state_file):
        state = read_json(state_file)
        return Checkpoint(path, int(state["stages_done"]), TrialResult.from_dict(state["result"], str(state_file)))


def latest_checkpoint(workdir: Path) -> Checkpoint | None:
    found = sorted((Path(workdir) / CHECKPOINTS).glob("stage-*"))
    return read_checkpoint(found[-1]) if found else None
