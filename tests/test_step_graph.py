"""The paper policy's step of fixed shapes (training.step_graph): a bucketed batch gives today's losses
and gradients (fp32, 1e-5 relative) for lamol and word_kd; the bucketed step with its tensor learning
rate, run eagerly as on a CPU, optimises as today's DeepSpeed step; the refusals are one line. On a GPU
(skipped elsewhere): the captured step equals the eager one, and a step makes no host wait."""

import dataclasses

import numpy as np
import pytest
import torch

from l2kd.bench.setup import BenchSetup
from l2kd.data.batching import collate
from l2kd.data.buckets import TARGET_STEP, WIDTH_STEP, bucket_of, pad_to_bucket
from l2kd.engine import Engine
from l2kd.errors import ConfigError
from l2kd.model import TargetLogits
from l2kd.step_graph import StepGraph
from l2kd.training import EagerStep, forward, make_step
from l2kd.trialconfig import trial_config

from conftest import tiny_trial

RTOL = 1e-5
NO_DROPOUT = {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 96, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
              "attn_pdrop": 0.0}


def _setup(method: str, **over) -> BenchSetup:
    return BenchSetup(trial_config(tiny_trial(**{"method": method, "model.config": NO_DROPOUT,
                                                 "training.step_graph": True, **over})))


def _method(s: BenchSetup, model, word_kd: bool):
    """The trial's step method on `model`; a Word-KD one with a teacher handed in: the initial model
    moved by fixed noise, so that the KL is far from 0 (not a difference of two equal numbers)."""
    teacher = None
    if word_kd:
        t = s.fresh_model()
        g = torch.Generator().manual_seed(11)
        with torch.no_grad():
            for p in t.parameters():
                p.add_(torch.randn(p.shape, generator=g).to(p.device) * 0.5)
        teacher = TargetLogits.frozen(t)
    return s.prepared(model, teacher)


def _mixed_rows(s: BenchSetup, n: int, seed: int) -> list:
    """n rows of the first task, a third of them marked pseudo (Word-KD's CE rows)."""
    idx = np.random.default_rng(seed).choice(len(s.rows), n, replace=False)
    return [dataclasses.replace(s.rows[i], is_pseudo=k % 3 == 1) for k, i in enumerate(idx)]


def _terms_and_grads(model, method, s, batch, static: bool):
    model.zero_grad(set_to_none=True)
    head = TargetLogits(model)

    class _E:
        logits = staticmethod(head)

    logits = forward(_E, batch, True)
    terms = (method.static_loss_terms if static else method.loss_terms)(s.ctx, batch, logits)
    sum(terms.values()).backward()
    return ({k: v.detach() for k, v in terms.items()},
            {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})


@pytest.mark.parametrize("method", ["lamol", "word_kd"])
@pytest.mark.parametrize("pseudo", [False, True])
def test_a_bucketed_batch_gives_the_same_losses_and_gradients(method, pseudo):
    s = _setup(method)
    model = s.fresh_model().eval()  # no dropout: both batches see the same function
    m = _method(s, model, method == "word_kd")
    rows = _mixed_rows(s, 5, seed=3) if pseudo else [s.rows[i] for i in range(5)]
    batch = collate(rows, s.tok.ids.pad, with_lm=s.with_lm)
    key = bucket_of(batch, s.max_len)
    padded = pad_to_bucket(batch, key, s.tok.ids.pad)
    assert key[1] % WIDTH_STEP == 0 and key[2] % TARGET_STEP == 0 and key[3] % TARGET_STEP == 0
    assert padded.inputs.shape[1] > batch.inputs.shape[1] or padded.n_qa > batch.n_qa  # something was padded
    assert len(padded.positions) > len(batch.positions)
    want_terms, want_grads = _terms_and_grads(model, m, s, batch, static=False)
    got_terms, got_grads = _terms_and_grads(model, m, s, padded, static=True)
    assert got_terms.keys() == want_terms.keys()
    for k in want_terms:
        torch.testing.assert_close(got_terms[k], want_terms[k], rtol=RTOL, atol=1e-7)
    assert got_grads.keys() == want_grads.keys()
    for n in want_grads:
        torch.testing.assert_close(got_grads[n], want_grads[n], rtol=RTOL, atol=1e-7, msg=n)


@pytest.mark.parametrize("chunk_elements", [1 << 26, 40])  # one chunk; chunks of 3 rows
@pytest.mark.parametrize("kd_rows", ["all", "mixed", "none"])
@pytest.mark.parametrize("mapped", [True, False])
def test_the_masked_one_pass_equals_the_indexed_one(monkeypatch, chunk_elements, kd_rows, mapped):
    """kd_and_nll_masked (a teacher row for every position, the KD positions a mask) against
    kd_and_nll_each (teacher rows at the KD positions only), value, weight and gradient; IGNORE
    targets (a bucket's padding) carry nothing even where the mask says KD."""
    from l2kd import losses
    from l2kd.data.encoding import IGNORE

    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", chunk_elements)
    g = torch.Generator().manual_seed(0)
    n, vs = 12, 13
    s = torch.randn(n, vs, generator=g) * 3
    targets = torch.randint(0, vs, (n,), generator=g)
    weight = torch.rand(vs, generator=g) + 0.5
    col = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 10]) if mapped else None
    t = torch.randn(n, len(col) if mapped else vs, generator=g) * 3
    kd = {"all": np.arange(n), "mixed": np.array([0, 1, 4, 5, 6, 10]), "none": np.array([], dtype=np.int64)}[kd_rows]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.from_numpy(kd)] = True
    padded_targets = torch.cat([targets, torch.full((3,), IGNORE)])  # three padded positions, mask on
    up = torch.randn(n, generator=g)

    a = torch.cat([s, torch.randn(3, vs, generator=g)]).requires_grad_()
    got, got_w = losses.kd_and_nll_masked(a, padded_targets, weight, torch.cat([t, t[:3]]), 2.0, col,
                                          torch.cat([mask, torch.ones(3, dtype=torch.bool)]))
    (got * torch.cat([up, torch.ones(3)])).sum().backward()  # padded positions get an upstream gradient too
    b = s.clone().requires_grad_()
    if kd_rows == "none":
        want, want_w = losses.weighted_nll(b, targets, weight)
    else:
        index = None if kd_rows == "all" else torch.from_numpy(kd)
        want, want_w = losses.kd_and_nll_each(b, targets, weight, t[torch.from_numpy(kd)], 2.0, col, index,
                                              None if index is None else kd)
    (want * up).sum().backward()
    torch.testing.assert_close(got[:n], want, rtol=RTOL, atol=1e-6)
    torch.testing.assert_close(got_w[:n], want_w, rtol=RTOL, atol=1e-6)
    torch.testing.assert_close(a.grad[:n], b.grad, rtol=RTOL, atol=1e-6)
    assert not got[n:].any() and not got_w[n:].any() and not a.grad[n:].any()


def _steps(s: BenchSetup, method: str, graph: bool, plans, lrs):
    model = s.fresh_model()  # the same initial weights for both runs (the trial's seed)
    m = _method(s, model, method == "word_kd")
    engine = Engine(model, s.cfg.training, "fp32", s.device)
    s.ctx.model = engine.module
    step = make_step(engine, m, s.ctx, graph)
    assert isinstance(step, StepGraph if graph else EagerStep)
    terms = []
    for idx, lr in zip(plans, lrs):
        rows = [s.rows[i] for i in idx]
        batch = step.prepare(collate(rows, s.tok.ids.pad, with_lm=s.with_lm))
        terms.append({k: float(v) for k, v in step.run(batch, lr).items()})
    if graph:  # some batches were copied into an earlier batch's bucket buffers (a graph's replay path)
        assert len(step.buffers) < len(plans), len(step.buffers)
    step.close()
    weights = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
    engine.close()
    return weights, terms


@pytest.mark.parametrize("method", ["lamol", "word_kd"])
def test_the_bucketed_tensor_lr_step_optimises_as_todays_step(method):
    """Same weights after 8 steps (fp32, dropout off so the shapes draw no masks), a learning rate
    that changes every step, batches of two sizes (the paper policy's last batch): 1e-5 relative."""
    s = _setup(method, **{"training.lr": 3e-3})
    rng = np.random.default_rng(0)
    plans = [rng.choice(len(s.rows), 4 if k != 5 else 3, replace=False) for k in range(8)]
    lrs = [3e-3 * (k + 1) / 8 for k in range(8)]
    want_w, want_t = _steps(s, method, False, plans, lrs)
    got_w, got_t = _steps(s, method, True, plans, lrs)
    for a, b in zip(got_t, want_t):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], rtol=RTOL, atol=1e-7)
    moved = 0
    for n in want_w:
        torch.testing.assert_close(got_w[n], want_w[n], rtol=RTOL, atol=1e-6, msg=n)
        moved += int(not torch.equal(want_w[n], s.fresh_model().state_dict()[n]))
    assert moved > 0  # the steps trained


@pytest.mark.parametrize("over, says", [
    ({"training.batch_policy": "tokens"}, "paper batch policy"),
    ({"training.zero_stage": 1}, "zero_stage 0"),
    ({"training.precision": "fp16"}, "fp16"),
    ({"training.compile": True}, "training.compile"),
    ({"method": "gem"}, "training.step_graph: the step of method gem cannot be one graph"),
    ({"method": {"name": "multitask", "sampler": "uncertainty"}}, "method (multitask): sampler uncertainty"),
])
def test_where_the_step_graph_cannot_apply_is_one_line(over, says):
    with pytest.raises(ConfigError) as e:
        trial_config(tiny_trial(**{"training.step_graph": True, **over}), "t.yaml")
    line = str(e.value)
    assert line.startswith("t.yaml: ") and says in line and "\n" not in line
    trial_config(tiny_trial(**over), "t.yaml")  # without the step graph the same settings are fine


def test_the_capturable_methods_and_the_default_sampler_are_accepted():
    for method in ("finetune", "ewc", "mas", "lamol", "word_kd", "seq_kd", "seq_kd_soft", "multitask"):
        assert trial_config(tiny_trial(**{"training.step_graph": True, "method": method})).training.step_graph


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_trial_with_the_step_graph_trains_on_the_cpu(tmp_path, monkeypatch, precision):
    from l2kd.trial import run_trial

    steps = []
    real = StepGraph.run
    monkeypatch.setattr(StepGraph, "run", lambda self, batch, lr: steps.append(batch.n_qa) or real(self, batch, lr))
    cfg = trial_config(tiny_trial(**{"training.step_graph": True, "training.precision": precision,
                                     "tasks": ["synth.nlg"]}))
    result = run_trial(cfg, tmp_path / "run")
    assert steps and all(n % TARGET_STEP == 0 for n in steps)  # every step the bucketed one
    assert result.R[0][0] is not None
    assert result.config["training"]["step_graph"] is True


# --------------------------------------------------------------------------- on a GPU
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("method", ["lamol", "word_kd"])
def test_the_captured_step_equals_the_eager_step_on_a_gpu(method):
    s = _setup(method, **{"training.device": "cuda", "training.precision": "fp32", "training.lr": 3e-3})
    rng = np.random.default_rng(0)
    plans = [rng.choice(len(s.rows), 4, replace=False) for _ in range(6)] * 2  # replays, not only captures
    lrs = [3e-3 * (k + 1) / 12 for k in range(12)]
    want_w, want_t = _steps(s, method, False, plans, lrs)
    got_w, got_t = _steps(s, method, True, plans, lrs)
    for a, b in zip(got_t, want_t):
        np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], rtol=1e-4, atol=1e-6)
    for n in want_w:  # TF32 and other kernels' rounding: looser than the CPU's 1e-5
        torch.testing.assert_close(got_w[n], want_w[n], rtol=1e-3, atol=1e-5, msg=n)


@pytest.mark.gpu
@needs_gpu
def test_a_graph_step_makes_no_host_wait():
    from l2kd.bench.run import fast_path
    from l2kd.bench.setup import BenchOptions

    s = _setup("word_kd", **{"training.device": "cuda"})
    figures, _ = fast_path(s, s.plan("paper", 6), s.precision, BenchOptions(steps=3, warmup=2), graph=True)
    assert figures.syncs_per_step == 0, figures.sync_sites
    assert figures.buckets >= 1


def test_the_setting_changes_no_stored_identity_at_its_default_and_joins_it_when_on():
    from l2kd.identity import config_hash, trial_identity

    plain = trial_config(tiny_trial())
    assert "step_graph" not in trial_identity(plain.to_dict())["training"]
    assert config_hash(trial_config(tiny_trial(**{"training.step_graph": False}))) == config_hash(plain)
    assert config_hash(trial_config(tiny_trial(**{"training.step_graph": True}))) != config_hash(plain)
