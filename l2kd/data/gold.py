"""Gold-answer files: what the WOZ and WikiSQL metrics need beyond the answer text.

As the reference, they sit beside the task's data as `{task}_answers.json`, one entry per test item, in
the order of the test file:

- WOZ (`dialogue`): `[turn_id, answer]` pairs, e.g. `["en_12_3", "food: chinese; address"]` (decaNLP's
  `all_answers`); dsEM walks the turns of each dialogue by these ids.
- WikiSQL (`sql`): `{"id", "sql": {"sel", "agg", "conds"}, "header": [...], "answer", "table": {"id",
  "header"}}`; lfEM parses the prediction with the header and compares it with `sql`. `header` may also
  come from `table.header` alone (decaNLP's files had both).

The reference ordered its file by sorted qa id; our converters write the test file and this file in the
same order, so items are matched by position and, where an entry names an id, checked by id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from ..errors import DataError
from .lamol_json import Example

GoldKind = Literal["dialogue", "sql"]


def gold_file(task: str) -> str:
    return f"{task}_answers.json"


def _fail(path: Path, where: str, msg: str) -> DataError:
    return DataError(f"{path}: {where}: {msg}")


def _dialogue_entry(entry: Any, path: Path, where: str) -> dict[str, Any]:
    if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, str) for x in entry)):
        raise _fail(path, where, "expected a [turn_id, answer] pair of strings")
    return {"id": entry[0], "answer": entry[1]}


def _sql_entry(entry: Any, path: Path, where: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise _fail(path, where, "expected an object with 'sql', 'header' and 'answer'")
    header = entry.get("header", (entry.get("table") or {}).get("header"))
    if not (isinstance(header, list) and header and all(isinstance(h, str) for h in header)):
        raise _fail(path, where, "'header' (or 'table.header') must be a non-empty list of strings")
    sql = entry.get("sql")
    ok = (isinstance(sql, dict) and isinstance(sql.get("sel"), int) and isinstance(sql.get("agg"), int)
          and isinstance(sql.get("conds"), list)
          and all(isinstance(c, list) and len(c) == 3 and isinstance(c[0], int) and isinstance(c[1], int)
                  for c in sql["conds"]))
    if not ok:
        raise _fail(path, where, "'sql' must be {sel: int, agg: int, conds: [[column, op, value], ...]}")
    if not isinstance(entry.get("answer"), str):
        raise _fail(path, where, "'answer' must be a string")
    out = {"sql": sql, "header": header, "answer": entry["answer"]}
    if "id" in entry:
        out["id"] = str(entry["id"])
    return out


def read_gold(path: Path, kind: GoldKind) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"{path}: no such file (the gold answers the {kind} metric needs; "
                        "`python cli.py data convert` writes it beside the test file)")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
    if not isinstance(entries, list):
        raise DataError(f"{path}: top level: expected a list with one entry per test item")
    read = _dialogue_entry if kind == "dialogue" else _sql_entry
    return [read(e, path, f"[{i}]") for i, e in enumerate(entries)]


def attach_gold(examples: list[Example], gold: list[dict[str, Any]], path: Path) -> list[Example]:
    """Each test example with its gold record; the file must hold one per item, in the same order."""
    if len(gold) != len(examples):
        raise DataError(f"{path}: holds {len(gold)} entries but the test file has {len(examples)} "
                        "items; convert the task again so both come from the same run")
    out = []
    for i, (ex, g) in enumerate(zip(examples, gold)):
        if "id" in g and g["id"] != ex.id:
            raise DataError(f"{path}: [{i}]: id {g['id']!r} but the test file's item {i} is {ex.id!r} "
                            "(the entries must follow the test file's order)")
        out.append(Example(ex.id, ex.context, ex.question, ex.answers, ex.index, gold=g))
    return out
