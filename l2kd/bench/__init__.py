"""Measuring a trial's speed: `run_bench` (what `cli.py bench` runs), FLOP accounting, the
reference-style training step it is compared with, and trial packing."""

from .packing import packed_throughput
from .run import BenchOptions, BenchResult, run_bench

__all__ = ["BenchOptions", "BenchResult", "packed_throughput", "run_bench"]
