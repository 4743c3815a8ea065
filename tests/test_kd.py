"""L2KD: the KD loss by hand, teachers trained once, Seq-KD data alignment, the three methods end to end."""

import logging
import math

import pytest
import torch

from l2kd.trialconfig import trial_config
from l2kd.data.batching import collate
from l2kd.data.encoding import encode_train
from l2kd.data.lamol_json import read_lamol
from l2kd.data.synthetic import generate
from l2kd.errors import ArtifactError, DataError
from l2kd.losses import token_kl
from l2kd.methods import make_method
from l2kd.teachers.seqkd import check_aligned, distil_file
from l2kd.teachers.store import TeacherStore, read_manifest, teacher_config
from l2kd.trial import run_trial

from conftest import tiny_trial


def test_kd_loss_equals_hand_computation():
    s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    T = 2.0
    pt = [math.exp(0) / (1 + math.exp(0.5)), math.exp(0.5) / (1 + math.exp(0.5))]
    ps = [math.exp(0.5) / (1 + math.exp(0.5)), 1 / (1 + math.exp(0.5))]
    expected = T * T * sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps))
    got = token_kl(s, t, torch.tensor([True]), T)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_kd_loss_maps_teacher_columns_onto_student_columns():
    # teacher vocabulary [w0, w1, own-task]; student [w0, w1, other-task, this-task]
    s = torch.tensor([[0.3, -0.2, 0.9, 0.1]])
    t = torch.tensor([[0.5, 0.1, -0.4]])
    col = torch.tensor([0, 1, 3])
    pt = torch.softmax(t / 2, -1)[0]
    log_ps = torch.log_softmax(s / 2, -1)[0][col]
    expected = 4 * (pt * (pt.log() - log_ps)).sum()
    assert token_kl(s, t, torch.tensor([True]), 2.0, col).item() == pytest.approx(expected.item(), rel=1e-6)


def test_kd_loss_is_zero_when_student_equals_teacher_and_zero_over_no_rows():
    z = torch.randn(5, 11)
    assert token_kl(z, z.clone(), torch.ones(5, dtype=torch.bool), 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert token_kl(z, torch.randn(5, 11), torch.zeros(5, dtype=torch.bool), 2.0).item() == 0.0


@pytest.fixture(scope="module")
def store_and_cfg(tmp_path_factory):
    cfg = trial_config(tiny_trial(method="word_kd"))
    store = TeacherStore(tmp_path_factory.mktemp("teachers"))
    teachers = store.ensure_all(cfg)
    return store, cfg, teachers


def test_asking_twice_for_a_teacher_trains_it_once(store_and_cfg, caplog):
    store, cfg, teachers = store_and_cfg
    assert store.trained == 2 and store.hits == 0  # one per task
    with caplog.at_level(logging.INFO, logger="l2kd.teachers.store"):
        again = TeacherStore(store.root).ensure(cfg, "synth.nlg")
    assert again == teachers["synth.nlg"]
    assert any("teacher cache hit" in r.getMessage() for r in caplog.records)
    # another method and another order of the same tasks share the teachers
    other = trial_config(tiny_trial(method="seq_kd_soft", tasks=["synth.sentiment", "synth.nlg"]))
    s2 = TeacherStore(store.root)
    assert s2.ensure_all(other) == teachers and s2.trained == 0 and s2.hits == 2
    # anything that changes the teacher gives another key
    assert store.folder(trial_config(tiny_trial(seed=99)), "synth.nlg") != teachers["synth.nlg"]
    m = read_manifest(teachers["synth.nlg"])
    assert m["task"] == "synth.nlg" and "avg_rouge" in m["scores"] and m["train_s"] > 0


def test_teacher_is_a_single_task_lamol_model(store_and_cfg):
    _, cfg, _ = store_and_cfg
    tcfg = teacher_config(cfg, "synth.nlg")
    assert tcfg.tasks == ["synth.nlg"] and tcfg.method.name == "single"
    assert tcfg.model == cfg.model and tcfg.training == cfg.training and tcfg.seed == cfg.seed


def word_kd_on_second_task(store_and_cfg):
    """(method, ctx, tokenizer): Word-KD about to train synth.nlg after synth.sentiment, on a CPU."""
    from l2kd.context import TrialContext
    from l2kd.tokenizer import Tokenizer

    _, cfg, teachers = store_and_cfg
    method = make_method(cfg.method)
    tok = Tokenizer.load("builtin")
    tok.add_task("synth.sentiment")
    tok.add_task("synth.nlg")
    ctx = TrialContext(cfg=cfg, tokenizer=tok, device=torch.device("cpu"), amp_dtype=None, max_len=96,
                       train={}, test={}, teachers=teachers)
    method.begin_training(ctx, ("synth.nlg",))
    return method, ctx, tok


def test_word_kd_batch_of_only_pseudo_rows_is_finite(store_and_cfg):
    method, ctx, tok = word_kd_on_second_task(store_and_cfg)
    ids = tok.ids
    G_old = tok.task_id("synth.sentiment")
    rows = [encode_train([], tok.encode("a review"), tok.encode("positive"), G_old, ids, 96, "synth.sentiment",
                         is_pseudo=True) for _ in range(3)]
    batch = collate(rows, ids.pad, with_lm=True)
    logits = torch.randn(len(batch.positions), len(tok), requires_grad=True)
    terms = method.loss_terms(ctx, batch, logits)
    total = sum(terms.values())
    assert torch.isfinite(total) and total.item() > 0
    assert terms["qa_kd"].item() == 0.0 and terms["lm_kd"].item() == 0.0
    total.backward()
    assert torch.isfinite(logits.grad).all()


def test_word_kd_terms_skip_only_what_is_exactly_zero(store_and_cfg):
    """Batches without pseudo rows skip the cross-entropy, and every term equals the full masked
    computation (KL and cross-entropy over all positions) on current-only and mixed batches."""
    from l2kd.losses import ans_weighted, kl_each, masked_mean, weighted_nll

    method, ctx, tok = word_kd_on_second_task(store_and_cfg)
    ids = tok.ids
    current = [encode_train(tok.encode(f"name {k}"), tok.encode("describe"), tok.encode(f"a place {k}"),
                            tok.task_id("synth.nlg"), ids, 96, "synth.nlg") for k in range(3)]
    pseudo = [encode_train([], tok.encode("a review"), tok.encode("positive"), tok.task_id("synth.sentiment"),
                           ids, 96, "synth.sentiment", is_pseudo=True)]
    for rows in (current, current + pseudo):
        batch = collate(rows, ids.pad, with_lm=True)
        assert batch.n_pseudo == len(rows) - len(current)
        start = torch.randn(len(batch.positions), len(tok), generator=torch.Generator().manual_seed(3))
        logits, ref_logits = start.clone().requires_grad_(), start.clone().requires_grad_()
        terms = method.loss_terms(ctx, batch, logits)  # the teacher on current-task rows only
        with torch.no_grad():  # the formula as it was: the teacher, KL and cross-entropy everywhere
            t_logits = method.teacher(method.input_map[batch.inputs], batch.positions)
        kl = kl_each(ref_logits, t_logits, method.p.temperature, method.col_map)
        nll, w = weighted_nll(ref_logits, batch.targets, ans_weighted(len(tok), ids.ans, method.p.ans_weight,
                                                                        torch.device("cpu")))
        qa, is_pseudo = batch.qa_positions, batch.pseudo_positions
        ref = {}
        for part, in_part, scale in (("qa", qa, 1.0), ("lm", ~qa, method.p.lm_lambda)):
            ref[f"{part}_kd"] = scale * masked_mean(kl, torch.ones_like(kl), in_part & ~is_pseudo)
            ref[f"{part}_ce"] = scale * masked_mean(nll, w, in_part & is_pseudo)
        for k in ref:
            torch.testing.assert_close(terms[k], ref[k], rtol=1e-5, atol=1e-7)
        sum(terms.values()).backward()
        sum(ref.values()).backward()
        torch.testing.assert_close(logits.grad, ref_logits.grad, rtol=1e-5, atol=1e-8)
        assert (terms["lm_ce"].item() == 0.0) == (batch.n_pseudo == 0)


def test_seq_kd_data_keeps_every_id_and_context(store_and_cfg, tmp_path):
    _, cfg, teachers = store_and_cfg
    cfg = trial_config(tiny_trial(method="seq_kd", tasks=["synth.nlg"]))
    result = run_trial(cfg, tmp_path / "seqkd", teachers=teachers)
    assert result.complete
    distil = read_lamol(distil_file(teachers["synth.nlg"], "greedy"))
    from l2kd.data import load_split

    train = load_split("synth.nlg", "train", cfg.data)
    assert [(d.id, d.context, d.question) for d in distil] == [(t.id, t.context, t.question) for t in train]
    assert any(d.answers != t.answers for d, t in zip(distil, train))  # the answers are the teacher's
    with pytest.raises(DataError, match="does not match"):
        check_aligned(distil[::-1], train, "x")


def test_precomputed_distil_files_are_checked(tmp_path):
    from l2kd.data.lamol_json import to_lamol
    from l2kd.io import write_json

    train = generate("synth.state", "train")
    write_json(tmp_path / "synth.state_to_squad-distil-v2.0.json", to_lamol(train[::-1]))
    cfg = trial_config(tiny_trial(method="seq_kd", tasks=["synth.state"],
                                  **{"data.distil_dir": str(tmp_path), "data.max_train_examples": None}))
    assert make_method(cfg.method).teachers_needed(cfg) == []  # files instead of a teacher
    with pytest.raises(DataError, match="does not match"):
        run_trial(cfg, tmp_path / "out")


@pytest.mark.parametrize("method", ["word_kd", "seq_kd", "seq_kd_soft"])
def test_kd_methods_run_a_two_task_trial(store_and_cfg, tmp_path, method):
    _, _, teachers = store_and_cfg
    cfg = trial_config(tiny_trial(method=method))
    result = run_trial(cfg, tmp_path, teachers=teachers)
    assert len(result.R) == 2 and result.stage_info[1]["replay"]["requested"] == 10
    assert all(math.isfinite(v) for row in result.R for v in row)


def test_word_kd_with_a_cached_teacher_runs_a_two_epoch_trial(store_and_cfg, tmp_path):
    """Two epochs: the teacher's hidden states are cached at each stage's start, and the second
    task's batches mix current-task and pseudo rows."""
    _, _, teachers = store_and_cfg
    result = run_trial(trial_config(tiny_trial(method="word_kd", **{"training.epochs": 2})), tmp_path,
                       teachers=teachers)
    assert len(result.R) == 2 and all(math.isfinite(v) for row in result.R for v in row)


def test_missing_teacher_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="no teacher for synth.nlg, synth.sentiment"):
        run_trial(trial_config(tiny_trial(method="word_kd")), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_cached_teacher_gives_the_per_step_teachers_logits_and_terms(store_and_cfg):
    """The teacher's hidden states cached once a stage, then only its head: the per-step forward's
    logits (over current-task rows only) and the same Word-KD terms, on current-only and mixed batches."""
    from l2kd.methods.kd import teacher_logits
    from l2kd.methods.teacher_cache import TeacherCache, cache_bytes

    method, ctx, tok = word_kd_on_second_task(store_and_cfg)
    ids, cpu = tok.ids, torch.device("cpu")
    current = [encode_train(tok.encode(f"name {k}" * (1 + k % 3)), tok.encode("describe"),
                            tok.encode(f"a place {k}" * (1 + k % 2)), tok.task_id("synth.nlg"), ids, 96,
                            "synth.nlg", index=10 + k) for k in range(6)]
    pseudo = [encode_train([], tok.encode("a review"), tok.encode("positive"), tok.task_id("synth.sentiment"),
                           ids, 96, "synth.sentiment", is_pseudo=True) for _ in range(2)]
    cache = TeacherCache.build(method.teacher, method.input_map, current, budget_mib=64, pad=ids.pad,
                               with_lm=True, device=cpu, amp_dtype=None, tokens_per_batch=128)  # several batches
    assert cache is not None and cache.hidden.numel() * 4 == cache_bytes(current, True, 32, torch.float32)
    for rows in (current[4:] + current[:2], [current[3], pseudo[0], current[1], pseudo[1]]):
        batch = collate(rows, ids.pad, with_lm=True)
        per_step = teacher_logits(method.teacher, method.input_map, batch, cpu, None)
        torch.testing.assert_close(cache.logits(batch), per_step, rtol=1e-5, atol=1e-6)
        logits = torch.randn(len(batch.positions), len(tok), generator=torch.Generator().manual_seed(5))
        method.cache = None
        plain = method.loss_terms(ctx, batch, logits)
        method.cache = cache
        cached = method.loss_terms(ctx, batch, logits)
        for k in plain:
            torch.testing.assert_close(cached[k], plain[k], rtol=1e-5, atol=1e-7)
    assert TeacherCache.build(method.teacher, method.input_map, current, budget_mib=0, pad=ids.pad,
                              with_lm=True, device=cpu, amp_dtype=None, tokens_per_batch=128) is None
    assert TeacherCache.build(method.teacher, method.input_map, current + pseudo, budget_mib=64, pad=ids.pad,
                              with_lm=True, device=cpu, amp_dtype=None, tokens_per_batch=128) is None  # no keys


def test_word_kd_caches_its_teacher_only_from_two_epochs_and_within_its_budget(store_and_cfg):
    from l2kd.context import TrialContext
    from l2kd.data import load_split
    from l2kd.tokenizer import Tokenizer

    _, _, teachers = store_and_cfg
    for epochs, budget, cached in ((2, 4096, True), (1, 4096, False), (2, 0, False)):
        cfg = trial_config(tiny_trial(method={"name": "word_kd", "teacher_cache_mib": budget},
                                      **{"training.epochs": epochs}))
        tok = Tokenizer.load("builtin")
        tok.add_task("synth.nlg")
        ctx = TrialContext(cfg=cfg, tokenizer=tok, device=torch.device("cpu"), amp_dtype=None, max_len=96,
                           train={"synth.nlg": load_split("synth.nlg", "train", cfg.data)}, test={},
                           teachers=teachers)
        method = make_method(cfg.method)
        method.begin_training(ctx, ("synth.nlg",))
        assert (method.cache is not None) == cached
        if cached:  # every training row's targets
            rows = ctx.train_rows("synth.nlg")
            assert len(method.cache.hidden) == sum(sum(y >= 0 for y in r.Y) + sum(y >= 0 for y in r.gen_Y)
                                                   for r in rows)
