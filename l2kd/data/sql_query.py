"""WikiSQL's logical forms as text: the operator tables and the query string of WikiSQL `lib/query.py`
(`Query.__repr__`, which decaNLP and LAMOL used as the answer). Shared by the converter, which writes
these strings, and the lfEM metric, which parses them back.

A logical form is `{"sel": column index, "agg": AGG_OPS index, "conds": [[column, COND_OPS index, value]]}`.
"""

from __future__ import annotations

from typing import Any

AGG_OPS = ("", "MAX", "MIN", "COUNT", "SUM", "AVG")
COND_OPS = ("=", ">", "<", "OP")
SYMS = ("SELECT", "WHERE", "AND", "COL", "TABLE", "CAPTION", "PAGE", "SECTION", "OP", "COND", "QUESTION",
        "AGG", "AGGOPS", "CONDOPS")
# The "key words" list of decaNLP's WikiSQL context (OP appears twice there, as in decaNLP).
KEY_WORDS = ", ".join(AGG_OPS[1:] + COND_OPS + SYMS)


def query_text(sql: dict[str, Any], header: list[str]) -> str:
    """`SELECT {agg} {column} FROM table[ WHERE {column} {op} {value} AND ...]`, runs of whitespace
    collapsed to one space (as Query.__repr__)."""
    return named_query_text(sql["agg"], header[sql["sel"]], [(header[c], o, v) for c, o, v in sql["conds"]])


def named_query_text(agg: int, column: str, conds: list[tuple[str, int, Any]]) -> str:
    """The same text from column names instead of indices."""
    text = f"SELECT {AGG_OPS[agg]} {column} FROM table"
    if conds:
        text += " WHERE " + " AND ".join(f"{c} {COND_OPS[o]} {v}" for c, o, v in conds)
    return " ".join(text.split())


def context_text(header: list[str], question: str) -> str:
    """decaNLP's WikiSQL context: the table's columns, the key words, then the question."""
    return " ".join(f"The table has columns {', '.join(header)} and key words {KEY_WORDS} -- {question}".split())
