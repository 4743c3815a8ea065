"""Batched KV-cache decoding equals decoding each prompt alone without a cache."""

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from l2kd.decode import DecodeSettings, decode, decode_reference, generate_pseudo, pseudo_counts
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
    run = lambda seed: decode(model, [[1, 2]] * 4, 8, eos=0, pad=59, max_total=48, settings=s,
                              device=CPU, generator=torch.Generator().manual_seed(seed))
    assert run(3) == run(3) and run(3) != run(4)


def test_top_k_draws_are_torch_multinomials_draws():
    """The sampler draws as torch.multinomial(probs, 1) does (the reference's call), minus its checks
    that read values back from a GPU: the same tokens from the same generator state, leaving it alike."""
    from l2kd.decode import pick_next

    logits = torch.randn(32, 60, generator=torch.Generator().manual_seed(0))
    s = DecodeSettings("top_k", top_k=7, temperature=0.9)
    for seed in range(5):
        ours, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        top, idx = (logits / 0.9).topk(7, dim=-1)
        expected = idx.gather(-1, torch.multinomial(torch.softmax(top, -1), 1, generator=theirs)).squeeze(-1)
        assert torch.equal(pick_next(logits, s, ours), expected)
        assert torch.equal(ours.get_state(), theirs.get_state())


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
