"""Converters on small hand-written raw files: exact contexts, answers, gold records, counts, and the
dispatcher's rules (no overwrite without force, nothing half-written, same bytes twice)."""

import json

import pytest

from l2kd.config import DataConfig
from l2kd.data import load_split
from l2kd.data.convert import convert_sources
from l2kd.data.convert.base import held_out
from l2kd.data.convert.wikisql import parse_mlx_sql
from l2kd.data.lamol_json import Example, read_lamol, to_lamol
from l2kd.errors import ArtifactError, ConfigError, DataError


def dump(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return path


def exs(folder, task, split):
    return read_lamol(folder / f"{task}_to_squad-{split}-v2.0.json")


# --------------------------------------------------------------------------- WOZ
def turn(transcript, acts=(), inform=(), request=()):
    belief = [{"slots": [["slot", r]], "act": "request"} for r in request]
    belief += [{"slots": [list(p)], "act": "inform"} for p in inform]
    return {"transcript": transcript, "system_acts": list(acts), "belief_state": belief, "turn_idx": 0}


WOZ_DIALOGUE = {"dialogue_idx": 7, "dialogue": [
    turn("I want  cheap food", inform=[("price range", "cheap")]),
    turn("Chinese please", acts=["food"], inform=[("price range", "cheap"), ("food", "chinese")]),
    turn("What is the address?", acts=[["area", "north"], "phone"],
         inform=[("price range", "cheap"), ("food", "chinese")], request=["address", "phone"]),
    turn("Actually, thai food.", inform=[("price range", "cheap"), ("food", "thai")]),
    turn("Thanks, bye", inform=[("price range", "cheap"), ("food", "thai")]),
]}


def woz_source(tmp_path):
    src = tmp_path / "woz"
    dump(src / "woz_train_en.json", [WOZ_DIALOGUE])
    dump(src / "woz_test_en.json", [WOZ_DIALOGUE, {"dialogue_idx": 3, "dialogue": [turn("hi")]}])
    return src


def test_woz_examples_exactly(tmp_path):
    out = tmp_path / "out"
    outcome = convert_sources([woz_source(tmp_path)], "woz.en", out)
    test = exs(out, "woz.en", "test")
    assert [e.context for e in test[:3]] == [
        "I want cheap food",  # whitespace collapsed
        "food -- Chinese please",
        "area: north, phone -- What is the address?"]
    assert [e.answers[0] for e in test] == [
        "price range: cheap;",
        "food: chinese;",  # only the change against the previous turn
        "; address, phone",  # requests only
        "food: thai;",  # a slot with a new value
        "None",  # no change
        "None"]
    assert {e.question for e in test} == {"What is the change in state?"}
    # ids count dialogues and turns in file order (not dialogue_idx)
    assert [e.id for e in test] == ["en_0_0", "en_0_1", "en_0_2", "en_0_3", "en_0_4", "en_1_0"]
    gold = json.loads((out / "woz.en_answers.json").read_text())
    assert gold[2] == ["en_0_2", "; address, phone"] and len(gold) == 6
    assert outcome.reports[0].written == {"train": 5, "test": 6}
    # the data layer reads it back with its gold, and the metric scores the gold itself 100
    loaded = load_split("woz.en", "test", DataConfig(dir=str(out)))
    assert loaded[3].gold == {"id": "en_0_3", "answer": "food: thai;"}


def test_malformed_woz_names_the_item(tmp_path):
    src = tmp_path / "woz"
    dump(src / "woz_train_en.json", [{"dialogue": [{"transcript": "x"}]}])
    dump(src / "woz_test_en.json", [])
    with pytest.raises(DataError, match=r"woz_train_en.json: \[0\].dialogue\[0\]: expected 'transcript'"):
        convert_sources([src], "woz.en", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- WikiSQL
HEAD = ["Player", "No.", "Nationality"]
COMMA = ["Team", "Wins, losses", "Coach"]  # a column name holding ", "


def mlx_line(table, header, q, sql):
    return json.dumps({"text": f"table: {table}\ncolumns: {', '.join(header)}\nQ: {q}\nA: {sql}"})


def wikisql_source(tmp_path):
    mlx, raw = tmp_path / "mlx", tmp_path / "raw"
    dump(mlx / "train.jsonl", "\n".join([
        mlx_line("1-1", HEAD, "Who wears 3?", "SELECT Player FROM 1-1 WHERE No. = 3"),
        mlx_line("1-1", HEAD, "How many from O'Neill  College?",
                 "SELECT COUNT Player FROM 1-1 WHERE Nationality = 'O'Neill' AND No. > 2"),
        mlx_line("1-1", HEAD, "broken", "SELECT Nobody FROM 1-1"),
        mlx_line("1-3", COMMA, "Which team?", "SELECT Team FROM 1-3 WHERE Wins, losses = '3, 1'"),
    ]) + "\n")
    dump(mlx / "valid.jsonl", mlx_line("1-2", HEAD, "Who is from Canada?",
                                       "SELECT Player FROM 1-2 WHERE Nationality = 'Canada'") + "\n")
    dump(mlx / "test.jsonl", mlx_line("1-4", COMMA, "x", "SELECT Coach FROM 1-4 WHERE Wins, losses = '2'") + "\n")
    dump(raw / "dev.jsonl", "\n".join(json.dumps(r) for r in [
        {"table_id": "1-2", "question": "Who is from Canada?", "sql": {"sel": 0, "agg": 0, "conds": [[2, 0, "Canada"]]}},
        {"table_id": "1-2", "question": "Highest number?", "sql": {"sel": 1, "agg": 1, "conds": []}},
        {"table_id": "9-9", "question": "unknown table", "sql": {"sel": 0, "agg": 0, "conds": []}},
    ]) + "\n")
    dump(raw / "test.jsonl", json.dumps(
        {"table_id": "1-4", "question": "y", "sql": {"sel": 0, "agg": 0, "conds": []}}) + "\n")
    return [mlx, raw]


def test_mlx_sql_reads_back_as_the_wikisql_query():
    assert parse_mlx_sql("SELECT COUNT Player FROM 1-1 WHERE Nationality = 'O'Neill' AND No. > 2", "1-1", HEAD) == (
        "SELECT COUNT Player FROM table WHERE Nationality = O'Neill AND No. > 2", False)
    # a quoted value holding " AND " is still one value when no condition follows it
    assert parse_mlx_sql("SELECT Player FROM 1-1 WHERE Nationality = 'Trinidad AND Tobago'", "1-1", HEAD)[0] == (
        "SELECT Player FROM table WHERE Nationality = Trinidad AND Tobago")
    pieces = ", ".join(COMMA).split(", ")  # what the mlx line gives: the comma column in two pieces
    assert parse_mlx_sql("SELECT Team FROM 1-3 WHERE Wins, losses = '3, 1'", "1-3", pieces) == (
        "SELECT Team FROM table WHERE Wins, losses = 3, 1", True)
    assert parse_mlx_sql("SELECT Nobody FROM 1-1", "1-1", HEAD) is None
    assert parse_mlx_sql("SELECT Player FROM 2-2", "1-1", HEAD) is None


def test_wikisql_examples_and_gold(tmp_path):
    out = tmp_path / "out"
    report = convert_sources(wikisql_source(tmp_path), "wikisql", out).reports[0]
    train = exs(out, "wikisql", "train")
    assert [e.answers[0] for e in train] == [
        "SELECT Player FROM table WHERE No. = 3",
        "SELECT COUNT Player FROM table WHERE Nationality = O'Neill AND No. > 2",
        "SELECT Team FROM table WHERE Wins, losses = 3, 1"]  # fine for training: the text is right
    assert train[1].context == ("The table has columns Player, No., Nationality and key words MAX, MIN, COUNT, "
                                "SUM, AVG, =, >, <, OP, SELECT, WHERE, AND, COL, TABLE, CAPTION, PAGE, SECTION, "
                                "OP, COND, QUESTION, AGG, AGGOPS, CONDOPS -- How many from O'Neill College?")
    assert train[0].question == "What is the translation from English to SQL?"
    test = exs(out, "wikisql", "test")
    assert [(e.id, e.answers[0]) for e in test] == [
        ("dev-1", "SELECT Player FROM table WHERE Nationality = Canada"),
        ("dev-2", "SELECT MAX No. FROM table")]
    gold = json.loads((out / "wikisql_answers.json").read_text())
    assert gold[1] == {"id": "dev-2", "sql": {"sel": 1, "agg": 1, "conds": []}, "header": HEAD,
                       "answer": "SELECT MAX No. FROM table", "table": {"id": "1-2", "header": HEAD}}
    assert report.skipped == {"train: SQL text not read one way": 1, "dev: table without a header here": 1,
                              "test: header unsure (', ' in a column)": 1}
    assert report.read == {"mlx/train.jsonl": 4, "mlx/valid.jsonl": 1, "mlx/test.jsonl": 1,
                           "raw/dev.jsonl": 3, "raw/test.jsonl": 1}


# --------------------------------------------------------------------------- CNN/DailyMail
def test_cnn_pairs_deduplicated_and_held_out(tmp_path):
    base = tmp_path / "lfpt5" / "Summarization" / "data" / "cnndm"
    lines = [f"Article number {i}  here.\tHighlight {i} . Second {i} ." for i in range(10)]
    for seed in ("0_42", "1_142", "2_242"):
        for split in ("train", "valid"):
            dump(base / seed / f"{split}.txt", "\n".join(lines[:5] if split == "train" else lines[5:]) +
                 ("\nno tab here\n" if seed == "0_42" and split == "train" else "\n"))
    out = tmp_path / "out"
    report = convert_sources([tmp_path / "lfpt5"], "cnn_dailymail", out).reports[0]
    train, test = exs(out, "cnn_dailymail", "train"), exs(out, "cnn_dailymail", "test")
    assert (len(train), len(test)) == (8, 2)  # 10 distinct pairs, 20% held out
    assert report.skipped == {"duplicate article": 20, "not 'article<TAB>summary'": 1}
    assert {e.context for e in train + test} == {f"Article number {i} here." for i in range(10)}
    assert test[0].question == "What is the summary?" and test[0].answers[0].startswith("Highlight")
    assert held_out(list(range(10)))[1] == [int(e.context.split()[2]) for e in test]


# --------------------------------------------------------------------------- classification
def tc_source(tmp_path):
    cl = tmp_path / "cl" / "CL_Benchmark"
    dump(cl / "TC/agnews/train.json", [
        {"label": "Science or Technology", "sentence": "Title: Chips\nText: New  chips.\n"},
        {"label": "World", "sentence": "Title: Vote\nText: An election.\n"},
        {"label": "World", "sentence": "Title: Vote\nText: An election.\n"},  # a duplicate
        {"label": "Sports", "sentence": "Title: Völler quits\nText: Coach leaves.\n"},  # also in the test file
        {"label": "Weather", "sentence": "Title: Rain\nText: Wet.\n"}])  # not a label word
    dump(cl / "SC/yelp/train.json", [{"label": ["very negative", "negative", "neutral", "positive",
                                                "very positive"][i % 5], "sentence": f"Text: review {i}\n"}
                                     for i in range(10)])
    lf = tmp_path / "lfpt5" / "Classification" / "textclassificationdata" / "ag_news_csv"
    for seed in ("0_42", "1_142", "2_242"):
        for split in ("train", "valid", "test"):
            dump(lf / seed / f"{split}.txt", f"Stocks up {seed} {split} Markets rose.\tbusiness\n"
                 f"Lab news {seed}\tscience\n")
    ag_test = [Example(str(i), c, "Is this sentence World, Sports, Business, or Sci/Tech?", (a,), i)
               for i, (c, a) in enumerate([("Vller quits Coach leaves.", "Sports"), ("Markets fall", "Business")])]
    dump(tmp_path / "lamol" / "ag_to_squad-test-v2.0.json", to_lamol(ag_test))
    return [tmp_path / "cl", tmp_path / "lfpt5", tmp_path / "lamol"]


def test_classification_labels_overlap_and_held_out(tmp_path):
    out = tmp_path / "out"
    outcome = convert_sources(tc_source(tmp_path), "all", out)
    reports = {r.task: r for r in outcome.reports}
    assert set(reports) == {"ag", "yelp"}  # the others' sources are not there
    assert set(outcome.not_found) == {"woz.en", "wikisql", "cnn_dailymail", "e2enlg", "rnnlg.rest",
                                      "rnnlg.hotel", "rnnlg.tv", "rnnlg.laptop", "dbpedia", "amazon", "yahoo"}
    train = exs(out, "ag", "train")
    assert [(e.context, e.answers[0]) for e in train[:2]] == [("Chips New chips.", "Sci/Tech"),
                                                              ("Vote An election.", "World")]
    assert {e.answers[0] for e in train} == {"Sci/Tech", "World", "Business"}
    assert len(train) == 2 + 9 + 3  # cl (minus duplicate, test overlap, Weather) + lfpt5 business + science
    assert reports["ag"].skipped == {"train: duplicate text": 7, "train: text also in test": 1,
                                     "train: label 'Weather' not a label word": 1}
    test = exs(out, "ag", "test")
    assert [e.context for e in test] == ["Vller quits Coach leaves.", "Markets fall"]  # LAMOL's file as is
    assert (len(exs(out, "yelp", "train")), len(exs(out, "yelp", "test"))) == (8, 2)
    assert exs(out, "yelp", "test")[0].question.startswith("Is this review very negative")


# --------------------------------------------------------------------------- files already in LAMOL format
def test_lamol_files_are_validated_not_written(tmp_path):
    src = tmp_path / "nlg"
    rows = [Example(f"h{i}", f"name[x{i}]", "what is the natural language form ?", ("a", "b"), i) for i in range(3)]
    for split in ("train", "test", "distil"):
        dump(src / f"rnnlg.tv_to_squad-{split}-v2.0.json", to_lamol(rows))
    outcome = convert_sources([src], "rnnlg.tv", tmp_path / "out")
    r = outcome.reports[0]
    assert r.written == {"train": 3, "test": 3} and not r.files and not (tmp_path / "out").exists()
    assert "references per test item: 3 x2" in r.notes
    dump(src / "rnnlg.tv_to_squad-distil-v2.0.json", to_lamol(rows[::-1]))
    with pytest.raises(DataError, match="ids and contexts differ from the train file"):
        convert_sources([src], "rnnlg.tv", tmp_path / "out")


# --------------------------------------------------------------------------- the dispatcher
def test_existing_output_needs_force_and_nothing_is_half_written(tmp_path):
    src, out = woz_source(tmp_path), tmp_path / "out"
    dump(out / "woz.en_answers.json", "keep me")
    with pytest.raises(ArtifactError, match="woz.en_answers.json: exists; add --force"):
        convert_sources([src], "woz.en", out)
    assert sorted(p.name for p in out.iterdir()) == ["woz.en_answers.json"]
    assert (out / "woz.en_answers.json").read_text() == "keep me"
    convert_sources([src], "woz.en", out, force=True)
    assert json.loads((out / "woz.en_answers.json").read_text())[0] == ["en_0_0", "price range: cheap;"]


def test_same_bytes_twice_and_lower(tmp_path):
    src = wikisql_source(tmp_path)
    convert_sources(src, "wikisql", tmp_path / "a")
    convert_sources(src, "wikisql", tmp_path / "b")
    for f in (tmp_path / "a").iterdir():
        assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes(), f.name
    convert_sources(src, "wikisql", tmp_path / "low", lower=True)
    low = exs(tmp_path / "low", "wikisql", "test")[0]
    assert low.answers[0] == "select player from table where nationality = canada"
    assert low.question == "what is the translation from english to sql?"
    # the gold file keeps the source's case, as the reference's answers files
    assert json.loads((tmp_path / "low" / "wikisql_answers.json").read_text())[0]["answer"].startswith("SELECT")


@pytest.mark.parametrize("task, error, fragment", [
    ("woz", ConfigError, "did you mean 'woz.en'"),
    ("synth.nlg", ConfigError, "synth.nlg has no converter"),
    ("wikisql", DataError, "no valid.jsonl in"),
    ("all", DataError, "no task's raw files found"),
])
def test_bad_requests(tmp_path, task, error, fragment):
    (tmp_path / "empty").mkdir()
    with pytest.raises(error, match=fragment):
        convert_sources([tmp_path / "empty"], task, tmp_path / "out")
    with pytest.raises(DataError, match="no such folder"):
        convert_sources([tmp_path / "nope"], "woz.en", tmp_path / "out")
