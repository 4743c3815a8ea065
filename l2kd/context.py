"""What a method may read and use during a trial: settings, tokenizer, data, the model, seeds.

The trial builds one TrialContext and hands it to every method hook. Methods read from it and call
its helpers; they never replace its members (the trial owns the model and the stage counter).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from .config import TrialConfig
from .data.encoding import TrainRow, encode_prompt, encode_train, join_answers
from .data.lamol_json import Example
from .decode import DecodeSettings, DecodeStats
from .tasks import TASKS
from .tokenizer import Tokenizer


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed from any JSON-able parts: the same parts give the same seed in any process."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


@dataclass
class Encoded:
    """A task split tokenised once: context, question and answer ids per example."""

    C: list[list[int]]
    Q: list[list[int]]
    A: list[list[list[int]]]  # every reference answer


@dataclass
class TrialContext:
    cfg: TrialConfig
    tokenizer: Tokenizer
    device: torch.device
    amp_dtype: torch.dtype | None
    max_len: int  # the model's positions
    train: dict[str, list[Example]]
    test: dict[str, list[Example]]
    # task -> teacher folder or PackedCheckpoint; looked up only when a stage needs it (a lookup may
    # wait for a teacher still training in the background)
    teachers: Mapping[str, Any] = field(default_factory=dict)
    emit: Callable[..., None] = lambda *a, **k: None  # progress events (name, **fields)
    model: torch.nn.Module | None = None  # the module being trained in the current stage
    stage: int = 0
    decode_stats: DecodeStats = field(default_factory=DecodeStats)
    _encoded: dict[tuple[str, str], Encoded] = field(default_factory=dict)

    # ------------------------------------------------------------------ randomness
    def seed(self, *keys: Any) -> int:
        return derive_seed(self.cfg.seed, *keys)

    def generator(self, *keys: Any) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self.seed(*keys))

    # ------------------------------------------------------------------ encoding
    def encoded(self, task: str, split: str, examples: list[Example] | None = None) -> Encoded:
        """Tokenise a split once (context, question and each answer separately, as LAMOL).

        `split` names the example list: 'train' and 'test' are the trial's own; another name (e.g.
        'distil') must always come with the same `examples`."""
        key = (task, split)
        if key not in self._encoded:
            if examples is None:
                examples = (self.train if split == "train" else self.test)[task]
            tok = self.tokenizer
            flat = [a for ex in examples for a in ex.answers]
            flat_ids = iter(tok.encode_batch(flat))
            self._encoded[key] = Encoded(
                C=tok.encode_batch([ex.context for ex in examples]),
                Q=tok.encode_batch([ex.question for ex in examples]),
                A=[[next(flat_ids) for _ in ex.answers] for ex in examples])
        return self._encoded[key]

    def train_rows(self, task: str, examples: list[Example] | None = None,
                   split: str = "train") -> list[TrainRow]:
        """Real training rows of `task` with its generation token (which must already exist)."""
        examples = examples if examples is not None else self.train[task]
        enc = self.encoded(task, split, examples)
        G = self.tokenizer.task_id(task)
        assert G is not None, f"task token of {task} not added yet"
        ids = self.tokenizer.ids
        return [encode_train(c, q, join_answers(a, ids.pad), G, ids, self.max_len, task,
                             index=ex.index)
                for ex, c, q, a in zip(examples, enc.C, enc.Q, enc.A)]

    def prompts(self, task: str, examples: list[Example] | None = None,
                split: str = "test") -> tuple[list[list[int]], int]:
        """Test prompts (cq) and the answer budget: the longest gold answer of the split in tokens,
        several references joined by __pad__ (the reference's max_a_len)."""
        examples = examples if examples is not None else self.test[task]
        enc = self.encoded(task, split, examples)
        ids = self.tokenizer.ids
        prompts = [encode_prompt(c, q, ids, self.max_len) for c, q in zip(enc.C, enc.Q)]
        longest = max((len(join_answers(a, ids.pad)) for a in enc.A), default=1)
        cap = TASKS.get(task).answer_len_cap
        return prompts, min(longest, cap) if cap else longest

    def decode_settings(self) -> DecodeSettings:
        return decode_settings(self.cfg)


def decode_settings(cfg: TrialConfig) -> DecodeSettings:
    """How a trial decodes test answers (and, with mode changed, anything else it generates)."""
    e = cfg.eval
    return DecodeSettings(e.decoding, e.top_k, e.temperature, e.tokens_per_batch, e.max_batch_size)
