"""The consoles people read: stderr for messages, stdout for results."""

from __future__ import annotations

import os
import sys

from rich.console import Console


def _width(stream) -> int | None:
    """Off a terminal (a pipe, a log file, CI, `ray exec`) rich would cut tables to 80 columns with
    "…": there they are printed whole, unless COLUMNS names a width; a terminal's own width otherwise."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit():
        return int(columns)
    return None if stream.isatty() else 100_000


console = Console(stderr=True, width=_width(sys.stderr))
out = Console(width=_width(sys.stdout))


def fit_to_streams() -> None:
    """Each command sizes the consoles from the streams and COLUMNS it runs with, not those of the
    moment the module was first imported (a test process, or a caller that sets COLUMNS later)."""
    console.width = _width(sys.stderr)
    out.width = _width(sys.stdout)


def rate(x: float | None, unit: str = "") -> str:
    """A rate for a table: thousands separated, three significant digits below 100."""
    if x is None:
        return "-"
    return f"{x:,.0f}{unit}" if x >= 100 else f"{x:.3g}{unit}"
