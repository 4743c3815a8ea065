"""l2kd: Lifelong Language Knowledge Distillation (L2KD) on LAMOL, at the scale of experiment grids.

The layers, bottom up (README, "Layout", is the map; tests/test_house.py checks it): settings and
identity -> data, tokens, models -> losses, decoding, metrics, the engine -> methods and the trial ->
teachers -> grids (Ray in grid.py only); the report reads result files; the command line (l2kd/cli/)
is on top and the only place that prints for people.
"""

import os

# Large CPU tensors on transparent huge pages (PyTorch reads this once, at its first CPU allocation, so
# it is set here, before any l2kd module imports torch; Ray workers a local Ray starts inherit it).
# Why: a step over GPT-2's 50k vocabulary allocates and frees several batch x length x 50,257 float
# tensors (logits, log-probabilities, a teacher's logits); above glibc's 32 MiB mmap ceiling each one is
# a fresh mapping, faulted in 4 KiB at a time (docs/performance.md measures what that cost a Word-KD
# trial on a CPU). Numerics are untouched.
# THP_MEM_ALLOC_ENABLE=0 in the environment opts out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
