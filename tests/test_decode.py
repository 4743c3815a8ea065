"""Batched KV-cache decoding equals decoding each prompt alone without a cache."""

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from l2kd.decode import DecodeSettings, DecodeStats, decode, decode_reference, generate_pseudo, pseudo_counts
from l2kd.data.encoding import SpecialIds

CPU = torch.device("cpu")


def tiny_model(vocab=60, seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=48, vocab_size=vocab,
                     bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def test_batched_greedy_matches_one_by_one_without_cache():
    model = tiny_model()
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, 60, (n,), generator=g).tolist() for n in (3, 9, 1, 6, 9)]
    limits = [7, 4, 12, 1, 9]  # rows finish at different steps and leave the batch
    s = DecodeSettings("greedy", tokens_per_batch=10_000)
    batched = decode(model, prompts, limits, eos=0, pad=59, max_total=48, settings=s, device=CPU)
    alone = [decode_reference(model, p, m, eos=0, max_total=48, settings=s, device=CPU)
             for p, m in zip(prompts, limits)]
    assert batched == alone
    assert [len(b) for b in batched] == limits  # EOS is unlikely here; every row hits its limit


def test_small_token_budget_splits_batches_without_changing_results():
    model = tiny_model()
    prompts = [[5, 6, 7], [8], [9, 10], [11, 12, 13, 14]]
    big = decode(model, prompts, 5, eos=0, pad=59, max_total=48,
                 settings=DecodeSettings(tokens_per_batch=10_000), device=CPU)
    small = decode(model, prompts, 5, eos=0, pad=59, max_total=48,
                   settings=DecodeSettings(tokens_per_batch=10), device=CPU)
    assert big == small


def test_stops_at_eos_and_at_the_position_limit():
    model = tiny_model()
    with torch.no_grad():  # make token 0 (EOS) the certain choice after token 3
        model.lm_head.weight.data.zero_()
    out = decode(model, [[3]], 10, eos=0, pad=59, max_total=48, settings=DecodeSettings(), device=CPU)
    assert out == [[]]  # all-zero logits: argmax is id 0 = EOS at once
    model = tiny_model()
    out = decode(model, [list(range(1, 45))], 100, eos=999, pad=59, max_total=48,
                 settings=DecodeSettings(), device=CPU)
    assert len(out[0]) == 4  # 44 prompt tokens + 4 = the model's 48 positions


def test_top_k_sampling_is_seeded():
    model = tiny_model()
    s = DecodeSettings("top_k", top_k=5)
    def run(seed):
        return decode(model, [[1, 2]] * 4, 8, eos=0, pad=59, max_total=48, settings=s, device=CPU,
                      generator=torch.Generator().manual_seed(seed))
    assert run(3) == run(3) and run(3) != run(4)


def test_pseudo_counts_follow_lamol():
    # WOZ -> CNN -> WikiSQL with the paper's sizes: 1,321 then 652 + 652
    assert pseudo_counts(6604, ["woz.en"], 0.2) == {"woz.en": 1321}
    assert pseudo_counts(6525, ["woz.en", "cnn_dailymail"], 0.2) == {"woz.en": 652, "cnn_dailymail": 652}
    assert pseudo_counts(7944, ["a", "b", "c", "d"], 0.2) == {t: 397 for t in "abcd"}
    assert pseudo_counts(100, [], 0.2) == {}


def test_generate_pseudo_parses_and_counts_drops():
    ids = SpecialIds(eos=0, ans=50, pad=59, unk=58)
    model = tiny_model()
    samples, stats = generate_pseudo(model, {"a": 51}, {"a": 20}, ids, max_total=24,
                                     settings=DecodeSettings(), device=CPU, amp_dtype=None,
                                     generator=torch.Generator().manual_seed(0))
    assert stats.requested == 20
    assert stats.kept + stats.dropped["no_ans"] + stats.dropped["multi_ans"] == 20
    assert stats.kept == len(samples)
    for task, g, q, a in samples:
        assert task == "a" and g == 51 and ids.ans not in q + a and 1 + len(q) + 1 + len(a) <= 24


# --------------------------------------------------------------------------- the static-cache path
def eos_prone_model(vocab=60, seed=0, eos=0, scale=6.0):
    """A tiny GPT-2 whose EOS logit is often the largest, so rows finish at many different steps."""
    model = tiny_model(vocab, seed)
    with torch.no_grad():
        model.transformer.wte.weight[eos] *= scale
    return model


def _mixed_prompts(n, vocab=60, seed=1, longest=20):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, vocab - 1, (int(torch.randint(1, longest, (1,), generator=g)),),
                          generator=g).tolist() for _ in range(n)]


def test_gpt2_static_cache_equals_the_generic_path_and_the_reference():
    model = eos_prone_model()
    prompts = _mixed_prompts(40)
    # small batches, a tiny expectation (the cache grows), a look every 2 tokens (compactions)
    s = DecodeSettings("greedy", tokens_per_batch=200, max_batch_size=16, check_every=2,
                       compaction="lazy")  # the GPU's policy
    stats = DecodeStats()
    fast = decode(model, prompts, 20, eos=0, pad=59, max_total=48, settings=s, device=CPU,
                  expect=2, stats=stats)
    generic = decode(model, prompts, 20, eos=0, pad=59, max_total=48, settings=s, device=CPU,
                     generic=True)
    alone = [decode_reference(model, p, 20, eos=0, max_total=48, settings=s, device=CPU) for p in prompts]
    assert fast == generic == alone
    lengths = {len(o) for o in fast}
    assert len(lengths) > 3 and 20 in lengths  # rows end at EOS at many steps, some at the budget
    assert stats.compactions > 0 and stats.batches >= 3


def test_top_k_draws_are_keyed_by_row_not_by_batch():
    """The same row key gives the same sample whatever the batching, and the same as the reference."""
    from l2kd.decode import row_keys

    model = eos_prone_model(scale=3.0)
    prompts = _mixed_prompts(24, seed=5)
    s = DecodeSettings("top_k", top_k=5)
    one = decode(model, prompts, 12, eos=0, pad=59, max_total=48, settings=s, device=CPU, seed=11)
    split = decode(model, prompts, 12, eos=0, pad=59, max_total=48, device=CPU, seed=11,
                   settings=DecodeSettings("top_k", top_k=5, tokens_per_batch=90, check_every=3,
                                          compaction="lazy"))
    keys = row_keys(11, len(prompts), CPU)
    alone = [decode_reference(model, p, 12, eos=0, max_total=48, settings=s, device=CPU, key=keys[i:i + 1])
             for i, p in enumerate(prompts)]
    assert one == split == alone
    other = decode(model, prompts, 12, eos=0, pad=59, max_total=48, settings=s, device=CPU, seed=12)
    assert other != one


def test_exponential_noise_is_pinned():
    """The draws of a seed never change: stored pseudo samples stay reproducible run to run."""
    from l2kd.decode.sampling import exponential_noise

    noise = exponential_noise(torch.tensor([[1, 2], [3, 4]]), 5, 3)
    expected = torch.tensor([[0.9957, 2.4034, 0.1150], [0.1265, 4.1508, 0.6817]])
    assert torch.allclose(noise, expected, atol=1e-4), noise


def test_the_hash_is_lowbias32_in_exact_32_bit_arithmetic():
    from l2kd.decode.sampling import _hash32

    def lowbias32(x):  # the published finaliser, on Python's unbounded ints
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    xs = [0, 1, 2, 12345, 0x7FFFFFFF, 0x80000000, 0xDEADBEEF, 0xFFFFFFFF]
    assert _hash32(torch.tensor(xs)).tolist() == [lowbias32(x) for x in xs]


def test_top_k_samples_follow_the_softmax():
    """Over many row keys, each of the top-k tokens is drawn with its softmax probability."""
    from l2kd.decode import pick_next, row_keys

    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]]).expand(20000, 6)
    s = DecodeSettings("top_k", top_k=4, temperature=0.8)
    draws = pick_next(logits, s, row_keys(3, 20000, CPU), 7)
    freq = torch.bincount(draws, minlength=6).float() / 20000
    p = torch.softmax(logits[0, :4] / 0.8, -1)
    assert freq[4:].sum() == 0
    assert torch.allclose(freq[:4], p, atol=0.012), (freq, p)


def test_forced_lengths_finish_rows_as_an_eos_would():
    model = tiny_model()
    prompts = _mixed_prompts(6)
    s = DecodeSettings("greedy", check_every=1)
    out = decode(model, prompts, 10, eos=0, pad=59, max_total=48, settings=s, device=CPU,
                 forced_lengths=[1, 3, 0, 10, 7, 2])
    assert [len(o) for o in out] == [1, 3, 0, 10, 7, 2]
    full = decode(model, prompts, 10, eos=0, pad=59, max_total=48, settings=s, device=CPU)
    assert all(o == f[: len(o)] for o, f in zip(out, full))


def test_batches_are_planned_by_expected_not_worst_case_lengths():
    from l2kd.decode import plan_batches

    s = DecodeSettings(tokens_per_batch=1000, max_batch_size=64)
    lengths = [1] * 100
    by_budget = list(plan_batches(range(100), lengths, [999] * 100, s))
    by_expect = list(plan_batches(range(100), lengths, [39] * 100, s))
    assert len(by_budget) == 100 and [len(b) for b in by_expect] == [25, 25, 25, 25]
    assert [len(b) for b in plan_batches(range(100), lengths, [4] * 100, s)] == [64, 36]


def test_both_compaction_policies_give_the_same_answers():
    model = eos_prone_model()
    prompts = _mixed_prompts(30, seed=9)
    run = lambda policy, mode: decode(model, prompts, 15, eos=0, pad=59, max_total=48, device=CPU, seed=2,  # noqa: E731
                                      settings=DecodeSettings(mode, check_every=4, compaction=policy))
    for mode in ("greedy", "top_k"):
        assert run("eager", mode) == run("lazy", mode) == run("auto", mode)


def test_a_gpt2_with_lora_adapters_takes_the_generic_path():
    """The static-cache stepper reads the products' weights; an adapter's addition would be lost."""
    from l2kd.config import ModelConfig
    from l2kd.decode.steppers import gpt2_fast_path_applies
    from l2kd.model import build_model
    from l2kd.tokenizer import Tokenizer

    tok = Tokenizer.load("builtin", None, 1024)
    plain = build_model(ModelConfig(config={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64}), tok, 0)
    assert gpt2_fast_path_applies(plain)
    lora = build_model(ModelConfig(config={"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 64},
                                   lora={"r": 4}), tok, 0)
    assert not gpt2_fast_path_applies(lora)


def test_the_generic_path_passes_the_cache_as_transformers_asks():
    """transformers warns (FutureWarning) at every step given GPT-2's old `past_key_values`
    argument; the Hugging Face stepper passes `cache` where the forward takes it, so nothing is
    printed even without the filter in l2kd/model.py."""
    import warnings

    model = tiny_model()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # over every filter, l2kd's included
        decode(model, [[1, 2], [3]], 6, eos=0, pad=59, max_total=48, settings=DecodeSettings(), device=CPU,
               generic=True)
    assert not [w for w in seen if issubclass(w.category, FutureWarning)], [str(w.message) for w in seen]


def test_the_graph_paths_buckets_and_buffer_pool_decode_as_without_graphs(monkeypatch):
    """What decoding with CUDA graphs does around the graphs, on a CPU: rows padded up to a graph's
    row bucket (dead from the start), cache buffers pooled by shape so each shape keeps fixed
    addresses, lazy compaction into smaller buckets. Each replay here runs the captured step
    eagerly (tests/test_gpu.py replays real graphs); the answers equal decoding without graphs."""
    import l2kd.decode.loop as loop
    from l2kd.decode.graphs import ROW_BUCKETS

    class EagerReplays:
        def __init__(self):
            self.replays, self.shapes = 0, set()

        def run(self, stepper, tokens, pos):
            assert stepper.buf is stepper.pool.get(stepper.rows, stepper.width)  # one buffer per shape
            self.replays += 1
            self.shapes.add((stepper.rows, stepper.width))
            return stepper._step(tokens, pos)

    made = []
    monkeypatch.setattr(loop, "GraphedSteps", lambda: made.append(EagerReplays()) or made[-1])
    model = eos_prone_model()
    prompts = _mixed_prompts(37, seed=4)  # 37 rows: a batch is padded to a bucket of 48
    for mode in ("greedy", "top_k"):
        s = DecodeSettings(mode, top_k=5, check_every=2, compaction="lazy")
        stats = DecodeStats()
        graphed = decode(model, prompts, 20, eos=0, pad=59, max_total=48, settings=s, device=CPU, seed=4,
                         stats=stats, graphs=True)
        plain = decode(model, prompts, 20, eos=0, pad=59, max_total=48, settings=s, device=CPU, seed=4,
                       graphs=False)
        assert graphed == plain, mode
        assert stats.graph_replays == made[-1].replays > 0 and stats.compactions > 0
        rows = {r for r, _ in made[-1].shapes}
        assert rows <= set(ROW_BUCKETS) and max(rows) == 48 and len(rows) > 1, rows
