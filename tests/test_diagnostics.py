"""Teacher and distillation diagnostics: the figures on hand-made cases, per teacher and per KD stage."""

import math

import pytest
import torch

from l2kd import diagnostics as D
from l2kd.data.encoding import SpecialIds, encode_train
from l2kd.teachers.store import TeacherStore, read_manifest
from l2kd.trial import run_trial
from l2kd.trialconfig import trial_config

from conftest import tiny_trial


def test_targets_follow_the_column_map_and_sum_to_one():
    t = torch.tensor([[0.0, 1.0, 2.0]])
    col = torch.tensor([0, 1, 3])  # teacher's own task column goes to student column 3
    p = D.teacher_targets(t, 2.0, col, n_student=4)
    expected = torch.softmax(t / 2, -1)[0]
    assert p.shape == (1, 4) and p[0, 2].item() == 0.0
    torch.testing.assert_close(p[0, [0, 1, 3]], expected)
    assert p.sum().item() == pytest.approx(1.0)


def test_uniform_targets_have_entropy_log_v_and_unseen_mass_by_count():
    probs = torch.full((2, 8), 1 / 8)
    seen = torch.tensor([True, True, False, False, False, False, False, False])
    s = D.target_sums(probs, seen)
    assert s["entropy"] == pytest.approx(2 * math.log(8))
    assert s["unseen_mass"] == pytest.approx(2 * 6 / 8)


def test_agreement_counts_top1_through_the_map():
    student = torch.tensor([[0.0, 0.0, 0.0, 5.0], [3.0, 0.0, 0.0, 0.0]])
    teacher = torch.tensor([[0.0, 0.0, 9.0], [0.0, 4.0, 0.0]])  # top-1: own task column, then 1
    assert D.agreement_count(student, teacher, torch.tensor([0, 1, 3])) == 1


def test_prediction_spread_and_flags():
    spread = D.prediction_spread(["."] * 8 + ["a b", "c"], [[f"ref {k}"] for k in range(10)])
    assert spread == {"distinct_predictions": pytest.approx(0.3), "top_prediction_share": pytest.approx(0.8)}
    assert D.degenerate_flags({"entropy_ratio": 0.95, "unseen_mass": 0.1, "distinct_predictions": 0.3}) \
        == ["entropy_ratio"]
    assert D.degenerate_flags({"entropy_ratio": 0.2, "unseen_mass": 0.6, "distinct_predictions": 0.1}) \
        == ["unseen_mass", "distinct_predictions"]
    assert D.degenerate_flags({"entropy_ratio": None}) == []
    assert "entropy_ratio >= 0.8" in D.thresholds_line()


def test_seen_ids_cover_inputs_and_targets():
    ids = SpecialIds(eos=0, ans=5, pad=6, unk=7)
    row = encode_train([1], [2], [3], 8, ids, 32, "t")
    seen = D.seen_ids([row], 10)
    assert seen.nonzero().flatten().tolist() == [0, 1, 2, 3, 5, 8]


def test_measure_on_a_random_teacher_is_near_uniform_and_a_copy_agrees():
    from transformers import GPT2Config, GPT2LMHeadModel

    from l2kd.model import TargetLogits

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_layer=1, n_embd=16, n_head=2, n_positions=32))
    ids = SpecialIds(eos=0, ans=45, pad=46, unk=47)
    rows = [encode_train([1, 2, 3], [4], [5, 6], 48, ids, 32, "t") for _ in range(3)]
    seen = D.seen_ids(rows, 50)
    head = TargetLogits.frozen(gpt2)
    out = D.measure(head, rows, ids.pad, seen, 2.0, device=torch.device("cpu"), student=head)
    assert out["entropy_ratio"] > 0.95  # a random-init GPT-2's targets are nearly uniform
    assert out["unseen_mass"] == pytest.approx(1 - int(seen.sum()) / 50, abs=0.05)
    assert out["agreement"] == 1.0 and out["positions"] == 3 * (3 + len(rows[0].gen_Y))


@pytest.fixture(scope="module")
def kd_store(tmp_path_factory):
    cfg = trial_config(tiny_trial(method="word_kd"))
    store = TeacherStore(tmp_path_factory.mktemp("teachers"))
    return cfg, store.ensure_all(cfg)


def test_every_teacher_manifest_records_its_diagnostics(kd_store):
    _, teachers = kd_store
    diag = read_manifest(teachers["synth.nlg"])["diagnostics"]
    assert set(diag["by_temperature"]) == {"1", "2"}
    t1, t2 = diag["by_temperature"]["1"], diag["by_temperature"]["2"]
    assert 0 < t1["entropy_ratio"] < t2["entropy_ratio"] <= 1  # a higher temperature flattens
    assert 0 <= t1["unseen_mass"] <= t2["unseen_mass"] <= 1 and t1["positions"] > 0
    assert 0 < diag["distinct_predictions"] <= 1 and set(diag["flags"]) == {"1", "2"}


@pytest.mark.parametrize("method", ["word_kd", "seq_kd"])
def test_every_kd_stage_records_its_diagnostics(kd_store, tmp_path, method):
    _, teachers = kd_store
    result = run_trial(trial_config(tiny_trial(method=method)), tmp_path, teachers=teachers)
    for s, task in enumerate(result.tasks):
        kd = result.stage_info[s]["kd"]
        assert kd["task"] == task and kd["temperature"] == (2.0 if method == "word_kd" else 1.0)
        assert 0 <= kd["agreement"] <= 1 and 0 < kd["entropy_ratio"] <= 1 and kd["positions"] > 0
        assert isinstance(kd["flags"], list) and kd["distinct_predictions"] is not None
