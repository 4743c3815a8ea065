"""`cli.py bench`: a trial's speed on the machine at hand, against the reference's way, in one process.

On the trial's first task (its real data, model and tokenizer; weights as initialised) it measures:
- training tokens/s and MFU along three paths over the same rows:
    fast         token-budget length-bucketed batches, the trial's precision (bf16 on a GPU that has
                 it), one fused QA+LM forward, LM head only at target positions, the DeepSpeed engine;
    fast, paper  the same engine on the reference's batch policy (what reproduction grids run);
    reference    the reference's batches, fp32, two full-vocabulary forwards, plain AdamW;
- faithfulness: the fast path's loss against the reference's on identical batches and weights;
- Word-KD's extra cost: a step with a teacher forward (no grad) and the KL term, against one without;
- generation tokens/s (pseudo samples, top-k from a task token) and evaluation decoding tokens/s
  (greedy on test prompts): batched KV-cache decoding that drops finished rows, against one sequence
  at a time re-running its whole prefix (the reference; greedy outputs must be identical);
- the projected wall time of the whole trial, from the work `plan.cell_tokens` counts;
- optionally a profile of the top operators (trial packing is measured by bench.packing).
Every figure is a measurement of this run; nothing is assumed about the machine.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..config import TrialConfig
from ..data.batching import collate
from ..engine import Engine
from ..methods import make_method
from ..model import TargetLogits
from ..step_graph import graph_key
from ..training import forward, make_step
from . import decoding as decode_bench
from .decoding import evaluation, generation
from .timing import count_syncs, sync as _sync, timed as _timed
from .flops import device_name, peak_tflops, step_flops
from .reference import ReferenceStep, reference_batch, row_lengths
from .setup import BenchOptions, BenchSetup
from .step import (GRAPH_PATH, KD_GRAPH_PATH, KD_PAPER_PATH, MIB, kd_effective_ratio, padding_fraction, paper_path, peak_bytes, saved_for_backward,
                   step_figures)

log = logging.getLogger(__name__)




@dataclass
class PathFigures:
    tokens_per_s: float
    steps_per_s: float
    examples_per_step: float
    mfu: float | None
    tflops: float
    warmup_s: float | None = None  # the untimed first steps: allocations, kernel choice, compilation
    syncs_per_step: float | None = None  # host waits on the GPU inside a step (GPUs only)
    sync_sites: list[str] = field(default_factory=list)  # where they were asked for, most frequent first
    step_ms: float | None = None  # one step's wall time (the paper policy's: its per-step floor)
    padding_fraction: float | None = None  # the share of the forward's input positions that are padding
    saved_mib: float | None = None  # memory one step holds for its backward (any device; bench.step)
    peak_mib: float | None = None  # one step's peak device memory above what it started with (GPUs)
    buckets: int | None = None  # the step graph's buckets over the path's batches (a graph each on CUDA)


@dataclass
class BenchResult:
    device: str
    precision: str
    model: dict[str, Any]
    train: dict[str, PathFigures] = field(default_factory=dict)
    faithfulness: dict[str, float] = field(default_factory=dict)
    kd_step_ratio: float | None = None
    generation: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, float] = field(default_factory=dict)
    projection: dict[str, float] = field(default_factory=dict)
    decoding: dict[str, Any] = field(default_factory=dict)  # the whole trial's decoding (bench.decoding)
    packing: dict[str, float] = field(default_factory=dict)
    profile: str = ""
    # bench.step's figures: kernel comparisons, the paper policy's floor, a cached teacher, a grid
    kernels: dict[str, dict[str, float]] = field(default_factory=dict)
    kd_cached_step_ratio: float | None = None  # a Word-KD step with the teacher's cache (head only)
    teacher_cache: dict[str, float] = field(default_factory=dict)
    packing_paper: dict[str, float] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)




# --------------------------------------------------------------------------- training paths
def fast_path(s: BenchSetup, plan: list[np.ndarray], precision: str, opts: BenchOptions,
              teacher=None, profile: bool = False,
              before_timing: Callable[[], None] | None = None, graph: bool = False,
              warm_timed: bool | None = None) -> tuple[PathFigures, str]:
    """Steps of the trial's own training path (training.make_step's: the DeepSpeed engine, fused
    forward, target logits, the configured method's loss and after_backward; with `graph` the paper
    policy's step graph, every timed batch run once untimed first, which captures its bucket; so with
    `warm_timed`, for an eager path timed beside it); with a `teacher` (a frozen
    TargetLogits, or a TeacherCache of one) the Word-KD step's (the first task's rows: the KL in
    place of the cross-entropy)."""
    model = s.fresh_model()
    method = s.prepared(model, teacher)
    engine = Engine(model, s.cfg.training, precision, s.device)
    s.ctx.model = engine.module
    stepper = make_step(engine, method, s.ctx, graph)
    pad = s.tok.ids.pad
    task_index = method.task_index(s.ctx)  # task-conditioned models (multitask_ca) read each row's task
    batches = [stepper.prepare(collate([s.rows[i] for i in idx], pad, with_lm=s.with_lm, task_index=task_index))
               for idx in plan]
    if s.device.type == "cuda":  # as the trial's loader: page-locked, so copies need not block
        batches = [b.pin() for b in batches]

    def step(batch):  # as training.train_stage's
        stepper.run(batch, s.cfg.training.lr)

    timed = batches[opts.warmup:]
    # a graph's first batch of each bucket captures it: every timed bucket is captured untimed first
    warm = batches[: opts.warmup] + (timed if (graph if warm_timed is None else warm_timed) else [])
    _, warmup_s = _timed(s.device, lambda: [step(b) for b in warm])
    syncs = count_syncs(s.device, lambda: step(timed[0]))
    (_, saved), peak = peak_bytes(s.device, lambda: saved_for_backward(lambda: step(timed[0])))
    table = ""
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if s.device.type == "cuda" else [])
        with torch_profile(activities=acts) as prof:
            for b in timed[:3]:
                step(b)
            _sync(s.device)
        key = "self_cuda_time_total" if s.device.type == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=key, row_limit=12)
    if before_timing is not None:
        before_timing()
    _, dt = _timed(s.device, lambda: [step(b) for b in timed])
    buckets = len({graph_key(b) for b in batches}) if graph else None
    stepper.close()
    engine.close()
    timed_rows = [[s.rows[i] for i in idx] for idx in plan[opts.warmup:]]
    figures = _figures(s, timed, timed_rows, dt, precision, opts)
    figures.warmup_s = warmup_s
    figures.step_ms = 1e3 * dt / len(timed)
    figures.padding_fraction = padding_fraction(timed)
    figures.saved_mib, figures.peak_mib = saved / MIB, None if peak is None else peak / MIB
    figures.buckets = buckets
    if syncs is not None:
        figures.syncs_per_step, figures.sync_sites = float(syncs[0]), syncs[1]
    return figures, table


def reference_path(s: BenchSetup, plan: list[np.ndarray], opts: BenchOptions) -> PathFigures:
    model = s.fresh_model()
    t = s.cfg.training
    step = ReferenceStep(model, s.weight(), s.lm_lambda, s.with_lm, lr=t.lr, eps=t.adam_eps,
                         weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm)
    batches = [reference_batch([s.rows[i] for i in idx], s.tok.ids.pad, s.with_lm, s.device) for idx in plan]
    for b in batches[: opts.warmup]:
        step(b)
    timed = batches[opts.warmup:]
    _, dt = _timed(s.device, lambda: [step(b) for b in timed])
    n_tok = sum(b.n_tokens for b in timed)
    flops = sum(step_flops(model, b.lengths, b.n_targets) for b in timed)
    peak = peak_tflops(s.device, "fp32", opts.peak_tflops)
    return PathFigures(n_tok / dt, len(timed) / dt, statistics.fmean(int(b.cqa.shape[0]) for b in timed),
                       flops / dt / (peak * 1e12) if peak else None, flops / dt / 1e12)


def _figures(s: BenchSetup, batches, rows, dt: float, precision: str, opts: BenchOptions) -> PathFigures:
    """Figures of timed `batches`, made of `rows` (one list of TrainRows each), that took `dt` s."""
    n_tok = sum(b.n_tokens for b in batches)
    flops = sum(step_flops(s.model, row_lengths(r, s.with_lm), len(b.positions)) for b, r in zip(batches, rows))
    peak = peak_tflops(s.device, precision, opts.peak_tflops)
    return PathFigures(n_tok / dt, len(batches) / dt, statistics.fmean(b.n_examples for b in batches),
                       flops / dt / (peak * 1e12) if peak else None, flops / dt / 1e12)


def faithfulness(s: BenchSetup, plan: list[np.ndarray]) -> dict[str, float]:
    """Fast-path and reference-style losses of the same batches and weights, in fp32: the trial's
    cross-entropy terms (qa, lm; a method's own penalties, which the reference formula has not,
    left out)."""
    method = s.prepared(s.fresh_model())  # its hooks' state on a copy: the terms compared read the logits only
    model = s.fresh_model().eval()  # no dropout: both paths see the same function
    head = TargetLogits(model)
    weight = s.weight()
    ref = ReferenceStep(model, weight, s.lm_lambda, s.with_lm, lr=0.0, eps=1e-8, weight_decay=0.0,
                        max_grad_norm=1.0)

    class _E:
        logits = staticmethod(head)

    diffs, values = [], []
    with torch.no_grad():
        for idx in plan:
            rows = [s.rows[i] for i in idx]
            batch = collate(rows, s.tok.ids.pad, with_lm=s.with_lm).to(s.device)
            terms = method.loss_terms(s.ctx, batch, forward(_E, batch, True))
            fast = sum(v for k, v in terms.items() if k in ("qa", "lm"))
            slow = ref.loss(reference_batch(rows, s.tok.ids.pad, s.with_lm, s.device))
            diffs.append(abs(float(fast) - float(slow)))
            values.append(float(slow))
    return {"batches": len(plan), "max_abs_diff": max(diffs), "mean_loss": statistics.fmean(values)}


# --------------------------------------------------------------------------- the whole trial
def projection(s: BenchSetup, r: BenchResult) -> dict[str, float]:
    """Wall time of the whole trial at the measured rates: training (teachers too, with Word-KD's
    extra cost) and all of its decoding (every pass counted and projected by bench.decoding)."""
    from ..plan import cell_tokens
    from ..teachers.store import teacher_config

    cfg = s.cfg
    method = make_method(cfg.method)
    student = cell_tokens(cfg)
    teachers = sum(cell_tokens(teacher_config(cfg, t)) for t in method.teachers_needed(cfg))
    kd = kd_effective_ratio(r, cfg) if method.uses_teacher_logits else 1.0
    d = r.decoding
    pseudo = sum(p["times"] * p["new_tokens"] for p in d["passes"] if p["kind"] == "pseudo")
    answers = d["new_tokens"] - pseudo  # evaluation and Seq-KD answers: greedy (or the eval mode)
    rate = (paper_path(r.train) if cfg.training.batch_policy == "paper" else r.train["fast"]).tokens_per_s
    train_s = (student * kd + teachers) / rate
    this = train_s + d["seconds"]
    ref_decode = pseudo / r.generation["reference_tokens_per_s"] \
        + answers / max(r.evaluation["reference_tokens_per_s"], 1e-9)
    ref = (student * kd + teachers) / r.train["reference"].tokens_per_s + ref_decode
    return {"trained_tokens": student, "teacher_tokens": teachers, "pseudo_tokens": pseudo,
            "eval_tokens": answers, "train_s": train_s, "decode_s": d["seconds"],
            "decode_share": d["seconds"] / this if this else 0.0, "this_config_s": this,
            "reference_s": ref, "speedup": ref / this}


def paper_paths(s: BenchSetup, r: BenchResult, opts: BenchOptions, n: int, emit) -> None:
    """The paper policy's step: the engine's, and with training.step_graph the graph's beside it (the
    eager one then timed as the graph is: on batches it has seen once)."""
    graph = s.cfg.training.step_graph
    emit("bench", part="training: fast path, paper batches")
    r.train["fast, paper"], _ = fast_path(s, s.plan("paper", n), s.precision, opts, warm_timed=graph)
    if graph:
        emit("bench", part="training: paper batches, step graph")
        r.train[GRAPH_PATH], _ = fast_path(s, s.plan("paper", n), s.precision, opts, graph=True)
    if graph and make_method(s.cfg.method).uses_teacher_logits:  # the trial's own step, its teacher per step
        emit("bench", part="training: paper batches, Word-KD, eager and step graph")
        teacher = TargetLogits.frozen(s.fresh_model(), s.amp)
        for key, g in ((KD_PAPER_PATH, False), (KD_GRAPH_PATH, True)):
            r.train[key], _ = fast_path(s, s.plan("paper", n), s.precision, opts, teacher=teacher, graph=g,
                                        warm_timed=True)


def run_bench(cfg: TrialConfig, opts: BenchOptions = BenchOptions(),
              on_event: Callable[..., None] | None = None) -> BenchResult:
    emit = on_event or (lambda *a, **k: None)
    s = BenchSetup(cfg)
    cfg_model = s.model.config
    r = BenchResult(device_name(s.device), s.precision, {
        "n_layer": cfg_model.n_layer, "n_embd": cfg_model.n_embd, "vocab": cfg_model.vocab_size,
        "positions": s.max_len, "parameters": sum(p.numel() for p in s.model.parameters()),
        "task": s.task, "rows": len(s.rows), "with_lm": s.with_lm})
    n = opts.warmup + opts.steps
    if "training" in opts.parts:
        emit("bench", part="training: fast path")
        r.train["fast"], prof = fast_path(s, s.plan("tokens", n), s.precision, opts, profile=opts.profile)
        r.profile = prof
    if "training" in opts.parts or "paper" in opts.parts:
        paper_paths(s, r, opts, n, emit)
    if "training" in opts.parts:
        emit("bench", part="training: reference-style path")
        r.train["reference"] = reference_path(s, s.plan("paper", n), opts)
        emit("bench", part="faithfulness")
        r.faithfulness = faithfulness(s, s.plan("paper", 4, seed=1))
        emit("bench", part="Word-KD teacher cost")
        teacher = TargetLogits.frozen(s.fresh_model(), s.amp, cfg.training.compile)
        with_teacher, _ = fast_path(s, s.plan("tokens", n), s.precision, opts, teacher=teacher)
        r.kd_step_ratio = r.train["fast"].steps_per_s / with_teacher.steps_per_s
        emit("bench", part="Word-KD with a cached teacher, step kernels")
        step_figures(s, r, opts, teacher, fast_path)
    if "decoding" in opts.parts:
        emit("bench", part="generation")
        r.generation = generation(s, opts)
        emit("bench", part="evaluation decoding")
        r.evaluation = evaluation(s, opts)
        emit("bench", part="the trial's decoding: every pass counted, one of each kind timed")
        r.decoding = decode_bench.measure(cfg, s.model, s.tok, s.max_len, s.device, s.amp,
                                          graphs=opts.decode_graphs, time_passes=opts.time_decoding,
                                          profile=opts.profile).to_dict()
    if "reference" in r.train and r.decoding:
        r.projection = projection(s, r)
    return r
