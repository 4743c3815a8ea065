"""What the bench measures with: its options, and the trial's own set-up as its first stage trains
(bench/run.py times paths over it; bench/decoding.py decodes with it)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from ..config import TrialConfig
from ..data.batching import paper_batch_size, paper_batches, token_batches
from ..losses import ans_weighted
from ..methods import Method, make_method
from ..methods.kd import bench_steps
from ..methods.teacher_cache import TeacherCache
from ..backbone import n_positions
from ..model import grow_embeddings
from ..trial import set_up_trial



@dataclass(frozen=True)
class BenchOptions:
    steps: int = 10  # timed training steps per path
    warmup: int = 2  # untimed steps first (allocations, kernel selection)
    gen_samples: int = 32  # pseudo samples through the fast decoder
    ref_gen_samples: int = 3  # and through the reference's (slow: a few suffice for a rate)
    gen_tokens: int = 64  # new tokens per pseudo sample (both decoders; EOS is ignored so lengths match)
    eval_prompts: int = 64
    ref_eval_prompts: int = 4
    peak_tflops: float | None = None  # override the device's peak (required for an MFU on a CPU)
    packing: int = 1  # >1: also run that many trials' fast training at once on this device
    profile: bool = False
    time_decoding: bool = True  # decode one evaluation and one pseudo pass of the trial for real
    decode_graphs: bool | None = None  # CUDA graphs for GPT-2 decoding (None: on a GPU)
    parts: tuple[str, ...] = ("training", "decoding")  # what to measure ("paper": its paper-policy paths only)


class BenchSetup:
    """The trial's own set-up (trial.set_up_trial) as its first stage trains: the first task's
    token added and the model grown to it, and the configured method's two steps (bench_steps: its
    own without a teacher, and a Word-KD one for a teacher's cost)."""

    def __init__(self, cfg: TrialConfig):
        self.cfg = cfg
        trial = set_up_trial(cfg)  # a fresh trial's: no folder to resume from
        self.device, self.precision, self.amp = trial.device, trial.precision, trial.amp_dtype
        self.task = cfg.tasks[0]
        self.tok = trial.tokenizer
        self.tok.add_task(self.task)
        self.model = trial.model
        grow_embeddings(self.model, len(self.tok), cfg.seed)  # as the trial before its first stage
        self.max_len = n_positions(self.model)
        self.ctx = trial.context({}, lambda *a, **k: None)
        self.rows = self.ctx.train_rows(self.task)
        self.method = trial.method
        plain, _ = bench_steps(self.method)
        self.with_lm = plain.uses_lm
        self.lm_lambda = float(getattr(plain.p, "lm_lambda", 0.25))  # the reference formula's
        self.ans_weight = float(getattr(plain.p, "ans_weight", 5.0))

    def step_method(self, with_teacher: bool) -> Method:
        """A fresh instance of the step (bench_steps) the trial would train, before its hooks ran."""
        plain, kd = bench_steps(make_method(self.cfg.method))
        return kd if with_teacher else plain

    def prepared(self, model: torch.nn.Module, teacher=None) -> Method:
        """The step's method with its hooks run on `model` as the trial runs them at stage 1:
        prepare_model, then (ctx.model set) begin_training, or the bench's `teacher` (a frozen
        TargetLogits, or a TeacherCache of one) handed to a Word-KD step. Returns the method."""
        method = self.step_method(teacher is not None)
        method.prepare_model(self.ctx, model)
        self.ctx.model = model
        if teacher is None:
            method.begin_training(self.ctx, (self.task,))
        else:
            cache = teacher if isinstance(teacher, TeacherCache) else None
            same = torch.arange(len(self.tok), device=self.device)  # teacher and student share a vocabulary
            method.use_teacher(cache.teacher if cache else teacher, same, same, cache)
        return method

    def fresh_model(self):
        return copy.deepcopy(self.model).to(self.device).train()

    def weight(self) -> torch.Tensor:
        return ans_weighted(len(self.tok), self.tok.ids.ans, self.ans_weight, self.device)

    def plan(self, policy: str, n: int, seed: int = 0) -> list[np.ndarray]:
        """At least `n` batches of the first task under `policy` ('tokens' or 'paper')."""
        rng = np.random.default_rng(seed)
        t = self.cfg.training
        out: list[np.ndarray] = []
        while len(out) < n:
            if policy == "paper":
                out += paper_batches(len(self.rows), paper_batch_size(len(self.rows), t.min_n_steps,
                                                                      t.min_batch_size), rng)
            else:
                out += token_batches([len(r) for r in self.rows], t.tokens_per_batch, rng)
        return out[:n]
