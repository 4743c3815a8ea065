"""WikiSQL -> `wikisql`, as decaNLP's WikiSQL class made it for LAMOL:

- context: "The table has columns {header, ", "-joined} and key words {MAX, ..., CONDOPS} -- {question}"
  (decaNLP's string, with its space before "--");
- question: "What is the translation from English to SQL?";
- answer: WikiSQL's query text, e.g. "SELECT Nationality FROM table WHERE Player = Terrence Ross".

What the public files allow (SOURCES.md): the original dev/test questions (`wikisql-raw/`) carry their
SQL but no tables, and the only headers available are those of the tables that the mlx-examples subset
(`wikisql-mlx-examples/`, first 1,000 train / 100 dev / 100 test questions) prints. So:

- test = every dev and test question whose table has a header there (dev too: the reference never
  uses dev, and it doubles the test set); the others are skipped and counted. mlx prints a header
  joined by ", ", and a few column names hold ", " themselves: a table whose mlx queries name such a
  column (or do not parse) has an unsure header, and its questions are skipped and counted too;
- train = the mlx train questions (WikiSQL's first 1,000 train questions), whose SQL is only given as
  text: it is parsed back with the table's header, text values unquoted, "FROM {table_id}" made
  "FROM table"; a query that does not parse unambiguously is skipped and counted.

The gold file holds {id, sql, header, answer, table: {id, header}} per test item (decaNLP's
`all_answers` plus the id).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import DataError
from ...tasks import TASKS
from ..lamol_json import Example
from ..sql_query import AGG_OPS, COND_OPS, context_text, named_query_text, query_text
from .base import Converted, ConvertReport, clean, require_input

RAW = ("dev.jsonl", "test.jsonl")  # wikisql-raw: {"table_id", "question", "sql"} per line
MLX = ("train.jsonl", "valid.jsonl", "test.jsonl")  # mlx: {"text": "table: ..\ncolumns: ..\nQ: ..\nA: .."}


def _lines(path: Path) -> list[tuple[int, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append((n, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: line {n}: not valid JSON: {e.msg}") from None
    return rows


def _mlx_fields(obj: Any, path: Path, n: int) -> tuple[str, list[str], str, str]:
    """(table_id, header pieces (the columns line split at ", "), question, SQL text) of one mlx line."""
    text = obj.get("text") if isinstance(obj, dict) else None
    parts = text.split("\n") if isinstance(text, str) else []
    heads = ("table: ", "columns: ", "Q: ", "A: ")
    if len(parts) != 4 or not all(p.startswith(h) for p, h in zip(parts, heads)):
        raise DataError(f"{path}: line {n}: expected text 'table: ..\\ncolumns: ..\\nQ: ..\\nA: ..'")
    table_id, columns, question, sql = (p[len(h):] for p, h in zip(parts, heads))
    return table_id, columns.split(", "), question, sql


# --------------------------------------------------------------------------- mlx SQL text
def column_names(pieces: list[str]) -> list[str]:
    """Every name a column may have: mlx prints the header joined by ", ", and a few column names hold
    ", " themselves, so any run of neighbouring pieces may be one column."""
    runs = [", ".join(pieces[i:j]) for i in range(len(pieces)) for j in range(i + 1, len(pieces) + 1)]
    return list(dict.fromkeys(runs))


def _conditions(text: str, names: list[str]) -> list[list[tuple[str, int, str]]]:
    """Every way to read 'column op value AND column op value ...' (text values in single quotes)."""
    readings: list[list[tuple[str, int, str]]] = []
    for name in names:
        for o, op in enumerate(COND_OPS):
            head = f"{name} {op} "
            if not text.startswith(head):
                continue
            rest = text[len(head):]
            # (value, what follows): a text value ends at a quote before " AND " or the end; a
            # number (mlx leaves those unquoted) at " AND " or the end
            if rest.startswith("'"):
                ends = [(rest[1:k], rest[k + 1:]) for k in range(1, len(rest))
                        if rest[k] == "'" and (k == len(rest) - 1 or rest[k + 1:].startswith(" AND "))]
            else:
                ends = [(rest, "")] + [(rest[:k], rest[k:]) for k in range(len(rest))
                                       if rest[k:].startswith(" AND ")]
            for value, tail in ends:
                if not tail:
                    readings.append([(name, o, value)])
                else:
                    readings += [[(name, o, value)] + more
                                 for more in _conditions(tail[len(" AND "):], names)]
    return readings


def parse_mlx_sql(sql: str, table_id: str, pieces: list[str]) -> tuple[str, bool] | None:
    """(the decaNLP answer of an mlx query, whether it names a column holding ", "), or None when the
    query does not read one way only."""
    head, marker = "SELECT ", f" FROM {table_id}"
    if not sql.startswith(head) or marker not in sql:
        return None
    select, _, where = sql[len(head):].partition(marker)
    if where and not where.startswith(" WHERE "):
        return None
    names = column_names(pieces)
    picks = [(0, select)] if select in names else []
    picks += [(a, select[len(agg) + 1:]) for a, agg in enumerate(AGG_OPS)
              if a and select.startswith(agg + " ") and select[len(agg) + 1:] in names]
    conds = _conditions(where[len(" WHERE "):], names) if where else [[]]
    # "x = 'a' AND y = 'b'" also reads as one value "a' AND y = 'b": take the readings with the most
    # conditions (a value holding "' AND column op '" is far less likely than two conditions)
    most = max((len(cs) for cs in conds), default=0)
    readings = [(named_query_text(a, s, cs), {s, *(c for c, _, _ in cs)} - set(pieces))
                for a, s in picks for cs in conds if len(cs) == most]
    answers = {text for text, _ in readings}
    if len(answers) != 1:
        return None
    return answers.pop(), all(merged for _, merged in readings)


# --------------------------------------------------------------------------- conversion
def _folder(sources: list[Path], marker: str, names: tuple[str, ...], task: str) -> Path:
    """The source folder holding `marker` (valid.jsonl: mlx; dev.jsonl: raw); it must hold `names`."""
    folder = require_input(sources, marker, task).parent
    for name in names:
        if not (folder / name).is_file():
            raise DataError(f"{folder / name}: no such file (this folder has {marker}, so it needs "
                            f"{', '.join(names)})")
    return folder


@dataclass
class Tables:
    """What the mlx files tell about tables: the printed header pieces, the tables whose header cannot
    be trusted (a query names a column holding ", ", or does not parse), and the mlx answers."""

    pieces: dict[str, list[str]]
    unsure: set[str]
    answers: dict[tuple[str, str], str]  # (table_id, question) -> answer, for dev/test cross-checks
    train: list[Example]


def _read_mlx(folder: Path, question: str, report: ConvertReport) -> Tables:
    tables = Tables({}, set(), {}, [])
    for name in MLX:
        path = folder / name
        report.inputs[f"mlx/{name}"] = str(path)
        rows = _lines(path)
        report.read[f"mlx/{name}"] = len(rows)
        for n, obj in rows:
            table_id, pieces, q, sql = _mlx_fields(obj, path, n)
            if tables.pieces.setdefault(table_id, pieces) != pieces:
                raise DataError(f"{path}: line {n}: table {table_id} has other columns than before")
            parsed = parse_mlx_sql(sql, table_id, pieces)
            if parsed is None or parsed[1]:
                tables.unsure.add(table_id)
            if name != "train.jsonl":
                if parsed is not None:
                    tables.answers[(table_id, clean(q))] = parsed[0]
            elif parsed is None:
                report.skip("train: SQL text not read one way")
            else:
                context = context_text(pieces, clean(q))  # the same text however the pieces group
                tables.train.append(Example(f"train-{n}", context, question, (parsed[0],), len(tables.train)))
    return tables


def convert(task: str, sources: list[Path]) -> Converted:
    question = TASKS.get(task).question
    report = ConvertReport(task, "wikisql")
    tables = _read_mlx(_folder(sources, "valid.jsonl", MLX, task), question, report)
    raw_dir = _folder(sources, "dev.jsonl", RAW, task)
    test, gold = [], []
    for name in RAW:
        path = raw_dir / name
        report.inputs[f"raw/{name}"] = str(path)
        rows = _lines(path)
        report.read[f"raw/{name}"] = len(rows)
        for n, row in rows:
            if not (isinstance(row, dict) and {"table_id", "question", "sql"} <= set(row)):
                raise DataError(f"{path}: line {n}: expected 'table_id', 'question' and 'sql'")
            table_id, q, sql = row["table_id"], clean(row["question"]), row["sql"]
            header = tables.pieces.get(table_id)
            if header is None:
                report.skip(f"{name.split('.')[0]}: table without a header here")
                continue
            if table_id in tables.unsure:
                report.skip(f"{name.split('.')[0]}: header unsure (', ' in a column)")
                continue
            try:
                answer = query_text(sql, header)
            except (KeyError, IndexError, TypeError):
                raise DataError(f"{path}: line {n}: 'sql' does not fit the table's {len(header)} columns") from None
            if tables.answers.get((table_id, q), answer) != answer:
                raise DataError(f"{path}: line {n}: its SQL reads {answer!r} with the mlx header, but the "
                                f"mlx file gives {tables.answers[(table_id, q)]!r}")
            qid = f"{name.split('.')[0]}-{n}"
            test.append(Example(qid, context_text(header, q), question, (answer,), len(test)))
            gold.append({"id": qid, "sql": sql, "header": header, "answer": answer,
                         "table": {"id": table_id, "header": header}})
    report.written = {"train": len(tables.train), "test": len(test)}
    report.notes += [
        f"headers: {len(tables.pieces)} tables from wikisql-mlx-examples",
        "train: the mlx train questions (WikiSQL's first 1,000 train questions), SQL parsed from text",
        "test: the dev and test questions whose table has a header (dev too: the reference never uses it)",
        f"the paper: {TASKS.get(task).paper_sizes[0]:,} train (a subsample of 56,355) / 15,878 test; "
        "the full tables are not available",
    ]
    return Converted(task, tables.train, test, report, gold=gold)
