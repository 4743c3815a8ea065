"""finetune: the lower bound. Tasks one after another, QA loss only, no replay (as LAMOL)."""

from __future__ import annotations

from .base import Method, MethodParams
from .registry import register


@register("finetune")
class Finetune(Method):
    Params = MethodParams
