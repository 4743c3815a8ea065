"""`cli.py pretrain`: a GPT-2 base on plain text (for model.pretrained), with a progress bar."""

from __future__ import annotations

import argparse
import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .common import console


def cmd_pretrain(args: argparse.Namespace) -> int:
    from l2kd.pretrain import load_pretrain_config, run_pretrain

    cfg = load_pretrain_config(args.config, args.set)
    start = time.perf_counter()
    progress = Progress(TextColumn("[bold]pretraining"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]}"),
                        TimeElapsedColumn(), console=console, disable=args.quiet)
    bar = None

    def on_event(name: str, **e) -> None:
        nonlocal bar
        if name == "start":
            progress.console.print(f"pretraining {e['params'] / 1e6:.1f}M parameters on {e['blocks']} "
                                   f"sequences ({e['device']}, {e['precision']}) -> {e['out']}",
                                   markup=False, soft_wrap=True)
            bar = progress.add_task("", total=e["steps"], completed=e["step"], loss="-", speed="")
        elif name == "resume":
            progress.console.print(f"  resuming at step {e['step']}")
        elif name == "step" and bar is not None:
            progress.update(bar, completed=e["step"], loss=f"{e['loss']:.3f}",
                            speed=f"{e['tokens_per_s']:.0f} tok/s")
        elif name == "done_already":
            progress.console.print(f"{e['out']}: already pretrained with these settings", markup=False)

    with progress:
        manifest = run_pretrain(cfg, args.out, fresh=args.fresh, on_event=on_event)
    seen, loss = manifest["seen"], manifest["loss"]
    overlap = manifest["corpus"].get("disjoint_from")
    console.print(f"done in {time.perf_counter() - start:.1f} s: {seen['steps']} steps, {seen['tokens']:,} "
                  f"tokens ({seen['passes']:.2f} passes over {manifest['corpus']['tokens']:,}), loss "
                  f"{loss['first']:.3f} -> {loss['last']:.3f}"
                  + (f"; {overlap['shared_ngrams']} of {overlap['corpus_ngrams']:,} corpus 8-grams in "
                     "the held-out tasks" if overlap else "")
                  + f"; base: {args.out} (model.pretrained)")
    return 0
