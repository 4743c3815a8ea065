"""Methods, one small module each, registered by name; the trial calls their hooks (see base).

What a method is (catalog: its kind, the paper's name and figures) reads without torch, so the
report (pandas only) can ask; the method modules and the registry load on the first use of anything
else here (build)."""

from __future__ import annotations

from typing import Any

from .catalog import (BASELINE, FACTS, GAP_CLOSER, LIFELONG, LOWER_BOUND, MULTITASK, SINGLE, TEACHER,
                      MethodFacts, display_name, facts, kd_methods, kind_of, paper_order)

_BUILT = ("METHODS", "Method", "MethodParams", "make_method", "method_params", "method_class")

__all__ = [*_BUILT, "BASELINE", "FACTS", "GAP_CLOSER", "LIFELONG", "LOWER_BOUND", "MULTITASK", "SINGLE",
           "TEACHER", "MethodFacts", "display_name", "facts", "kd_methods", "kind_of", "paper_order"]


def __getattr__(name: str) -> Any:
    if name in _BUILT:
        from . import build

        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
