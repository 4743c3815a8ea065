"""On a GPU only (skipped elsewhere): the training step never makes the host wait, the padded head
and the compiled blocks keep GPT-2's values in bf16, and a trial runs end to end."""

import pytest
import torch

from l2kd.bench.run import fast_path
from l2kd.bench.setup import BenchOptions, BenchSetup
from l2kd.model import TargetLogits, head_logits, hidden_states
from l2kd.trial import run_trial
from l2kd.trialconfig import trial_config

from conftest import tiny_trial

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def setup(**over) -> BenchSetup:
    return BenchSetup(trial_config(tiny_trial(**{"training.device": "cuda", "training.batch_policy": "tokens",
                                             "training.tokens_per_batch": 512, **over})))


@pytest.mark.parametrize("compile_blocks", [False, True])
def test_a_training_step_never_waits_on_the_gpu(compile_blocks):
    s = setup(**{"training.compile": compile_blocks})
    opts = BenchOptions(steps=2, warmup=2)
    plain, _ = fast_path(s, s.plan("tokens", 4), s.precision, opts)
    teacher = TargetLogits.frozen(s.fresh_model(), s.amp, compile_blocks)
    with_kd, _ = fast_path(s, s.plan("tokens", 4), s.precision, opts, teacher=teacher)
    assert plain.syncs_per_step == 0, plain.sync_sites
    assert with_kd.syncs_per_step == 0, with_kd.sync_sites


def test_padded_head_and_compiled_blocks_keep_gpt2s_values_in_bf16():
    s = setup()
    model = s.fresh_model().eval()
    x = torch.randint(1, len(s.tok), (4, 40), device="cuda")
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
        eager = model.lm_head(hidden_states(model, x)).float()
        fast = head_logits(model, hidden_states(model, x, compile_blocks=True).flatten(0, 1)).float()
    assert model.lm_head.weight.shape[0] % 64  # the padded path is the one exercised
    torch.testing.assert_close(fast.view_as(eager), eager, rtol=2e-2, atol=5e-2)  # bf16 rounding


def test_a_word_kd_trial_runs_on_the_gpu(tmp_path):
    from l2kd.teachers.store import TeacherStore

    cfg = trial_config(tiny_trial(method="word_kd", **{"training.device": "cuda", "training.compile": True}))
    teachers = TeacherStore(tmp_path / "teachers").ensure_all(cfg)
    result = run_trial(cfg, tmp_path / "trial", teachers=teachers)
    assert result.complete and len(result.R) == 2


def _decoding_case(vocab=300, rows=40):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=96, vocab_size=vocab,
                                       bos_token_id=0, eos_token_id=0)).cuda().eval()
    with torch.no_grad():
        model.transformer.wte.weight[0] *= 4.0  # EOS at many steps: compactions and bucket changes
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, vocab, (int(torch.randint(1, 30, (1,), generator=g)),), generator=g).tolist()
               for _ in range(rows)]
    return model, prompts


@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_graph_replayed_decoding_equals_eager_decoding(amp):
    from l2kd.decode import DecodeSettings, DecodeStats, decode

    model, prompts = _decoding_case()
    dev = torch.device("cuda")
    for mode in ("greedy", "top_k"):
        s = DecodeSettings(mode, check_every=2)
        stats = DecodeStats()
        graphed = decode(model, prompts, 40, eos=0, pad=1, max_total=96, settings=s, device=dev,
                         amp_dtype=amp, seed=3, stats=stats, graphs=True)
        eager = decode(model, prompts, 40, eos=0, pad=1, max_total=96, settings=s, device=dev,
                       amp_dtype=amp, seed=3, graphs=False)
        assert graphed == eager
        assert stats.graph_replays > 0


def test_gpu_decoding_equals_the_generic_path_in_fp32():
    from l2kd.decode import DecodeSettings, decode

    model, prompts = _decoding_case()
    dev = torch.device("cuda")
    s = DecodeSettings("greedy")
    ours = decode(model, prompts, 40, eos=0, pad=1, max_total=96, settings=s, device=dev)
    theirs = decode(model, prompts, 40, eos=0, pad=1, max_total=96, settings=s, device=dev, generic=True)
    assert ours == theirs


def test_a_decoding_step_never_waits_on_the_gpu():
    """Between the host's looks (every check_every tokens) a step queues without waiting."""
    from l2kd.bench.timing import count_syncs
    from l2kd.decode import DecodeSettings, DecodeStats, decode

    model, prompts = _decoding_case(rows=8)
    dev = torch.device("cuda")
    s = DecodeSettings("greedy", check_every=1000)  # no look before the budget ends
    decode(model, prompts, 30, eos=-1, pad=1, max_total=96, settings=s, device=dev)  # captures
    stats = DecodeStats()
    waits, sites = count_syncs(dev, lambda: decode(model, prompts, 30, eos=-1, pad=1, max_total=96,
                                                   settings=s, device=dev, stats=stats))
    # what remains: the prompts' copy in, capture set-up per call, the answers' copy out
    assert waits < stats.forward_calls / 2, sites
