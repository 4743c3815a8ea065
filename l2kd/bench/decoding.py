"""The decoding a whole trial does, counted and measured: every evaluation pass, every stage's pseudo
samples, and its teachers' evaluation and Seq-KD answers.

A bench model has its initial weights, which never emit EOS; a trained model answers about as long as
the data. So every row is decoded with a *forced length* (decode's `forced_lengths`): an evaluation
row the length of its first gold answer, a pseudo sample the length of a real training row of its
task (drawn with a fixed seed), a Seq-KD answer its gold answer's. With those lengths:
- the sequential forward calls of every pass are counted exactly by running the decoder's own loop
  with a model-free stepper (no arithmetic), once with this trial's settings and once as the
  decoder planned batches before (16,384 tokens, 256 rows, worst-case budgets, a look at every
  token, tasks one at a time): the same loop, so the counts cannot drift from the code;
- one evaluation pass and the largest pseudo-sample pass are decoded for real and timed (a stated
  sample of the work), and every pass's time is scaled from them by its counted new tokens.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ..context import TrialContext, decode_settings
from ..data import load_split
from ..decode import DecodeSettings, DecodeStats, decode, decode_reference, pseudo_counts, row_keys
from ..decode import loop as decode_loop
from ..decode.settings import auto_tokens_per_batch, kv_bytes_per_position
from ..methods import make_method
from ..model import grow_embeddings
from ..tokenizer import Tokenizer
from .setup import BenchOptions, BenchSetup
from .timing import timed, timed_warm


# how the decoder planned batches before it planned them by expected lengths (the default eval
# settings of then, each row's worst-case budget, the host looking at every token, tasks one by one)
BEFORE = DecodeSettings(tokens_per_batch=16384, max_batch_size=256, check_every=1)


@dataclass
class Pass:
    kind: str  # evaluation | pseudo | teacher evaluation | Seq-KD answers
    label: str
    times: int  # how often a trial runs this pass
    mode: str  # greedy | top_k
    groups: list[dict[str, Any]]  # decode calls: prompts, budgets, expect, forced (one call each)

    @property
    def rows(self) -> int:
        return sum(len(g["prompts"]) for g in self.groups)

    @property
    def new_tokens(self) -> int:
        return sum(sum(g["forced"]) for g in self.groups)


@dataclass
class PassFigures:
    kind: str
    label: str
    times: int
    rows: int
    new_tokens: int
    forward_calls: int
    forward_calls_before: int
    batches: int
    seconds: float | None = None  # projected, for one run of the pass
    measured: bool = False


@dataclass
class DecodingFigures:
    passes: list[PassFigures] = field(default_factory=list)
    forward_calls: int = 0  # the whole trial
    forward_calls_before: int = 0
    new_tokens: int = 0
    seconds: float = 0.0  # projected decoding time of the whole trial
    measured: dict[str, dict[str, float]] = field(default_factory=dict)  # the timed passes
    profile: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _CountingStepper:
    """A stepper without a model: logits of one column, so the loop's planning, checks and
    compactions run for real and count calls while the model costs nothing."""

    def __init__(self, rows: int):
        self.rows, self.graphs = rows, None

    def prefill(self, ids, mask, pos):
        self.rows = ids.shape[0]
        return torch.zeros((self.rows, 1))

    def step(self, tokens, pos):
        return torch.zeros((self.rows, 1))

    def select(self, idx, rows):
        self.rows = rows


class _CountingDecoder(decode_loop._Decoder):
    def __init__(self, settings: DecodeSettings, stats: DecodeStats, bytes_per_position: int,
                 device: torch.device):
        self.device, self.s, self.stats, self.fast, self.graphs = torch.device("cpu"), settings, stats, False, None
        self.bytes_per_position, self.planned_for = bytes_per_position, device
        self.host_is_device = settings.compaction == "eager" or (  # the policy of the device counted for
            settings.compaction == "auto" and device.type == "cpu")

    def tokens_per_batch(self) -> int:
        return self.s.tokens_per_batch or auto_tokens_per_batch(self.bytes_per_position, self.planned_for.type)

    def stepper(self, rows, width):
        return _CountingStepper(rows)


def count_calls(groups: list[dict[str, Any]], settings: DecodeSettings, planned: bool,
                bytes_per_position: int = 1, device: torch.device = torch.device("cpu")) -> DecodeStats:
    """The forward calls `decode` makes for these calls' rows (never EOS; forced lengths end them),
    counted by its own loop on a model-free decoder (the eager path: no graph row buckets) that
    plans for a model whose cache takes `bytes_per_position` on `device`."""
    stats = DecodeStats()
    s = replace(settings, mode="greedy")
    for g in groups:
        decode_loop.decode_with(lambda: _CountingDecoder(s, stats, bytes_per_position, device), g["prompts"], g["budgets"], eos=-1,
                                pad=0, max_total=g["max_total"], settings=s,
                                expect=g["expect"] if planned else None, forced_lengths=g["forced"],
                                stats=stats)
    return stats


class Workload:
    """The decoding passes of one trial, from its config, data and tokenizer."""

    def __init__(self, cfg, tokenizer: Tokenizer, max_len: int, seed: int = 0):
        self.cfg = cfg
        self.tok = copy.deepcopy(tokenizer)
        for t in cfg.tasks:
            self.tok.add_task(t)
        self.max_len = max_len
        self.rng = np.random.default_rng(seed)
        train = {t: load_split(t, "train", cfg.data) for t in cfg.tasks}
        test = {t: load_split(t, "test", cfg.data) for t in cfg.tasks}
        self.ctx = TrialContext(cfg=cfg, tokenizer=self.tok, device=torch.device("cpu"), amp_dtype=None,
                                max_len=max_len, train=train, test=test)
        self.method = make_method(cfg.method)
        self.passes = self._passes()

    def _answer_lengths(self, task: str, split: str, cap: int) -> list[int]:
        enc = self.ctx.encoded(task, split)
        return [max(1, min(cap, len(a[0]) if a else 1)) for a in enc.A]

    def _eval_group(self, tasks: list[str]) -> dict[str, Any]:
        prompts, budgets, forced = [], [], []
        for t in tasks:
            p, budget = self.ctx.prompts(t)
            prompts += p
            budgets += [budget] * len(p)
            forced += self._answer_lengths(t, "test", budget)
        return {"prompts": prompts, "budgets": budgets, "expect": budgets, "forced": forced,
                "max_total": self.max_len}

    def _pseudo_group(self, counts: dict[str, int]) -> dict[str, Any]:
        prompts, expect, forced = [], [], []
        for t, n in counts.items():
            lengths = [len(r.cqa) for r in self.ctx.train_rows(t)]
            prompts += [[self.tok.task_id(t)]] * n
            expect += [max(lengths)] * n
            forced += self.rng.choice(lengths, size=n).tolist()
        return {"prompts": prompts, "budgets": [self.max_len] * len(prompts), "expect": expect,
                "forced": forced, "max_total": self.max_len}

    def _passes(self) -> list[Pass]:
        cfg, m = self.cfg, self.method
        tasks = list(cfg.tasks)
        stages = m.stages(tasks)
        n_evals = len(stages) * (1 + (cfg.training.epochs if cfg.eval.every_epoch else 0)) \
            + (1 if cfg.eval.before_training else 0)
        mode = cfg.eval.decoding
        passes = [Pass("evaluation", "every task's test set", n_evals, mode, [self._eval_group(tasks)])]
        gen_ratio = getattr(m.p, "gen_ratio", 0.0)
        for k, stage in enumerate(stages):
            previous = tasks[: tasks.index(stage[0])]
            counts = pseudo_counts(sum(len(self.ctx.train[t]) for t in stage), previous, gen_ratio) \
                if gen_ratio else {}
            if counts:
                passes.append(Pass("pseudo", f"before stage {k + 1} ({', '.join(stage)})", 1, "top_k",
                                   [self._pseudo_group(counts)]))
        for t in m.teachers_needed(cfg):
            passes.append(Pass("teacher evaluation", t, 1, mode, [self._eval_group([t])]))
            for smode in m.seq_kd_modes(cfg):
                p, _ = self.ctx.prompts(t, self.ctx.train[t], split="train")
                budget = max(self._answer_lengths(t, "train", 10**9))
                passes.append(Pass("Seq-KD answers", f"{t} ({smode})", 1, smode, [{
                    "prompts": p, "budgets": [budget] * len(p), "expect": [budget] * len(p),
                    "forced": self._answer_lengths(t, "train", budget), "max_total": self.max_len}]))
        return passes


def _settings(cfg, mode: str) -> DecodeSettings:
    return replace(decode_settings(cfg), mode=mode)


def _time_pass(model, p: Pass, cfg, device, amp_dtype, graphs: bool | None) -> tuple[float, DecodeStats]:
    """Decode every call of pass `p` for real on `device` (after one untimed warm-up batch)."""
    s = _settings(cfg, p.mode)
    g0 = p.groups[0]
    warm = min(len(g0["prompts"]), s.max_batch_size)
    run = lambda g, n=None, stats=None: decode(  # noqa: E731
        model, g["prompts"][:n], g["budgets"][:n], eos=-1, pad=0, max_total=g["max_total"], settings=s,
        device=device, amp_dtype=amp_dtype, expect=g["expect"][:n], forced_lengths=g["forced"][:n],
        keys=row_keys(0, len(g["prompts"][:n]), torch.device("cpu")), stats=stats, graphs=graphs)
    run(g0, warm)  # allocations, kernel choice, graph captures of the common shapes
    stats = DecodeStats()
    _, seconds = timed(device, lambda: [run(g, stats=stats) for g in p.groups])
    return seconds, stats


def _bandwidth_bound_s(model, stats: DecodeStats, amp_dtype, device: torch.device) -> float | None:
    """The least time the pass could take on this GPU: every step reads the weights once (in the
    autocast dtype) and each row's filled KV cache; None off a GPU of known bandwidth."""
    if device.type != "cuda":
        return None
    from .flops import bandwidth_for_name, device_name

    tbps = bandwidth_for_name(device_name(device))
    if not tbps:
        return None
    dtype = amp_dtype or torch.float32
    weight_bytes = sum(p.numel() for p in model.parameters()) * torch.finfo(dtype).bits // 8
    cache_bytes = stats.cache_positions_read * kv_bytes_per_position(model.config, dtype)
    return (stats.forward_calls * weight_bytes + cache_bytes) / (tbps * 1e12)


def profile_batch(model, p: Pass, cfg, device, amp_dtype, graphs: bool | None, rows: int = 256) -> str:
    """The top operators of decoding the first `rows` rows of pass `p` (after a warm-up of them)."""
    from torch.profiler import ProfilerActivity, profile

    g = p.groups[0]
    s = _settings(cfg, p.mode)
    n = min(rows, len(g["prompts"]))
    run = lambda: decode(model, g["prompts"][:n], g["budgets"][:n], eos=-1, pad=0,  # noqa: E731
                         max_total=g["max_total"], settings=s, device=device, amp_dtype=amp_dtype,
                         expect=g["expect"][:n], forced_lengths=g["forced"][:n],
                         keys=row_keys(0, n, torch.device("cpu")), graphs=graphs)
    run()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return f"{n} rows of {p.label}:\n" + prof.key_averages().table(sort_by=key, row_limit=12)


def measure(cfg, model, tokenizer: Tokenizer, max_len: int, device: torch.device,
            amp_dtype: torch.dtype | None, graphs: bool | None = None,
            time_passes: bool = True, profile: bool = False) -> DecodingFigures:
    """Count every pass of the trial's decoding; time one evaluation pass and the largest pseudo
    pass (when `time_passes`) and project the rest from their tokens/s."""
    work = Workload(cfg, tokenizer, max_len)
    model = copy.deepcopy(model).to(device).eval()
    grow_embeddings(model, len(work.tok), cfg.seed)
    model.to(device)
    figs = DecodingFigures()
    rates: dict[str, float] = {}
    if time_passes:
        timed_kinds = {"evaluation": max((p for p in work.passes if p.kind == "evaluation"), key=lambda p: p.rows),
                       "pseudo": max((p for p in work.passes if p.kind == "pseudo"), key=lambda p: p.rows,
                                     default=None)}
        for kind, p in timed_kinds.items():
            if p is None:
                continue
            seconds, stats = _time_pass(model, p, cfg, device, amp_dtype, graphs)
            rates[kind] = stats.new_tokens / seconds
            bound = _bandwidth_bound_s(model, stats, amp_dtype, device)
            figs.measured[kind] = {"label": p.label, "seconds": seconds, "new_tokens": stats.new_tokens,
                                   "tokens_per_s": rates[kind], "forward_calls": stats.forward_calls,
                                   "ms_per_call": 1e3 * seconds / max(1, stats.forward_calls),
                                   "batches": stats.batches, "host_checks": stats.host_checks,
                                   "compactions": stats.compactions, "graph_replays": stats.graph_replays,
                                   "bandwidth_bound_s": bound,
                                   "bandwidth_fraction": bound / seconds if bound else None}
    per_position = kv_bytes_per_position(model.config, amp_dtype or torch.float32)
    if profile:
        figs.profile = profile_batch(model, work.passes[0], cfg, device, amp_dtype, graphs)
    for p in work.passes:
        s = _settings(cfg, p.mode)
        now = count_calls(p.groups, s, planned=True, bytes_per_position=per_position, device=device)
        # before: tasks were decoded one call each
        before_groups = _split(p.groups[0], [len(work.ctx.test[t]) for t in cfg.tasks]) \
            if p.kind == "evaluation" else p.groups
        before = count_calls(before_groups, BEFORE, planned=False)
        rate = rates.get("pseudo" if p.kind == "pseudo" else "evaluation")
        f = PassFigures(p.kind, p.label, p.times, p.rows, p.new_tokens, now.forward_calls,
                        before.forward_calls, now.batches,
                        p.new_tokens / rate if rate else None,
                        measured=any(m["label"] == p.label for m in figs.measured.values()))
        figs.passes.append(f)
        figs.forward_calls += p.times * f.forward_calls
        figs.forward_calls_before += p.times * f.forward_calls_before
        figs.new_tokens += p.times * f.new_tokens
        figs.seconds += p.times * (f.seconds or 0.0)
    return figs


def _split(group: dict[str, Any], sizes: list[int]) -> list[dict[str, Any]]:
    """One merged evaluation call as the calls of each task it holds (`sizes` rows each)."""
    out, a = [], 0
    for n in sizes:
        out.append({k: (v[a:a + n] if isinstance(v, list) else v) for k, v in group.items()})
        a += n
    return out


# --------------------------------------------------------------------------- decoding rates against the reference's
def generation(s: BenchSetup, opts: BenchOptions) -> dict[str, float]:
    """Pseudo-sample generation: top-k from the task token alone, `gen_tokens` new tokens each."""
    model = s.fresh_model().eval()
    g = s.tok.task_id(s.task)
    settings = replace(decode_settings(s.cfg), mode="top_k")
    budget = min(opts.gen_tokens, s.max_len - 1)
    fast_stats, ref_stats = DecodeStats(), DecodeStats()
    gen = torch.Generator(device=s.device).manual_seed(0)
    _, fast_dt = timed_warm(s.device, lambda: decode(
        model, [[g]] * opts.gen_samples, budget, eos=-1, pad=s.tok.ids.pad, max_total=s.max_len,
        settings=settings, device=s.device, amp_dtype=s.amp, generator=gen, stats=fast_stats), fast_stats)
    _, ref_dt = timed_warm(s.device, lambda: [decode_reference(
        model, [g], budget, eos=-1, max_total=s.max_len, settings=settings, device=s.device,
        generator=gen, stats=ref_stats) for _ in range(opts.ref_gen_samples)], ref_stats)
    fast, ref = fast_stats.new_tokens / fast_dt, ref_stats.new_tokens / ref_dt
    return {"fast_tokens_per_s": fast, "reference_tokens_per_s": ref, "ratio": fast / ref,
            "samples": opts.gen_samples, "tokens_each": budget}


def evaluation(s: BenchSetup, opts: BenchOptions) -> dict[str, float]:
    """Greedy answers to test prompts; the batched decoder must give the reference's outputs."""
    model = s.fresh_model().eval()
    prompts, budget = s.ctx.prompts(s.task)
    prompts = prompts[: opts.eval_prompts]
    settings = replace(decode_settings(s.cfg), mode="greedy")
    fast_stats, ref_stats = DecodeStats(), DecodeStats()
    outs, fast_dt = timed_warm(s.device, lambda: decode(
        model, prompts, budget, eos=s.tok.ids.eos, pad=s.tok.ids.pad, max_total=s.max_len,
        settings=settings, device=s.device, amp_dtype=s.amp, stats=fast_stats), fast_stats)
    k = min(opts.ref_eval_prompts, len(prompts))
    ref_outs, ref_dt = timed_warm(s.device, lambda: [decode_reference(
        model, p, budget, eos=s.tok.ids.eos, max_total=s.max_len, settings=settings, device=s.device,
        stats=ref_stats) for p in prompts[:k]], ref_stats)
    fast, ref = fast_stats.new_tokens / fast_dt, ref_stats.new_tokens / max(ref_dt, 1e-9)
    # bf16 can break a near-tie differently in a batch than alone; fp32 must agree exactly
    same = sum(a == b for a, b in zip(outs[:k], ref_outs))
    out = {"fast_tokens_per_s": fast, "reference_tokens_per_s": ref, "ratio": fast / ref if ref else 0.0,
           "prompts": len(prompts), "answer_budget": budget, "identical_outputs": f"{same}/{k}"}
    if s.device.type == "cuda":  # CUDA graphs replay the eager step's kernels: the same answers
        eager = decode(model, prompts, budget, eos=s.tok.ids.eos, pad=s.tok.ids.pad, max_total=s.max_len,
                       settings=settings, device=s.device, amp_dtype=s.amp, graphs=False)
        out["graphs_match_eager"] = f"{sum(a == b for a, b in zip(outs, eager))}/{len(outs)}"
    return out
