"""Figures of the training step beyond its rate: memory per step, the GELU and Word-KD loss kernels
against the formulas they replaced, the paper policy's floor, a Word-KD teacher's cache, and the
training time of a whole grid on one device.

Every figure is measured in this run on the device at hand (none on a CPU where it needs a GPU:
the peak memory of a step) or counted from the data (the cache's size, a grid's tokens).
"""

from __future__ import annotations

import statistics
import time
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
import torch
from transformers.activations import ACT2FN

from ..losses import ans_weighted, kl_each, masked_mean, weighted_nll
from ..methods.kd import word_kd_terms

MIB = 2**20
GRAPH_PATH = "fast, paper, graph"  # the paper policy's step graph (training.step_graph), where it is on
# a Word-KD trial's own paper-policy step (its teacher run per step), eager and as a graph, beside those
KD_PAPER_PATH, KD_GRAPH_PATH = "fast, paper, word_kd", "fast, paper, graph, word_kd"


def paper_path(train: dict):
    """The paper policy's figures a trial would train at: the step graph's where it was measured."""
    return train.get(GRAPH_PATH) or train["fast, paper"]


def saved_for_backward(fn: Callable[[], Any]) -> tuple[Any, int]:
    """`fn()` and the bytes of the tensors autograd saved for backward during it, each storage
    counted once: the memory a step holds between its forward and its backward, on any device."""
    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        seen[(t.device, storage.data_ptr())] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def peak_bytes(device: torch.device, fn: Callable[[], Any]) -> tuple[Any, int | None]:
    """`fn()` and the most device memory it held above what was held before (CUDA; None elsewhere)."""
    if device.type != "cuda":
        return fn(), None
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    torch.cuda.synchronize(device)
    return out, torch.cuda.max_memory_allocated(device) - base


def _time(device: torch.device, fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds of `fn` over `repeats` runs after one untimed."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype) if dtype else torch.autocast(device.type, enabled=False)


def gelu_comparison(n_embd: int, positions: int, device: torch.device, amp_dtype: torch.dtype | None,
                    repeats: int = 5) -> dict[str, float]:
    """Forward + backward of one block's GELU over (positions x 4·n_embd), gelu_new against the one
    kernel, in the step's precision (the input is what the block's first product gives)."""
    dtype = amp_dtype or torch.float32
    x = torch.randn(positions, 4 * n_embd, device=device, dtype=dtype, requires_grad=True)
    up = torch.randn_like(x)

    def run(kind: str):
        def step():
            with _autocast(device, amp_dtype):
                y = ACT2FN[kind](x)
            y.backward(up)
            x.grad = None
        return step

    chain, one = (_time(device, run(k), repeats) for k in ("gelu_new", "gelu_pytorch_tanh"))
    return {"positions": positions, "width": 4 * n_embd, "gelu_new_ms": 1e3 * chain,
            "one_kernel_ms": 1e3 * one, "speedup": chain / one}


def _kd_case(n: int, vocab: int, pseudo_fraction: float, device: torch.device, dtype: torch.dtype):
    """Logits, a teacher's and a batch-like record: a quarter QA positions, `pseudo_fraction` of the
    positions in pseudo rows (spread as whole rows are: in runs)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    logits = (torch.randn(n, vocab, generator=g) * 2).to(device, dtype)
    teacher = (torch.randn(n, vocab, generator=g) * 2).to(device, dtype)
    targets = torch.randint(0, vocab, (n,), generator=g).to(device)
    row = np.arange(n) // 16  # rows of 16 target positions
    pseudo_rows = np.random.default_rng(0).random(row.max() + 1) < pseudo_fraction
    is_pseudo = pseudo_rows[row]
    kd_host = np.flatnonzero(~is_pseudo)
    mixed = 0 < len(kd_host) < n
    batch = SimpleNamespace(
        targets=targets, n_qa=n // 4, n_pseudo=int(pseudo_rows.sum()), n_examples=len(pseudo_rows),
        pseudo_positions=torch.from_numpy(is_pseudo).to(device),
        kd_index=torch.from_numpy(kd_host).to(device) if mixed else None, kd_index_host=kd_host if mixed else None)
    return logits, teacher, batch


def kd_loss_comparison(positions: int, vocab: int, device: torch.device, amp_dtype: torch.dtype | None,
                       pseudo_fraction: float = 0.2, repeats: int = 3, T: float = 2.0,
                       lm_lambda: float = 0.25) -> dict[str, float]:
    """Word-KD's four terms, forward + backward, over (positions x vocab) logits in the step's
    dtype: the separate KL and cross-entropy over every position reduced by four masked means (the
    formula before), against the one pass and the grouped means (the trial's). Also the bytes each
    holds for backward, and its peak device memory on a GPU."""
    dtype = amp_dtype or torch.float32
    logits, teacher, batch = _kd_case(positions, vocab, pseudo_fraction, device, dtype)
    weight = ans_weighted(vocab, 0, 5.0, device)
    kd_teacher = teacher if batch.kd_index is None else teacher.index_select(0, batch.kd_index)

    def separate(s):  # as Word-KD's loss_terms was: each term skipped where it covers nothing
        qa = torch.arange(positions, device=device) < batch.n_qa
        p = batch.pseudo_positions
        terms = []
        if batch.n_pseudo < batch.n_examples:
            kl = kl_each(s, teacher, T)
            terms += [masked_mean(kl, torch.ones_like(kl), qa & ~p),
                      lm_lambda * masked_mean(kl, torch.ones_like(kl), ~qa & ~p)]
        if batch.n_pseudo:
            nll, w = weighted_nll(s, batch.targets, weight)
            terms += [masked_mean(nll, w, qa & p), lm_lambda * masked_mean(nll, w, ~qa & p)]
        return terms

    def fused(s):
        return list(word_kd_terms(batch, s, kd_teacher, weight, T, None, lm_lambda).values())

    out: dict[str, float] = {"positions": positions, "vocab": vocab, "pseudo_fraction": pseudo_fraction}
    for name, terms in (("separate", separate), ("fused", fused)):
        def step():
            s = logits.detach().requires_grad_()
            loss = sum(terms(s))
            loss.backward()
        _, saved = saved_for_backward(lambda: sum(terms(logits.detach().requires_grad_())))
        _, peak = peak_bytes(device, step)
        out[f"{name}_ms"] = 1e3 * _time(device, step, repeats)
        out[f"{name}_saved_mib"] = saved / MIB
        if peak is not None:
            out[f"{name}_peak_mib"] = peak / MIB
    out["speedup"] = out["separate_ms"] / out["fused_ms"]
    return out


def padding_fraction(batches) -> float:
    """The share of the forward's input positions that are padding."""
    real = sum(b.n_tokens for b in batches)
    return 1.0 - real / max(1, sum(b.inputs.numel() for b in batches))


def teacher_cache_size(rows, with_lm: bool, n_embd: int, amp_dtype: torch.dtype | None) -> dict[str, float]:
    """The memory a Word-KD teacher's cache of these (a stage's current-task) rows takes."""
    from ..methods.teacher_cache import cache_bytes, target_counts

    qa, lm = target_counts(rows, with_lm)
    return {"rows": len(rows), "targets": int(qa.sum() + lm.sum()),
            "mib": cache_bytes(rows, with_lm, n_embd, amp_dtype or torch.float32) / MIB}


def step_figures(s, r, opts, teacher, fast_path: Callable) -> None:
    """Fill `r`'s kernel comparisons (at the sizes of the trial's token-budget steps), the Word-KD
    step with its teacher cached (head only), and the cache's size for the first task's rows.
    `fast_path`: the bench's timed training path (bench/run.py's), run here with the cached teacher."""
    from ..data.batching import collate
    from ..methods.teacher_cache import TeacherCache

    t = s.cfg.training
    sample = [collate([s.rows[i] for i in idx], s.tok.ids.pad, with_lm=s.with_lm) for idx in s.plan("tokens", 4)]
    positions = int(statistics.fmean(b.inputs.numel() for b in sample))
    targets = int(statistics.fmean(len(b.positions) for b in sample))
    n_embd = int(s.model.config.n_embd)
    r.kernels = {"gelu": gelu_comparison(n_embd, positions, s.device, s.amp),
                 "kd_losses": kd_loss_comparison(targets, len(s.tok), s.device, s.amp)}
    r.teacher_cache = teacher_cache_size(s.rows, s.with_lm, n_embd, s.amp)
    cache = TeacherCache(teacher, torch.arange(len(s.tok), device=s.device), s.rows, pad=s.tok.ids.pad,
                         with_lm=s.with_lm, device=s.device, amp_dtype=s.amp, tokens_per_batch=t.tokens_per_batch)
    cached, _ = fast_path(s, s.plan("tokens", opts.warmup + opts.steps), s.precision, opts, teacher=cache)
    r.kd_cached_step_ratio = r.train["fast"].steps_per_s / cached.steps_per_s
    del cache


def kd_effective_ratio(r, cfg) -> float:
    """A Word-KD step's cost over a plain one across a stage of trial config `cfg`: with the
    teacher's cache, the first epoch runs the teacher (the cache is made then, about an epoch of
    teacher forwards), later ones only its head (the cache's budget is not checked here)."""
    from ..methods import make_method

    epochs = cfg.training.epochs
    cached = getattr(make_method(cfg.method).p, "teacher_cache_mib", 0) > 0
    if r.kd_cached_step_ratio is None or epochs < 2 or not cached:
        return r.kd_step_ratio
    return (r.kd_step_ratio + (epochs - 1) * r.kd_cached_step_ratio) / epochs


# --------------------------------------------------------------------------- a whole grid
def grid_projection(plan, r, overrides: list[str] = ()) -> dict[str, Any]:
    """Training time of every cell and teacher of `plan` (the `overrides` applied to each, as to
    the measured cell) on this device, from the trained tokens plan.cell_tokens counts and the
    tokens/s bench result `r` measured for each batch policy; a Word-KD cell's steps cost what
    kd_effective_ratio says; with packing measured, also the time with that many trials packed.
    Training only (decoding is the trial projection's). The rates are the measured cell's (its
    model and first task), extrapolated to every cell."""
    from ..config import apply_overrides
    from ..errors import UserError
    from ..methods import method_class
    from ..plan import cell_tokens
    from ..teachers.store import teacher_config
    from ..trialconfig import trial_config

    rates = {"tokens": r.train["fast"].tokens_per_s, "paper": paper_path(r.train).tokens_per_s}
    gains = {p["policy"]: p["gain"] for p in (r.packing, r.packing_paper) if p}
    by_policy: dict[str, float] = {}
    tokens_total, unknown = 0, 0

    def add(config: dict, name: str, teacher_task: str | None = None) -> float:
        nonlocal tokens_total, unknown
        try:
            cfg = trial_config(apply_overrides(config, list(overrides)), name)
            if teacher_task is not None:
                cfg = teacher_config(cfg, teacher_task)
            tokens = cell_tokens(cfg)
        except UserError:
            unknown += 1
            return 0.0
        ratio = kd_effective_ratio(r, cfg) if method_class(cfg.method.name).uses_teacher_logits else 1.0
        seconds = tokens * ratio / rates[cfg.training.batch_policy]
        tokens_total += tokens
        by_policy[cfg.training.batch_policy] = by_policy.get(cfg.training.batch_policy, 0.0) + seconds
        return seconds

    cells_s = sum(add(c.config.to_dict(), f"cell {c.id}") for c in plan.cells)
    teachers_s = sum(add(job.config.to_dict(), f"teacher {name}", job.task) for name, job in plan.teachers.items())
    out: dict[str, Any] = {"cells": len(plan.cells), "teachers": len(plan.teachers), "unknown": unknown,
                           "trained_tokens": tokens_total, "cells_s": cells_s, "teachers_s": teachers_s,
                           "training_s": cells_s + teachers_s, "by_policy_s": by_policy}
    if gains:
        out["packed_training_s"] = sum(sec / gains.get(p, 1.0) for p, sec in by_policy.items())
        out["packing_gains"] = gains
    return out
