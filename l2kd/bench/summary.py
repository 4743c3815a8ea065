"""`python -m l2kd.bench.summary FILE.json ...`: one line per `cli.py bench --out` file, the figures
the device check is read for (what ran, training tokens/s and MFU, the trial's decoding, the
projected trial)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def summarize(path: Path) -> str:
    r = json.loads(path.read_text())
    parts = [f"{path.stem}: {r['device']} {r['precision']}"]
    fast = r.get("train", {}).get("fast")
    if fast:
        mfu = "-" if fast.get("mfu") is None else f"{100 * fast['mfu']:.1f}%"
        parts.append(f"train {fast['tokens_per_s']:,.0f} tok/s, {fast['tflops']:.1f} TFLOP/s, MFU {mfu}, "
                     f"{1e3 / fast['steps_per_s']:.1f} ms/step")
    paper = r.get("train", {}).get("fast, paper")
    if paper:
        parts.append(f"paper batches {1e3 / paper['steps_per_s']:.1f} ms/step")
    graph = r.get("train", {}).get("fast, paper, graph")
    if graph:
        parts.append(f"paper step graph {1e3 / graph['steps_per_s']:.2f} ms/step ({graph['buckets']} buckets, "
                     f"{graph.get('syncs_per_step')} host waits/step)")
    kd_graph = r.get("train", {}).get("fast, paper, graph, word_kd")
    if kd_graph:
        kd = r["train"]["fast, paper, word_kd"]
        parts.append(f"Word-KD paper step graph {kd_graph['step_ms']:.2f} ms/step (eager {kd['step_ms']:.2f})")
    packed = r.get("packing_paper")
    if packed:
        parts.append(f"{packed['trials']} paper trials packed {packed['aggregate_tokens_per_s']:,.0f} tok/s "
                     f"({packed['gain']:.2f}x one)")
    d = r.get("decoding")
    if d:
        before = d["forward_calls_before"] / max(1, d["forward_calls"])
        parts.append(f"decoding {d['seconds']:.1f} s projected, {d['forward_calls']:,} calls "
                     f"({before:.1f}x fewer than before)")
        for kind, m in d.get("measured", {}).items():
            frac = m.get("bandwidth_fraction")
            parts.append(f"{kind} {m['tokens_per_s']:,.0f} tok/s, {m['ms_per_call']:.2f} ms/call"
                         + ("" if frac is None else f", {100 * frac:.0f}% of the bandwidth bound"))
    p = r.get("projection")
    if p:
        parts.append(f"trial {p['this_config_s'] / 60:.1f} min (decoding {100 * p['decode_share']:.0f}%)")
    return "; ".join(parts)


def main(argv: list[str]) -> int:
    for name in argv:
        path = Path(name)
        try:
            print(summarize(path))
        except (OSError, ValueError, KeyError) as e:
            print(f"{path}: unreadable ({type(e).__name__}: {e})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
