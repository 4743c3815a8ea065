"""WikiSQL logical-form exact match (`lfem`): the generated SQL parsed back into (select column,
aggregation, conditions) with the table's header, compared with the gold logical form. Two figures:

- `lfem`: decaNLP's `to_lf`. The select part must equal a column name (after an aggregation word if
  it is not a column itself); conditions are found by replacing exact column names and operators.
  Gold condition values are lower-cased.
- `lfem_lamol`: LAMOL/L2KD's `to_lf`, the one behind the published numbers, quirks included. Columns
  are chosen by a fuzzy string similarity (LCS over characters / the longer length, plus a tie-break
  on an aligned common run, minus a length term), for the select part with and without its first
  word (that word is then read as the aggregation), and for the text before every operator. The
  condition text is split at any '=', '>' or '<' and at the substring 'and' (also inside words).
  Values are compared with all spaces removed; gold values lower-cased.

Both: the query part before the first 'where' (also inside a word) is the select part, minus its
first word (select) and last two (from table); anything that fails to parse scores 0, as the
reference's `except: continue`. Deviation, stated: the prediction is lower-cased first. LAMOL's
files were lower-cased by decaNLP's field (`lower=True`), so its `to_lf` only ever saw lower-case
text; our files keep the source's case. On lower-case input both functions are the reference's.
"""

from __future__ import annotations

import re
from typing import Any, Callable

from ..data.sql_query import AGG_OPS, COND_OPS
from .core import SCORERS, ScoreInput, Scored, mean100, produces

_AGG_INDEX = {a.lower(): i for i, a in enumerate(AGG_OPS)}
_DECANLP_OPS = [op.lower() for op in COND_OPS]  # decaNLP: = > < op
_LAMOL_OPS = ["=", ">", "<"]  # LAMOL overrides its list without 'OP'
_LAMOL_OP_PATTERN = "|".join(_LAMOL_OPS)
_MARKED_PAIR = re.compile(r"(Col\d+ Cond\d+)")

LogicalForm = dict[str, Any]


# --------------------------------------------------------------------------- shared parts
def _headers(header: list[str]) -> tuple[list[tuple[str, int]], list[str]]:
    """(lower-cased names with their index, longest first (stable), and in table order)."""
    names = [h.lower() for h in header]
    by_length = sorted(((n, i) for i, n in enumerate(names)), key=lambda x: len(x[0]), reverse=True)
    return by_length, names


def _split_where(s: str) -> tuple[str, str | None]:
    if "where" in s:
        select, cond = s.split("where", 1)
        return select, cond
    return s, None


def _mark(cond: str, headers: list[tuple[str, int]], ops: list[str]) -> str:
    """Column names (longest first) -> 'Col{i}', operator tokens -> 'Cond{k}'."""
    cond = " " + cond + " "
    for name, idx in headers:
        cond = cond.replace(" " + name + " ", f" Col{idx} ")
    cond = cond.strip()
    for k, op in enumerate(ops):
        cond = " ".join(f"Cond{k}" if t == op else t for t in cond.split())
    return cond


def _read_marked(marked: str, names: list[str], ops: list[str],
                 value: Callable[[str], str]) -> list[list]:
    """[[column, op, value], ...] from 'Col{i} Cond{k} value ...' text."""
    parts = [x for x in _MARKED_PAIR.split(marked) if x.strip()]
    conds: list[list] = []
    for i, part in enumerate(parts):
        toks = part.split()
        if i % 2 == 0:  # a 'Col{i} Cond{k}' pair (int() fails, as the reference, when it is not)
            conds.append([int(toks[0].replace("Col", "")), int(toks[1].replace("Cond", ""))])
            continue
        if toks[-1] == "and":
            toks = toks[:-1]
        text = " ".join(toks)
        if "Col" in text:  # a column name inside a value: put the name back
            text = " ".join(names[int(t.replace("Col", ""))] if "Col" in t else t for t in text.split())
        if "Cond" in text:
            text = " ".join(ops[int(t.replace("Cond", ""))] if "Cond" in t else t for t in text.split())
        conds[-1].append(value(text))
    return conds


# --------------------------------------------------------------------------- decaNLP
def decanlp_lf(query: str, header: list[str]) -> LogicalForm:
    """decaNLP's `to_lf`: exact column names."""
    headers, names = _headers(header)
    select, cond = _split_where(query.lower())
    select = " ".join(select.split()[1:-2])
    sel, agg = None, 0
    for name, idx in headers:
        if name == select:
            sel = idx
    if sel is None:  # the first word must be an aggregation then (KeyError otherwise)
        words = select.split()
        agg = _AGG_INDEX[words[0]]
        rest = " ".join(words[1:])
        for name, idx in headers:
            if name == rest:
                sel = idx
    conds = [] if cond is None else _read_marked(_mark(cond, headers, _DECANLP_OPS), names,
                                                 _DECANLP_OPS, lambda v: v)
    return {"sel": sel, "conds": conds, "agg": agg}


# --------------------------------------------------------------------------- LAMOL
def _lcs_length(a: str, b: str) -> int:
    prev = [0] * (len(b) + 1)
    for ca in a:
        cur = [0]
        for j, cb in enumerate(b):
            cur.append(prev[j] + 1 if ca == cb else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def _aligned_run(a: str, b: str) -> int:
    """LAMOL's `lcsstr`: the longest run of a[i+j] == b[j] over shifts i of `a` (b always from 0)."""
    best = 0
    for i in range(len(a)):
        run = 0
        for j in range(len(b)):
            if i + j < len(a) and a[i + j] == b[j]:
                run += 1
                best = max(best, run)
            else:
                run = 0
    return best


def similarity(a: str, b: str) -> float:
    """LAMOL's `lcs` score (ZeroDivisionError when both are empty, as the reference)."""
    m, n = len(a), len(b)
    return _lcs_length(a, b) / max(m, n) + _aligned_run(a, b) / 1e4 - min(m, n) / 1e8


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # the first maximum, as numpy


def lamol_lf(query: str, header: list[str]) -> LogicalForm:
    """LAMOL/L2KD's `to_lf`: fuzzy column matching (see the module docstring)."""
    headers, names = _headers(header)
    select, cond = _split_where(query.lower())
    select = " ".join(select.split()[1:-2])
    without_first = " ".join(select.split()[1:])
    scores = []
    for name, _ in headers:
        scores += [similarity(name, select), similarity(name, without_first)]
    best = _argmax(scores)
    sel, agg = headers[best // 2][1], 0
    if best % 2 == 1:  # matched without the first word: that word is the aggregation
        agg = _AGG_INDEX[select.split()[0]]
    conds: list[list] = []
    if cond is not None:
        conds = _read_marked(_mark(_lamol_conditions(cond, headers), headers, _LAMOL_OPS), names,
                             _LAMOL_OPS, lambda v: v.replace(" ", ""))
    return {"sel": sel, "conds": conds, "agg": agg}


def _lamol_conditions(cond: str, headers: list[tuple[str, int]]) -> str:
    """Rewrite the condition text as 'column op value and column op value ...' with every column
    replaced by its closest header name."""
    raw = [c.strip() for c in re.split(_LAMOL_OP_PATTERN, cond)]
    pieces = [raw[0]]
    for middle in raw[1:-1]:  # 'value and column' between two operators
        pieces.extend(re.split("and", middle))
    pieces.append(raw[-1])
    for i in range(0, len(pieces), 2):
        pieces[i] = headers[_argmax([similarity(name, pieces[i]) for name, _ in headers])][0]
    for i, m in enumerate(re.finditer(_LAMOL_OP_PATTERN, cond)):
        pieces[2 * i] = pieces[2 * i] + " " + m.group()
    pairs = [" ".join(pieces[2 * i:2 * i + 2]) for i in range(len(pieces) // 2)]
    return " and ".join(pairs)


# --------------------------------------------------------------------------- scorer
def gold_form(sql: dict[str, Any], squash_spaces: bool) -> LogicalForm:
    def value(v: Any) -> str:
        v = str(v).lower()
        return v.replace(" ", "") if squash_spaces else v

    return {"sel": sql["sel"], "conds": [[c, o, value(v)] for c, o, v in sql["conds"]], "agg": sql["agg"]}


def lf_match(parse: Callable[[str, list[str]], LogicalForm], prediction: str, gold: dict[str, Any],
             squash_spaces: bool) -> float:
    try:
        return float(parse(prediction, gold["header"]) == gold_form(gold["sql"], squash_spaces))
    except Exception:  # noqa: BLE001 - as the reference: a prediction that cannot be parsed is wrong
        return 0.0


produces("lfem", "lfem", "lfem_lamol")


@SCORERS.register("lfem")
def score_lfem(inp: ScoreInput) -> Scored:
    if inp.gold is None:
        raise ValueError(f"lfem on {inp.task}: needs the gold SQL and table header of every example")
    exact = [lf_match(decanlp_lf, p, g, False) for p, g in zip(inp.predictions, inp.gold)]
    lamol = [lf_match(lamol_lf, p, g, True) for p, g in zip(inp.predictions, inp.gold)]
    return Scored({"lfem": mean100(exact), "lfem_lamol": mean100(lamol)},
                  {"lfem": exact, "lfem_lamol": lamol})
