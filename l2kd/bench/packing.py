"""Trial packing: several trials' training on one device at once, against one alone.

A small model leaves a large GPU mostly idle; the grid can give each trial a fraction of a GPU
(`resources: {gpu: 0.25}`) so Ray puts several on one device. Whether that pays is measured here:
K processes each run the fast training path on the same device, their timed steps started together
(a barrier), and the aggregate tokens/s is compared with one process alone.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any


def _worker(cfg_dict: dict, opts, barrier, out, policy: str = "tokens") -> None:
    from ..trialconfig import trial_config
    from .run import BenchSetup, fast_path

    s = BenchSetup(trial_config(cfg_dict, "bench packing"))
    plan = s.plan(policy, opts.warmup + opts.steps, seed=barrier.parties)
    graph = s.cfg.training.step_graph and policy == "paper"  # the step graph where the trial runs it
    figures, _ = fast_path(s, plan, s.precision, opts, before_timing=barrier.wait, graph=graph)
    steps = opts.steps
    out.put((figures.tokens_per_s, steps / figures.steps_per_s))  # (rate, seconds timed)


def packed_throughput(cfg, opts, single_tokens_per_s: float, policy: str = "tokens") -> dict[str, Any]:
    """Aggregate tokens/s of `opts.packing` concurrent trials (spawned processes) on this device,
    each on `policy`'s batches ('tokens', or 'paper': what reproduction grids run, launch-bound)."""
    import gc

    import torch

    k = opts.packing
    # The measuring process keeps its cached GPU memory (tens of GiB after the bench's paths); hand it
    # back first, or K fresh processes on the same GPU run out of memory.
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    ctx = mp.get_context("spawn")  # CUDA and DeepSpeed do not survive a fork
    barrier, out = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(cfg.to_dict(), opts, barrier, out, policy)) for _ in range(k)]
    for p in procs:
        p.start()
    results = [out.get(timeout=3600) for _ in procs]
    for p in procs:
        p.join()
    # the timed regions start together; the aggregate is every process's tokens over the longest
    tokens = sum(rate * secs for rate, secs in results)
    aggregate = tokens / max(secs for _, secs in results)
    return {"trials": k, "policy": policy, "aggregate_tokens_per_s": aggregate, "single_tokens_per_s": single_tokens_per_s,
            "gain": aggregate / single_tokens_per_s}
