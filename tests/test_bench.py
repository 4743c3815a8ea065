"""The benchmark runs on a tiny model and its figures hang together; FLOPs by hand; peaks by name."""

import json
import subprocess
import sys

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from l2kd.bench import BenchOptions, run_bench
from l2kd.bench.flops import block_params, peak_for_name, peak_tflops, step_flops
from l2kd.trialconfig import trial_config

from conftest import REPO, tiny_trial


def test_model_flops_by_hand():
    m = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=8, n_head=2, n_positions=16, vocab_size=10))
    n = block_params(m)
    assert n == 2 * (2 * 8 + 8 * 24 + 24 + 8 * 8 + 8 + 2 * 8 + 8 * 32 + 32 + 32 * 8 + 8)  # ln, attn, ln, mlp
    # two rows of 3 and 5 tokens, 4 positions read by a loss
    assert step_flops(m, [3, 5], 4) == 6 * n * 8 + 12 * 2 * 8 * (9 + 25) + 6 * 8 * 10 * 4


def test_peaks_by_cuda_device_name():
    assert peak_for_name("NVIDIA H100 80GB HBM3", "bf16") == 989.4  # SXM
    assert peak_for_name("NVIDIA H100 PCIe", "bf16") == 756.0  # not the SXM part's peak
    assert peak_for_name("NVIDIA H100 NVL", "bf16") == 835.5
    assert peak_for_name("NVIDIA H200", "bf16") == 989.4
    assert peak_for_name("NVIDIA A100-SXM4-80GB", "fp32") == 19.5
    assert peak_for_name("NVIDIA A10", "bf16") == 125.0 and peak_for_name("NVIDIA L40S", "bf16") == 362.0
    assert peak_for_name("NVIDIA GeForce RTX 4090", "bf16") is None


def test_peaks_are_known_for_gpus_only_and_can_be_given():
    assert peak_tflops(torch.device("cpu"), "fp32") is None
    assert peak_tflops(torch.device("cpu"), "fp32", override=1.5) == 1.5


def test_bench_runs_on_a_tiny_model_and_its_figures_hang_together():
    cfg = trial_config(tiny_trial(tasks=["synth.nlg", "synth.state"]))
    opts = BenchOptions(steps=2, warmup=1, gen_samples=4, ref_gen_samples=1, gen_tokens=8,
                        eval_prompts=6, ref_eval_prompts=2)
    r = run_bench(cfg, opts)
    assert set(r.train) == {"fast", "fast, paper", "reference"}
    for path in r.train.values():
        assert path.tokens_per_s > 0 and path.tflops > 0 and path.mfu is None  # a CPU has no known peak
    assert r.train["fast"].warmup_s > 0 and r.train["fast"].syncs_per_step is None  # no GPU to wait on
    assert r.train["fast, paper"].examples_per_step == r.train["reference"].examples_per_step
    assert r.faithfulness["max_abs_diff"] < 1e-4  # fp32: the same loss along both paths
    assert r.evaluation["identical_outputs"] == "2/2"  # greedy decoding agrees with the reference
    assert r.generation["samples"] == 4 and r.generation["ratio"] > 0 and r.kd_step_ratio > 0
    p = r.projection
    assert p["trained_tokens"] > 0 and p["pseudo_tokens"] > 0 and p["this_config_s"] > 0
    assert p["speedup"] == pytest.approx(p["reference_s"] / p["this_config_s"])
    # the whole trial's projection includes all of its decoding, and says what share it is
    assert p["decode_s"] == r.decoding["seconds"] > 0 and p["train_s"] > 0
    assert p["this_config_s"] == pytest.approx(p["train_s"] + p["decode_s"])
    assert p["decode_share"] == pytest.approx(p["decode_s"] / p["this_config_s"])
    for name in ("fast", "fast, paper"):  # bench.step's per-path figures
        f = r.train[name]
        assert f.step_ms == pytest.approx(1e3 / f.steps_per_s)
        assert 0 <= f.padding_fraction < 1 and f.saved_mib > 0 and f.peak_mib is None  # no GPU
    gelu, kd = r.kernels["gelu"], r.kernels["kd_losses"]
    assert gelu["gelu_new_ms"] > 0 and gelu["speedup"] == pytest.approx(gelu["gelu_new_ms"] / gelu["one_kernel_ms"])
    assert kd["fused_saved_mib"] < kd["separate_saved_mib"]  # one direction kept instead of two
    assert r.kd_cached_step_ratio > 0 and r.teacher_cache["targets"] > 0 and r.teacher_cache["mib"] > 0


def test_held_for_backward_counts_each_saved_storage_once():
    from l2kd.bench.step import saved_for_backward

    x = torch.randn(256, 256, requires_grad=True)  # 256 KiB
    _, held = saved_for_backward(lambda: (x * x).sum())  # x saved twice: one storage
    assert held == 256 * 256 * 4
    _, held = saved_for_backward(lambda: (x.exp() * 2).sum())  # exp saves its output
    assert held == 256 * 256 * 4


def test_grid_projection_counts_every_cell_and_teacher_at_its_policys_rate(tmp_path):
    from types import SimpleNamespace

    from l2kd.bench.step import grid_projection
    from l2kd.gridspec import parse_grid
    from l2kd.plan import build_plan, cell_tokens
    from l2kd.teachers.store import teacher_config

    g = {"name": "g", "tasks": ["synth.nlg", "synth.sentiment"], "orders": "forward_reverse",
         "methods": ["lamol", "word_kd"], "seeds": [3], "data": {"max_train_examples": 24, "max_test_examples": 6},
         "model": {"config": {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 96}},
         "training": {"epochs": 3}}
    plan = build_plan(parse_grid(g, "g.yaml", storage=str(tmp_path)))
    fig = lambda rate: SimpleNamespace(tokens_per_s=rate)  # noqa: E731
    r = SimpleNamespace(train={"fast": fig(1000.0), "fast, paper": fig(100.0)}, kd_step_ratio=2.0,
                        kd_cached_step_ratio=1.25, packing={}, packing_paper={"policy": "paper", "gain": 2.5})
    out = grid_projection(plan, r, ["training.epochs=3"])
    kd = (2.0 + 2 * 1.25) / 3  # the first epoch runs the teacher, the next two its cached states
    want = sum(cell_tokens(c.config) * (kd if "word_kd" in c.id else 1.0) for c in plan.cells) / 100.0
    teachers = sum(cell_tokens(teacher_config(trial_config(job.config), job.task))
                   for job in plan.teachers.values()) / 100.0  # one per task, shared by both orders
    assert out["unknown"] == 0 and out["cells"] == 4 and out["teachers"] == 2
    assert out["cells_s"] == pytest.approx(want) and out["teachers_s"] == pytest.approx(teachers)
    assert out["packed_training_s"] == pytest.approx(out["training_s"] / 2.5)
    tokens = grid_projection(plan, r, ["training.batch_policy=tokens"])  # every cell on the other policy
    assert tokens["by_policy_s"].keys() == {"tokens"}


def test_cli_bench_writes_its_figures(tmp_path):
    cfg = tmp_path / "t.yaml"
    cfg.write_text(json.dumps(tiny_trial(tasks=["synth.sentiment"], method="finetune")))
    res = subprocess.run([sys.executable, str(REPO / "cli.py"), "bench", str(cfg), "--steps", "2",
                          "--out", str(tmp_path / "b.json")], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    figures = json.loads((tmp_path / "b.json").read_text())
    assert figures["train"]["fast"]["tokens_per_s"] > 0 and "tokens/s" in res.stdout


def test_the_decoder_loop_counts_forward_calls_by_hand():
    """Counted by decode's own loop on a model-free decoder: a prompt pass, then one call per token
    until the look after the longest row's last token (or its budget)."""
    from l2kd.bench.decoding import BEFORE, count_calls
    from l2kd.decode import DecodeSettings

    g = {"prompts": [[1], [2], [3]], "budgets": [10] * 3, "expect": [10] * 3, "forced": [2, 5, 1],
         "max_total": 100}
    s = count_calls([g], DecodeSettings(check_every=1), planned=True)
    assert (s.forward_calls, s.batches, s.compactions, s.new_tokens) == (6, 1, 2, 8)  # a CPU compacts at once
    # 40 pseudo samples of 10 tokens under a 1,024-token cap: planned by the cap, 16 rows a batch
    # (3 batches of 11 calls); planned by the expected 10 tokens, one batch, looked at every 8 tokens
    g = {"prompts": [[1]] * 40, "budgets": [1024] * 40, "expect": [10] * 40, "forced": [10] * 40,
         "max_total": 1024}
    assert count_calls([g], BEFORE, planned=False).forward_calls == 33
    assert count_calls([g], DecodeSettings(compaction="lazy"), planned=True).forward_calls == 16
    assert count_calls([g], DecodeSettings(), planned=True).forward_calls == 11  # a CPU looks every token


def test_the_bench_counts_and_times_the_whole_trials_decoding():
    from l2kd.bench.decoding import measure
    from l2kd.bench.setup import BenchSetup

    cfg = trial_config(tiny_trial(tasks=["synth.nlg", "synth.state", "synth.sentiment"]))
    s = BenchSetup(cfg)
    d = measure(cfg, s.model, s.tok, s.max_len, s.device, s.amp)
    kinds = [p.kind for p in d.passes]
    assert kinds.count("evaluation") == 1 and kinds.count("pseudo") == 2  # before stages 2 and 3
    ev = d.passes[0]
    assert ev.times == 3  # after each of 3 stages (before_training is off)
    assert d.forward_calls == sum(p.times * p.forward_calls for p in d.passes)
    assert d.forward_calls < d.forward_calls_before
    assert set(d.measured) == {"evaluation", "pseudo"} and d.seconds > 0
    assert d.measured["evaluation"]["new_tokens"] == ev.new_tokens  # the whole pass, decoded for real


def test_cli_bench_of_a_grid_projects_the_whole_grid(tmp_path):
    g = {"name": "g", "tasks": ["synth.sentiment", "synth.nlg"], "orders": "forward", "methods": ["finetune"],
         "seeds": [3], "data": {"max_train_examples": 24, "max_test_examples": 6},
         "model": {"config": {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 96}},
         "training": {"epochs": 1, "threads": 1}, "eval": {"before_training": False}, "storage": str(tmp_path / "s")}
    path = tmp_path / "g.yaml"
    path.write_text(json.dumps(g))
    res = subprocess.run([sys.executable, str(REPO / "cli.py"), "bench", str(path), "--steps", "2",
                          "--set", "training.epochs=2", "--out", str(tmp_path / "b.json")],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr
    grid = json.loads((tmp_path / "b.json").read_text())["grid"]
    assert grid["cells"] == 1 and grid["training_s"] > 0 and grid["unknown"] == 0
    assert "projected grid training" in res.stdout and "GELU" in res.stdout


def test_the_bench_times_the_configured_methods_step():
    """The fast path runs the configured method's hooks and loss (the trial's set-up, no copy); a
    teacher's cost is timed on a Word-KD step at the configured temperature."""
    from l2kd.bench.run import fast_path
    from l2kd.bench.setup import BenchSetup
    from l2kd.methods.kd import WordKD
    from l2kd.methods.lamol import Lamol
    from l2kd.methods.regularizers import EWC

    opts = BenchOptions(steps=1, warmup=1)
    kd = BenchSetup(trial_config(tiny_trial(method={"name": "word_kd", "temperature": 3.0, "lm_lambda": 0.5})))
    plain, with_teacher = kd.step_method(False), kd.step_method(True)
    assert isinstance(plain, Lamol) and not isinstance(plain, WordKD) and plain.p.lm_lambda == 0.5
    assert isinstance(with_teacher, WordKD) and with_teacher.p.temperature == 3.0
    ewc = BenchSetup(trial_config(tiny_trial(method="ewc")))
    assert isinstance(ewc.step_method(False), EWC) and ewc.step_method(True).p.temperature == 2.0
    assert not ewc.with_lm  # EWC trains the QA loss only: batches without LM rows, as the trial's
    seen = []
    original = EWC.loss_terms

    def spy(self, ctx, batch, logits):
        seen.append(type(self))
        return original(self, ctx, batch, logits)

    EWC.loss_terms = spy
    try:
        figures, _ = fast_path(ewc, ewc.plan("tokens", 2), ewc.precision, opts)
    finally:
        EWC.loss_terms = original
    assert seen and set(seen) == {EWC} and figures.tokens_per_s > 0


def test_the_decoding_bandwidth_bound_by_hand(monkeypatch):
    """The least time a decoding pass could take on a GPU: every forward call reads the weights once
    (in the autocast dtype) and every live row its filled KV cache, over the GPU's bandwidth."""
    from l2kd.bench import flops
    from l2kd.bench.decoding import _bandwidth_bound_s
    from l2kd.decode import DecodeStats

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32))
    stats = DecodeStats(forward_calls=10, cache_positions_read=1000)
    params = sum(p.numel() for p in model.parameters())  # the tied head counted once
    cuda = torch.device("cuda")  # only named: nothing runs on it
    monkeypatch.setattr(flops, "device_name", lambda device: "NVIDIA H200")
    # bf16: 2 bytes a weight; a cache position holds K and V of both layers, 64 wide
    by_hand = (10 * params * 2 + 1000 * (2 * 2 * 64 * 2)) / 4.8e12
    assert _bandwidth_bound_s(model, stats, torch.bfloat16, cuda) == pytest.approx(by_hand)
    assert _bandwidth_bound_s(model, stats, None, torch.device("cpu")) is None
    monkeypatch.setattr(flops, "device_name", lambda device: "NVIDIA GeForce RTX 4090")  # bandwidth unknown
    assert _bandwidth_bound_s(model, stats, torch.bfloat16, cuda) is None
