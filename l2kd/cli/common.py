"""The consoles people read: stderr for messages, stdout for results."""

from __future__ import annotations

import os
import sys

from rich.console import Console


def _console(stderr: bool = False) -> Console:
    """A console for people. Off a terminal (a pipe, a log file, CI, `ray exec`) rich would cut tables
    to 80 columns with "…": there they are printed whole, unless COLUMNS names a width."""
    stream = sys.stderr if stderr else sys.stdout
    whole = not stream.isatty() and not os.environ.get("COLUMNS")
    return Console(stderr=stderr, width=100_000 if whole else None)


console = _console(stderr=True)
out = _console()


def rate(x: float | None, unit: str = "") -> str:
    """A rate for a table: thousands separated, three significant digits below 100."""
    if x is None:
        return "-"
    return f"{x:,.0f}{unit}" if x >= 100 else f"{x:.3g}{unit}"
