"""Grid files with `include:`: merged before validation (mappings deeply, lists replaced), nested,
relative to the including file; a missing file or a cycle is one line naming the file and the key."""

import pytest
import yaml

from l2kd.errors import ConfigError
from l2kd.gridfile import merged, read_grid_file
from l2kd.gridspec import GRID_KEYS, GridSpec, load_grid, parse_grid

from test_gridspec import grid


def write(path, data) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


def test_merge_is_deep_for_mappings_and_replaces_lists():
    base = {"training": {"epochs": 9, "lr": 1e-3}, "methods": ["lamol", "word_kd"], "seeds": [1]}
    over = {"training": {"epochs": 2}, "methods": ["finetune"]}
    assert merged(base, over) == {"training": {"epochs": 2, "lr": 1e-3}, "methods": ["finetune"], "seeds": [1]}
    assert base["training"] == {"epochs": 9, "lr": 1e-3}  # the included mapping is not changed


def test_an_including_grid_overrides_its_nested_bases_and_keeps_its_own_name(tmp_path):
    write(tmp_path / "bases" / "root.yaml", grid(name="root"))
    write(tmp_path / "bases" / "mid.yaml", {"include": "root.yaml", "training": {"epochs": 3}, "seeds": [5, 6]})
    top = write(tmp_path / "top.yaml", {"include": ["bases/mid.yaml"], "training": {"lr": 2e-3},
                                        "methods": ["lamol"]})
    raw = read_grid_file(top, known_keys=GRID_KEYS)
    assert "name" not in raw and "include" not in raw  # the run folder is named after top.yaml
    assert raw["training"] == {"epochs": 3, "lr": 2e-3, "threads": 1} and raw["seeds"] == [5, 6]
    assert raw["methods"] == ["lamol"] and raw["model"] == grid()["model"]
    spec = load_grid(top, storage=str(tmp_path / "runs"))
    assert spec.name == "top" and [m.label for m in spec.methods] == ["lamol"]
    # the same grid written out in one file gives the same grid
    flat = {k: v for k, v in raw.items()} | {"name": "top"}
    assert parse_grid(flat, top, storage=str(tmp_path / "runs")) == spec


def test_an_experiment_includes_another_grids_experiment(tmp_path):
    write(tmp_path / "one.yaml", grid(name="nlgish", data={"max_train_examples": 24, "max_test_examples": 6}))
    both = {"name": "two", "experiments": [
        {"include": "one.yaml", "orders": "forward"},
        {"name": "other", "tasks": ["synth.state", "synth.nlg"]}],
        "methods": ["lamol"], "model": grid()["model"], "eval": {"before_training": False}}
    spec = load_grid(write(tmp_path / "two.yaml", both), storage=str(tmp_path / "runs"))
    first, second = spec.experiments
    assert (first.name, first.tasks, first.orders) == ("nlgish", grid()["tasks"], "forward")
    assert first.data == {"max_train_examples": 24, "max_test_examples": 6}  # its data section
    assert second.name == "other" and spec.base["training"] == {}  # nothing else of one.yaml
    # a grid of experiments: the entry of the same name
    pick = {"name": "three", "experiments": [{"include": "two.yaml", "name": "other"}], "methods": ["lamol"]}
    (exp,) = load_grid(write(tmp_path / "three.yaml", pick), storage=str(tmp_path / "runs")).experiments
    assert exp.tasks == ["synth.state", "synth.nlg"]


def test_a_file_listing_experiments_replaces_included_top_level_tasks(tmp_path):
    write(tmp_path / "one.yaml", grid())
    top = write(tmp_path / "top.yaml", {"include": "one.yaml",
                                        "experiments": [{"name": "e", "tasks": ["synth.state"]}]})
    raw = read_grid_file(top, known_keys=GRID_KEYS)
    assert "tasks" not in raw and "orders" not in raw and raw["experiments"][0]["name"] == "e"


@pytest.mark.parametrize("files, fragment", [
    ({"a.yaml": {"include": "gone.yaml"}}, "a.yaml: include: gone.yaml: no such file"),
    ({"a.yaml": {"include": "b.yaml"}, "b.yaml": {"include": "a.yaml"}},
     "b.yaml: include: a.yaml: a cycle of includes (a.yaml -> b.yaml -> a.yaml)"),
    ({"a.yaml": {"include": "a.yaml"}}, "a.yaml: include: a.yaml: a cycle of includes"),
    ({"a.yaml": {"experiments": [{"include": "a.yaml"}]}}, "a.yaml: experiments[0].include: a.yaml: a cycle"),
    ({"a.yaml": {"experiments": [{"include": "gone.yaml"}]}}, "a.yaml: experiments[0].include: gone.yaml: no such"),
    ({"a.yaml": {"include": 3}}, "a.yaml: include: expected a grid file name"),
    ({"a.yaml": {"include": "b.yaml"}, "b.yaml": {"methodz": ["lamol"]}},
     "b.yaml: methodz: unknown key; did you mean 'methods'"),
])
def test_bad_includes_name_the_file_and_the_key(tmp_path, files, fragment):
    for name, body in files.items():
        write(tmp_path / name, body)
    with pytest.raises(ConfigError) as err:
        load_grid(tmp_path / "a.yaml", storage=str(tmp_path / "runs"))
    assert fragment in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_grid_keys_are_the_models_fields_as_a_file_writes_them():
    # the keys the hand-kept list held before it was derived from GridSpec
    assert GRID_KEYS == {"name", "tasks", "orders", "experiments", "methods", "references", "seeds", "resources",
                         "storage", "ray", "tracking", "data", "model", "training", "eval"}
    assert set(GridSpec.model_fields) - {"base", "source"} <= GRID_KEYS  # every field a file can write
