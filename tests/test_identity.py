"""What identifies a trial, a teacher and a mergeable result (l2kd.identity). The hashes and keys
below were recorded from the code before identity had a module of its own (main at 88728e3): they
are what run folders and teacher stores on users' disks carry, so they must never change."""

import pytest
import yaml

from l2kd.config import RESULT, TEACHER, TRIAL
from l2kd.gridspec import parse_grid
from l2kd.identity import config_hash, fields_outside, result_identity, settings_diff, teacher_key
from l2kd.plan import build_plan
from l2kd.teachers.store import teacher_config
from l2kd.trialconfig import trial_config

from conftest import REPO, tiny_trial

DEMO_CELLS = {  # cell id -> config hash
    "demo.nlg-sent-state.finetune.s1": "7942f7aa0b3d8b25",
    "demo.nlg-sent-state.lamol.s1": "d5d096cdc267e05e",
    "demo.nlg-sent-state.word_kd.s1": "d73eb2e03ed63894",
    "demo.nlg-sent-state.lamol_lora_llama.s1": "044a52d0eb8ce33f",
    "demo.state-sent-nlg.finetune.s1": "466b0110daa73f48",
    "demo.state-sent-nlg.lamol.s1": "3b844c328227da4a",
    "demo.state-sent-nlg.word_kd.s1": "89f3ad5059316393",
    "demo.state-sent-nlg.lamol_lora_llama.s1": "9e626fa8c82883aa",
    "demo.all.multitask.s1": "385e515f6cc85a3a",
}
DEMO_TEACHERS = ["synth.nlg-c431819d0e9d", "synth.sentiment-5d660541f51e", "synth.state-13c3af8f7563"]

# tiny_trial variants: (overrides, config hash, teacher keys of synth.nlg and synth.sentiment)
TRIALS = {
    "word_kd": ({"method": {"name": "word_kd", "temperature": 2.0}}, "9adb1c0f7453c77d",
                ("d6f3a95b253a", "9e0d3a2f005a")),
    "seq_kd top_k": ({"method": {"name": "seq_kd", "decoding": "top_k"}}, "7128f0f800e6f2c5",
                     ("d6f3a95b253a", "9e0d3a2f005a")),
    "lora": ({"model.lora": {"r": 4}}, "68caa407c68dc140", ("48eb78e98686", "e209bd2c71e8")),
    "gelu_new": ({"model.gelu": "gelu_new"}, "1dcb9590a963a035", ("d8ebddb18a4e", "96bcd13ed6b0")),
    "compile": ({"training.compile": True}, "9c2288bc03d395a7", ("69ff0277acd4", "5787d3d1cea4")),
    "eval batch sizes": ({"eval.max_batch_size": 64, "eval.tokens_per_batch": 4096}, "c6f2163611ccdfab",
                         ("8b1ceca18303", "9d636776531c")),
}


def test_the_demo_grid_keeps_its_cell_hashes_and_teacher_folders(tmp_path):
    g = yaml.safe_load((REPO / "grids" / "demo.yaml").read_text())
    g["storage"] = str(tmp_path)
    plan = build_plan(parse_grid(g, "grids/demo.yaml"))
    assert {c.id: config_hash(c.config) for c in plan.cells} == DEMO_CELLS
    assert sorted(plan.teachers) == DEMO_TEACHERS


@pytest.mark.parametrize("name", list(TRIALS))
def test_trial_hashes_and_teacher_keys_stay_as_stored(name):
    over, expected_hash, expected_keys = TRIALS[name]
    cfg = trial_config(tiny_trial(**over))
    assert config_hash(cfg) == expected_hash
    assert tuple(teacher_key(teacher_config(cfg, t)) for t in cfg.tasks) == expected_keys


def test_display_and_placement_settings_are_outside_the_identities_that_ignore_them():
    base = trial_config(tiny_trial())
    relabelled = trial_config(tiny_trial(name="other", **{"training.log_every": 1}))
    assert config_hash(relabelled) == config_hash(base)
    threads = trial_config(tiny_trial(**{"training.threads": 2}))
    assert config_hash(threads) != config_hash(base)  # a trial's CPU threads are part of it ...
    assert [teacher_key(teacher_config(threads, t)) for t in base.tasks] == \
        [teacher_key(teacher_config(base, t)) for t in base.tasks]  # ... not of its teachers
    assert settings_diff(base.to_dict(), threads.to_dict()) == "training.threads (1 -> 2)"
    assert ("training", "log_every") in fields_outside(TRIAL) & fields_outside(TEACHER) & fields_outside(RESULT)
    assert ("model", "tokenizer") in fields_outside(TEACHER) - fields_outside(TRIAL)


def test_a_result_identity_keeps_the_settings_a_table_compares():
    flat = {"model.n_layer": 2, "training.lr": 1e-3, "training.device": "cpu", "data.dir": "x",
            "eval.max_batch_size": 8, "primary.synth.nlg": "rouge", "seed": 3, "method.name": "lamol"}
    assert result_identity(flat) == {"model.n_layer": 2, "training.lr": 1e-3, "primary.synth.nlg": "rouge"}


def test_the_marks_place_the_fields_the_old_lists_named():
    """The lists kept by hand before the marks: trial_identity's pops, teacher_identity's pops and
    the report's IGNORED_FIELDS; a field added later is placed by its mark, not by a new list."""
    assert fields_outside(TRIAL) == {("name",), ("training", "log_every")}
    assert fields_outside(TEACHER) == {("name",), ("training", "log_every"), ("training", "threads"),
                                       ("data", "dir"), ("model", "tokenizer")}
    assert {".".join(p) for p in fields_outside(RESULT) if len(p) > 1} == {
        "training.log_every", "training.threads", "training.device",
        "eval.every_epoch", "eval.before_training", "eval.tokens_per_batch", "eval.max_batch_size",
        "data.dir", "data.distil_dir"}
