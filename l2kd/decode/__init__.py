"""Decoding: batched KV-cache greedy and top-k decoding (loop.py), LAMOL's pseudo samples (pseudo.py),
the reference's one-sequence decoder (reference.py)."""

from .loop import decode, plan_batches
from .pseudo import PseudoStats, generate_pseudo, pseudo_counts
from .reference import decode_reference
from .sampling import pick_next, row_keys
from .settings import DecodeSettings, DecodeStats, amp

__all__ = ["DecodeSettings", "DecodeStats", "PseudoStats", "amp", "decode", "decode_reference",
           "generate_pseudo", "pick_next", "plan_batches", "pseudo_counts", "row_keys"]
