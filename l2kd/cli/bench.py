"""`cli.py bench`: run the benchmark and print its figures (l2kd.bench measures; this prints)."""

from __future__ import annotations

import argparse

from rich.table import Table

from .common import console, out, rate


def _bench_config(path: str, overrides: list[str]):
    """A trial config, or the first cell of a grid file; and the grid's plan (None for a trial)."""
    from l2kd.config import apply_overrides, load_yaml
    from l2kd.trialconfig import trial_config

    raw = load_yaml(path)
    if "method" in raw:
        from l2kd.trialconfig import load_trial_config

        return load_trial_config(path, overrides), None
    from l2kd.gridspec import load_grid
    from l2kd.plan import build_plan

    plan = build_plan(load_grid(path))
    cell = plan.cells[0]
    cfg = trial_config(apply_overrides(cell.config.to_dict(), overrides), f"{path}: {cell.id}")
    console.print(f"measuring the grid's first cell: {cell.id}", markup=False)  # once it is valid
    return cfg, plan


def _print_training(r, cfg) -> None:
    from l2kd.bench.step import GRAPH_PATH, KD_GRAPH_PATH, KD_PAPER_PATH

    fp = r.train["fast, paper"]
    if "fast" in r.train:
        _print_paths(r, cfg)
    g = r.train.get(GRAPH_PATH)
    if g is None:
        if "fast" not in r.train:
            out.print(f"paper batches: {fp.step_ms:.2f} ms / step, {rate(fp.tokens_per_s)} tokens/s", highlight=False)
        return
    # training.step_graph: the paper policy's floor with the step as one graph per bucket
    waits = "" if g.syncs_per_step is None else f", {g.syncs_per_step:.0f} host waits / step"
    out.print(f"paper batches, step graph ({g.buckets} buckets, captured in {g.warmup_s:.1f} s untimed): "
              f"{g.step_ms:.2f} ms / step against {fp.step_ms:.2f} eager ({fp.step_ms / g.step_ms:.2f}x), "
              f"{rate(g.tokens_per_s)} tokens/s, padding {100 * g.padding_fraction:.1f}%{waits}", highlight=False)
    kd, kg = r.train.get(KD_PAPER_PATH), r.train.get(KD_GRAPH_PATH)
    if kd and kg:
        out.print(f"paper batches, Word-KD (its teacher every step): step graph {kg.step_ms:.2f} ms / step "
                  f"against {kd.step_ms:.2f} eager ({kd.step_ms / kg.step_ms:.2f}x)", highlight=False)


def _print_paths(r, cfg) -> None:
    f, fp, ref = r.train["fast"], r.train["fast, paper"], r.train["reference"]
    t = Table(title="training (same rows; fast: token-budget batches; reference-style: the paper's "
                    "batches, fp32, two full-vocabulary passes)")
    for col in ("", "fast", "fast, paper batches", "reference-style", "fast / reference"):
        t.add_column(col, justify="right")
    t.add_row("tokens/s", rate(f.tokens_per_s), rate(fp.tokens_per_s), rate(ref.tokens_per_s),
              f"{f.tokens_per_s / ref.tokens_per_s:.2f}x")
    t.add_row("examples/step", f"{f.examples_per_step:.1f}", f"{fp.examples_per_step:.1f}",
              f"{ref.examples_per_step:.1f}", "")
    t.add_row("first steps, s (untimed)", f"{f.warmup_s:.1f}", f"{fp.warmup_s:.1f}", "",
              "compiling" if cfg.training.compile else "")
    if f.syncs_per_step is not None:
        t.add_row("host waits on the GPU / step", f"{f.syncs_per_step:.0f}", "", "",
                  ", ".join(f.sync_sites[:3]))
    t.add_row("model TFLOP/s", f"{f.tflops:.3g}", f"{fp.tflops:.3g}", f"{ref.tflops:.3g}",
              f"{f.tflops / ref.tflops:.2f}x")
    mfu = lambda x: "-" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    t.add_row("MFU", mfu(f.mfu), mfu(fp.mfu), mfu(ref.mfu), "" if f.mfu is None else "(needs a peak)")
    t.add_row("ms / step (paper batches: the floor)", f"{f.step_ms:.1f}", f"{fp.step_ms:.1f}",
              f"{1e3 / ref.steps_per_s:.1f}", "")
    t.add_row("padding, % of input positions", f"{100 * f.padding_fraction:.1f}", f"{100 * fp.padding_fraction:.1f}",
              "", "")
    held = lambda x: "-" if x is None else f"{x:,.0f}"  # noqa: E731
    t.add_row("MiB held for backward / step", held(f.saved_mib), held(fp.saved_mib), "", "")
    if f.peak_mib is not None:
        t.add_row("peak MiB / step", held(f.peak_mib), held(fp.peak_mib), "", "")
    out.print(t)
    fa = r.faithfulness
    out.print(f"faithfulness: fast vs reference-style loss on {fa['batches']} identical batches (fp32): "
              f"max |difference| {fa['max_abs_diff']:.2e} (loss about {fa['mean_loss']:.3f})", highlight=False)
    out.print(f"Word-KD: a step with the teacher's forward and the KL term takes {r.kd_step_ratio:.2f}x "
              "a plain step", highlight=False)
    k = r.kernels
    if k:
        gl, kl = k["gelu"], k["kd_losses"]
        out.print(f"GELU ({gl['positions']:,} x {gl['width']:,}, forward + backward): gelu_new {gl['gelu_new_ms']:.2f} ms, "
                  f"one kernel {gl['one_kernel_ms']:.2f} ms ({gl['speedup']:.2f}x)", highlight=False)
        out.print(f"Word-KD losses ({kl['positions']:,} x {kl['vocab']:,}, {kl['pseudo_fraction']:.0%} pseudo): "
                  f"separate {kl['separate_ms']:.1f} ms, {kl['separate_saved_mib']:,.0f} MiB held; one pass "
                  f"{kl['fused_ms']:.1f} ms, {kl['fused_saved_mib']:,.0f} MiB held ({kl['speedup']:.2f}x)", highlight=False)
    if r.kd_cached_step_ratio is not None:
        c = r.teacher_cache
        out.print(f"Word-KD with the teacher's hidden states cached (head only): {r.kd_cached_step_ratio:.2f}x a "
                  f"plain step; the cache of this task's {c['rows']:,} rows: {c['targets']:,} targets, "
                  f"{c['mib']:,.0f} MiB", highlight=False)


def _print_decoding(r) -> None:
    g, e = r.generation, r.evaluation
    t = Table(title="decoding (batched KV cache, finished rows dropped; reference: one sequence at a "
                    "time, whole prefix every step)")
    for col in ("", "fast tokens/s", "reference tokens/s", "fast / reference", "notes"):
        t.add_column(col, justify="right")
    t.add_row("pseudo samples (top-k)", rate(g["fast_tokens_per_s"]), rate(g["reference_tokens_per_s"]),
              f"{g['ratio']:.1f}x", f"{g['samples']} samples x {g['tokens_each']} tokens")
    t.add_row("evaluation (greedy)", rate(e["fast_tokens_per_s"]), rate(e["reference_tokens_per_s"]),
              f"{e['ratio']:.1f}x", f"identical answers {e['identical_outputs']}"
              + (f"; graphs = eager {e['graphs_match_eager']}" if "graphs_match_eager" in e else ""))
    out.print(t)
    _print_trial_decoding(r.decoding)
    if r.decoding.get("profile"):
        out.print("top operators of decoding, " + r.decoding["profile"], markup=False, highlight=False)


def _print_trial_decoding(d: dict) -> None:
    """The whole trial's decoding, pass by pass (bench.decoding)."""
    t = Table(title="the trial's decoding (rows end at their data's lengths; sequential forward calls "
                    "counted by the decoder's loop; time projected from the timed passes)")
    for col in ("pass", "", "runs", "rows", "new tokens", "forward calls", "before", "batches", "s / run"):
        t.add_column(col, justify="right" if col not in ("pass", "") else "left")
    for p in d["passes"]:
        t.add_row(p["kind"] + (" (timed)" if p["measured"] else ""), p["label"], str(p["times"]),
                  f"{p['rows']:,}", f"{p['new_tokens']:,}", f"{p['forward_calls']:,}",
                  f"{p['forward_calls_before']:,}", str(p["batches"]),
                  "-" if p["seconds"] is None else f"{p['seconds']:.2f}")
    out.print(t)
    ratio = d["forward_calls_before"] / max(1, d["forward_calls"])
    out.print(f"whole trial: {d['forward_calls']:,} sequential forward calls (before: "
              f"{d['forward_calls_before']:,}, {ratio:.1f}x fewer), {d['new_tokens']:,} new tokens, "
              f"decoding projected at {d['seconds']:.1f} s", highlight=False)
    for kind, m in d["measured"].items():
        frac = m.get("bandwidth_fraction")
        out.print(f"  timed {kind} pass ({m['label']}): {m['seconds']:.2f} s, {rate(m['tokens_per_s'])} "
                  f"tokens/s, {m['ms_per_call']:.2f} ms a call, {m['batches']} batches, "
                  f"{m['host_checks']} host checks, {m['compactions']} compactions, "
                  f"{m['graph_replays']} graph replays"
                  + ("" if frac is None else f", {100 * frac:.0f} % of the memory-bandwidth bound"),
                  highlight=False)


def bench_parts(value: str) -> str:
    parts = [p.strip() for p in value.split(",") if p.strip()]
    bad = [p for p in parts if p not in ("training", "paper", "decoding")]
    if bad or not parts:
        raise argparse.ArgumentTypeError(f"{value!r}: name training, paper (its paper-policy paths only), "
                                         "decoding, or several (comma-separated)")
    return ",".join(parts)


def cmd_bench(args: argparse.Namespace) -> int:
    from l2kd.bench import BenchOptions, packed_throughput, run_bench
    from l2kd.bench.step import paper_path
    from l2kd.io import write_json

    cfg, plan = _bench_config(args.config, args.set)
    opts = BenchOptions(steps=args.steps, peak_tflops=args.peak_tflops, packing=args.packing,
                        profile=args.profile, parts=tuple(args.parts.split(",")),
                        decode_graphs=False if args.no_decode_graphs else None)
    with console.status("benchmarking") as status:
        r = run_bench(cfg, opts, on_event=lambda name, **e: status.update(f"benchmarking: {e['part']}"))
        if args.packing > 1 and "fast" in r.train:
            status.update(f"benchmarking: {args.packing} trials packed on one device")
            r.packing = packed_throughput(cfg, opts, r.train["fast"].tokens_per_s)
        if args.packing > 1 and r.train:
            status.update(f"benchmarking: {args.packing} trials packed on one device, paper batches")
            r.packing_paper = packed_throughput(cfg, opts, paper_path(r.train).tokens_per_s, policy="paper")
        if plan is not None and "fast" in r.train:
            from l2kd.bench.step import grid_projection

            r.grid = grid_projection(plan, r, args.set)
    m = r.model
    out.print(f"{r.device}, {r.precision}; GPT-2 {m['n_layer']} layers x {m['n_embd']}, vocab {m['vocab']:,}, "
              f"{m['parameters'] / 1e6:.1f}M parameters; task {m['task']} ({m['rows']} rows, "
              f"{'QA+LM' if m['with_lm'] else 'QA'})", highlight=False)
    if r.train:
        _print_training(r, cfg)
    if r.decoding:
        _print_decoding(r)
    if r.projection:
        pr = r.projection
        out.print(f"projected whole trial ({', '.join(cfg.tasks)}; {pr['trained_tokens'] / 1e6:.2f}M trained "
                  f"tokens, {pr['teacher_tokens'] / 1e6:.2f}M for teachers): this config "
                  f"{pr['this_config_s'] / 60:.1f} min (decoding {100 * pr['decode_share']:.0f} %), "
                  f"reference-style {pr['reference_s'] / 60:.1f} min ({pr['speedup']:.1f}x)", highlight=False)
    if r.grid:
        gr = r.grid
        packed = (f", {gr['packed_training_s'] / 3600:.2f} h with the measured packing"
                  if "packed_training_s" in gr else "")
        out.print(f"projected grid training on this device ({gr['cells']} cells, {gr['teachers']} teachers, "
                  f"{gr['trained_tokens'] / 1e6:,.1f}M tokens{', %d unknown' % gr['unknown'] if gr['unknown'] else ''}): "
                  f"{gr['training_s'] / 3600:.2f} h one trial at a time{packed} (training only, at the "
                  "measured cell's rates)", highlight=False)
    if r.packing_paper:
        p = r.packing_paper
        out.print(f"packing {p['trials']} trials on paper batches: {rate(p['aggregate_tokens_per_s'])} tokens/s "
                  f"together vs {rate(p['single_tokens_per_s'])} alone ({p['gain']:.2f}x)", highlight=False)
    if r.packing:
        p = r.packing
        out.print(f"packing {p['trials']} trials on this device: {rate(p['aggregate_tokens_per_s'])} tokens/s "
                  f"together vs {rate(p['single_tokens_per_s'])} alone ({p['gain']:.2f}x)", highlight=False)
    if r.profile:
        out.print("top operators of the fast path (3 steps):", highlight=False)
        out.print(r.profile, markup=False, highlight=False)
    if args.out:
        write_json(args.out, r.to_dict())
        console.print(f"figures written to {args.out}", markup=False)
    return 0
