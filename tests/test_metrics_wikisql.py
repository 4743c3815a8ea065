"""WikiSQL lfEM on hand-computed queries: decaNLP's exact parse (`lfem`) and LAMOL's fuzzy one
(`lfem_lamol`), quirks included."""

import pytest

from l2kd.data.sql_query import context_text, query_text
from l2kd.metrics import ScoreInput, score
from l2kd.metrics.wikisql import _aligned_run, decanlp_lf, lamol_lf, similarity

HEADER = ["Player", "No.", "Nationality", "Position", "Years in Toronto", "School/Club Team"]


def lfem(pred: str, sql: dict) -> tuple[float, float]:
    gold = [{"id": "x", "sql": sql, "header": HEADER, "answer": query_text(sql, HEADER)}]
    s = score(("em", "lfem"), ScoreInput([pred], [[gold[0]["answer"]]], ["x"], "wikisql", gold=gold))
    return s.aggregate["lfem"], s.aggregate["lfem_lamol"]


NATIONALITY = {"sel": 2, "agg": 0, "conds": [[0, 0, "Terrence Ross"]]}
COUNT = {"sel": 5, "agg": 3, "conds": [[1, 0, "3"]]}
TWO = {"sel": 0, "agg": 0, "conds": [[2, 0, "Canada"], [3, 0, "Guard"]]}


def test_query_text_is_wikisqls_repr():
    assert query_text(NATIONALITY, HEADER) == "SELECT Nationality FROM table WHERE Player = Terrence Ross"
    assert query_text(COUNT, HEADER) == "SELECT COUNT School/Club Team FROM table WHERE No. = 3"
    assert query_text({"sel": 1, "agg": 1, "conds": []}, HEADER) == "SELECT MAX No. FROM table"
    assert context_text(["A", "B"], "what  is a?") == (
        "The table has columns A, B and key words MAX, MIN, COUNT, SUM, AVG, =, >, <, OP, SELECT, WHERE, "
        "AND, COL, TABLE, CAPTION, PAGE, SECTION, OP, COND, QUESTION, AGG, AGGOPS, CONDOPS -- what is a?")


@pytest.mark.parametrize("pred, sql, expect", [
    # the gold query itself, in any case
    ("SELECT Nationality FROM table WHERE Player = Terrence Ross", NATIONALITY, (100, 100)),
    ("select nationality from table where player = terrence ross", NATIONALITY, (100, 100)),
    # aggregation
    ("SELECT COUNT School/Club Team FROM table WHERE No. = 3", COUNT, (100, 100)),
    ("SELECT School/Club Team FROM table WHERE No. = 3", COUNT, (0, 0)),  # aggregation missing
    ("SELECT MAX School/Club Team FROM table WHERE No. = 3", COUNT, (0, 0)),  # the wrong one
    # several conditions, in the gold's order only
    ("SELECT Player FROM table WHERE Nationality = Canada AND Position = Guard", TWO, (100, 100)),
    ("SELECT Player FROM table WHERE Position = Guard AND Nationality = Canada", TWO, (0, 0)),
    ("SELECT Player FROM table WHERE Nationality = Canada", TWO, (0, 0)),
    # a wrong column, in the select part and in a condition
    ("SELECT Position FROM table WHERE Player = Terrence Ross", NATIONALITY, (0, 0)),
    ("SELECT Nationality FROM table WHERE Position = Terrence Ross", NATIONALITY, (0, 0)),
    # a wrong value
    ("SELECT Nationality FROM table WHERE Player = Terrence Rose", NATIONALITY, (0, 0)),
    # unparsable: no select part, nothing at all, a condition without a column and operator
    ("hello", NATIONALITY, (0, 0)),
    ("", NATIONALITY, (0, 0)),
    ("SELECT Nationality FROM table WHERE Terrence Ross", NATIONALITY, (0, 0)),
    # LAMOL's leniency: misspelt columns match the closest header, spaces in values do not count
    ("SELECT Nationalty FROM table WHERE Playr = Terrence Ross", NATIONALITY, (0, 100)),
    ("SELECT COUNT School Team FROM table WHERE No = 3", COUNT, (0, 100)),
    ("SELECT Nationality FROM table WHERE Player = TerrenceRoss", NATIONALITY, (0, 100)),
    # LAMOL's quirk: the condition text is split at 'and' inside words too ("Sandford")
    ("SELECT Player FROM table WHERE Nationality = Sandford AND Position = Guard",
     {"sel": 0, "agg": 0, "conds": [[2, 0, "Sandford"], [3, 0, "Guard"]]}, (100, 0)),
])
def test_lfem_cases(pred, sql, expect):
    assert lfem(pred, sql) == expect


def test_parsed_forms():
    q = "select count school/club team from table where no. = 3 and position = guard"
    assert decanlp_lf(q, HEADER) == {"sel": 5, "agg": 3, "conds": [[1, 0, "3"], [3, 0, "guard"]]}
    assert lamol_lf(q, HEADER) == {"sel": 5, "agg": 3, "conds": [[1, 0, "3"], [3, 0, "guard"]]}
    # values keep their spaces in decaNLP's form and lose them in LAMOL's
    q = "select player from table where school/club team = new york city"
    assert decanlp_lf(q, HEADER)["conds"] == [[5, 0, "new york city"]]
    assert lamol_lf(q, HEADER)["conds"] == [[5, 0, "newyorkcity"]]


def test_lamol_similarity_by_hand():
    # LCS("abc", "abd") = 2 over the longer length 3; aligned run 2; length term min(3, 3)
    assert similarity("abc", "abd") == 2 / 3 + 2 / 1e4 - 3 / 1e8
    # the run is searched over shifts of the first string only
    assert _aligned_run("xab", "ab") == 2 and _aligned_run("ab", "xab") == 0
    # "no." vs "number": only "n" in common, and the run "n" at shift 0
    assert similarity("no.", "number") == 1 / 6 + 1 / 1e4 - 3 / 1e8


def test_lfem_needs_the_gold_file():
    with pytest.raises(ValueError, match="gold SQL"):
        score(("lfem",), ScoreInput(["x"], [["y"]], ["0"], "wikisql"))
