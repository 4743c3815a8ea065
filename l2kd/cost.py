"""A grid's cost before it runs: device-hours and wall time from a throughput and the plan's work.

The throughput is either measured (`cli.py bench CONFIG --out bench.json`: its whole-trial
projection, training and decoding together, as trained tokens per second of a trial; else its fast
training path) or stated (tokens/s). Every trained token of the work ahead (cells not finished,
teachers not on disk, as `plan.work` counts them) is taken to cost the same: cells of other methods
or shapes than the benchmarked one are estimates, and the figures say where their rate came from.
A trial holding `resources.gpu` of a GPU is charged that share per hour (GPU-hours); a CPU grid is
charged `resources.cpu` CPUs. Wall time: teachers first, then the cells, each wave limited by the
trials that fit on the devices at once (and `ray.max_concurrent`), never shorter than its longest item.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class Throughput:
    tokens_per_s: float  # trained tokens per second of one trial
    source: str  # where the figure comes from, for people


def read_throughput(text: str) -> Throughput:
    """A number (tokens/s, stated) or a `cli.py bench --out` JSON file."""
    try:
        rate = float(text)
    except ValueError:
        rate = None
    if rate is not None:
        if not rate > 0:
            raise ConfigError(f"--throughput: expected tokens/s above 0 or a bench JSON file, got {text!r}")
        return Throughput(rate, f"stated: {rate:,.0f} tokens/s")
    path = Path(text)
    if not path.is_file():
        raise ConfigError(f"--throughput: {text}: no such file (expected tokens/s or a `cli.py bench --out` file)")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{path}: not a JSON file ({e})"[:300]) from None
    where = f"{path} ({d.get('device', '?')}, {d.get('precision', '?')})" if isinstance(d, dict) else str(path)
    proj = d.get("projection") if isinstance(d, dict) else None
    if isinstance(proj, dict) and proj.get("this_config_s") and proj.get("trained_tokens"):
        rate = float(proj["trained_tokens"]) / float(proj["this_config_s"])
        return Throughput(rate, f"measured: {where}, its whole-trial projection (training and decoding): "
                                f"{rate:,.0f} trained tokens/s")
    fast = (d.get("train") or {}).get("fast") if isinstance(d, dict) else None
    if isinstance(fast, dict) and fast.get("tokens_per_s"):
        rate = float(fast["tokens_per_s"])
        return Throughput(rate, f"measured: {where}, training only (decoding not counted): {rate:,.0f} tokens/s")
    if isinstance(d, dict) and d.get("decoding") and not d.get("train"):
        raise ConfigError(f"{path}: train.fast.tokens_per_s: not found: a bench of decoding alone (--parts "
                          "decoding); --throughput needs one that timed training (without --parts)")
    raise ConfigError(f"{path}: projection.this_config_s or train.fast.tokens_per_s: not found; is it a "
                      "`cli.py bench --out` file?")


def _wave(seconds: list[float], slots: int) -> float:
    return max(max(seconds, default=0.0), sum(seconds) / slots) if seconds else 0.0


def project(plan, work: dict[str, Any], rate: Throughput, devices: float) -> dict[str, Any]:
    """Device-hours and wall time of the work ahead on `devices` GPUs (or CPUs for a CPU grid)."""
    res, spec = plan.spec.resources, plan.spec
    gpu = res.gpu > 0
    share = res.gpu if gpu else res.cpu
    fit = max(1, math.floor(devices / share + 1e-9))
    slots = min(fit, spec.ray.max_concurrent) if spec.ray.max_concurrent else fit
    cell_s = [work["cells"][c.id] / rate.tokens_per_s for c in plan.cells
              if plan.status(c).state != "done" and work["cells"][c.id]]
    teacher_s = [work["teachers"][n] / rate.tokens_per_s for n, j in plan.teachers.items()
                 if not plan.teacher_ready(j) and work["teachers"][n]]
    trial_h = (sum(cell_s) + sum(teacher_s)) / 3600
    return {"unit": "GPU-hours" if gpu else "CPU-hours", "device_hours": trial_h * share,
            "trial_hours": trial_h, "wall_s": _wave(teacher_s, slots) + _wave(cell_s, slots),
            "slots": slots, "devices": devices, "source": rate.source,
            "unknown": work.get("unknown", 0)}
