"""Tables as text: Markdown (GitHub tables) and LaTeX (booktabs), with the paper's look.

A table whose index has two levels is drawn in blocks, as the paper's tables are: a header row per
block (an order in Table 2, "mean over orders" in Table 3), then its rows. Scores have one decimal,
counts none, and an undefined figure is blank. No tabulate/jinja2: these few lines do it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import pandas as pd

COUNT_COLUMNS = ("orders", "seeds", "tasks", "stages", "stages done", "seed", "position", "n (A)", "n (B)",
                 "trained tokens", "generated tokens")


def cell(value: Any, column: str, digits: int = 1) -> str:
    if value is None or value is pd.NA or (isinstance(value, numbers.Real) and math.isnan(value)):
        return ""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if column in COUNT_COLUMNS or isinstance(value, numbers.Integral):
            return str(int(round(value)))
        return f"{value:.{digits}f}"
    return str(value)


def rows(df: pd.DataFrame, digits: int = 1) -> tuple[list[str], list[tuple[str | None, list[str]]]]:
    """(header, [(block title or None, cells)]) with the row label as the first cell."""
    blocked = df.index.nlevels == 2
    header = [str(df.index.names[-1] or "")] + [str(c) for c in df.columns]
    out: list[tuple[str | None, list[str]]] = []
    last_block = object()
    for idx, values in zip(df.index, df.itertuples(index=False)):
        block, label = (idx if blocked else (None, idx))
        if blocked and block != last_block:
            out.append((str(block), []))
            last_block = block
        out.append((None, [str(label)] + [cell(v, c, digits) for v, c in zip(values, df.columns)]))
    return header, out


def numeric_columns(df: pd.DataFrame) -> set:
    """Columns drawn right-aligned: numbers (blank cells included)."""
    return {c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) or df[c].isna().all()}


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def to_markdown(df: pd.DataFrame, digits: int = 1) -> str:
    if df.empty:
        return "_(nothing to show)_\n"
    header, body = rows(df, digits)
    align = ["---:" if c in numeric_columns(df) else ":---" for c in df.columns]
    lines = ["| " + " | ".join(map(_md_escape, header)) + " |", "|" + "|".join([":---"] + align) + "|"]
    for block, cells in body:
        if block is not None:
            lines.append("| **" + _md_escape(block) + "** |" + " |" * (len(header) - 1))
        else:
            lines.append("| " + " | ".join(map(_md_escape, cells)) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                  "→": r"$\rightarrow$", "±": r"$\pm$", "Δ": r"$\Delta$"}


def latex_escape(s: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in s)


def to_latex(df: pd.DataFrame, caption: str = "", digits: int = 1) -> str:
    header, body = rows(df, digits)
    n = len(header)
    spec = "l" + "".join("r" if c in numeric_columns(df) else "l" for c in df.columns)
    lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    first = True
    for block, cells in body:
        if block is not None:
            if not first:
                lines.append(r"\midrule")
            lines.append(rf"\multicolumn{{{n}}}{{c}}{{{latex_escape(block)}}} \\")
        else:
            lines.append(" & ".join(latex_escape(c) for c in cells) + r" \\")
        first = False
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
