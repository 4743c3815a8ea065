"""What each method spent, beside its score: trained and generated tokens, device-seconds per phase,
peak memory (from each trial's `compute`, l2kd.compute). Lifelong rows: each order first averaged
over seeds, then the mean over orders, as the score tables; references: the mean over seeds.
Results written before compute was recorded have no figures: their cells are blank.
"""

from __future__ import annotations

import pandas as pd

from .load import Trial
from .tables import _sort_methods

PHASES = ("train", "pseudo", "eval", "teacher")
COLUMNS = ["Avg score", "trained tokens", "generated tokens", *[f"{p} s" for p in PHASES], "total s",
           "device h", "peak memory (GB)"]


def _row(t: Trial) -> dict:
    c = t.result.compute or {}
    final = t.final()
    row = {"method": t.label, "order_id": t.order_id, "seed": t.seed, "lifelong": t.role == "lifelong",
           "Avg score": sum(final.values()) / len(final) if final else float("nan")}
    if c:
        seconds = c.get("seconds", {})
        total = sum(float(seconds.get(p, 0.0)) for p in PHASES)
        row.update({"trained tokens": c.get("trained_tokens", 0), "generated tokens": c.get("generated_tokens", 0),
                    **{f"{p} s": float(seconds.get(p, 0.0)) for p in PHASES},
                    "total s": total, "device h": total / 3600,
                    "peak memory (GB)": c.get("peak_memory_bytes", 0) / 1e9})
    return row


def compute_table(trials: list[Trial]) -> pd.DataFrame:
    """One row per method (complete trials only); empty when no trial recorded its compute."""
    done = [t for t in trials if t.complete]
    if not any(t.result.compute for t in done):
        return pd.DataFrame(columns=COLUMNS)
    df = pd.DataFrame([_row(t) for t in done]).reindex(
        columns=["method", "order_id", "seed", "lifelong", *COLUMNS])
    per_order = df.groupby(["method", "order_id"])[COLUMNS].mean()
    out = per_order.groupby("method").mean()
    lifelong = df.groupby("method")["lifelong"].any()
    # a reference's "order ids" are its tasks (Single) or `all`: no order count for it
    out["orders"] = per_order.groupby("method").size().where(lifelong).astype("Int64")
    out = out.reindex(_sort_methods(out.index))
    out.index.name = "method"
    return out
