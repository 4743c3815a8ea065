"""Losses against hand computations on tiny tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from l2kd.data.batching import collate
from l2kd.data.encoding import IGNORE, SpecialIds, encode_train
from l2kd.losses import ans_weighted, token_ce


def test_weighted_ce_matches_hand_computation():
    # three positions over a 3-word vocabulary; word 2 (the "__ans__") weighs 5; the last is ignored
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0], [5.0, 5.0, 5.0]])
    targets = torch.tensor([1, 2, IGNORE])
    w = ans_weighted(3, ans_id=2, ans_weight=5.0, device=torch.device("cpu"))
    nll1 = -math.log(math.exp(2) / (math.exp(1) + math.exp(2) + 1))
    nll2 = -math.log(math.exp(3) / (1 + 1 + math.exp(3)))
    expected = (1 * nll1 + 5 * nll2) / 6
    assert abs(token_ce(logits, targets, w).item() - expected) < 1e-6
    # unweighted: the plain mean over the two positions
    assert abs(token_ce(logits, targets).item() - (nll1 + nll2) / 2) < 1e-6


def test_ce_over_no_position_is_zero_not_nan():
    logits = torch.randn(5, 7)
    assert token_ce(logits, torch.full((5,), IGNORE)).item() == 0.0
    assert token_ce(logits, torch.randint(0, 7, (5,)), select=torch.zeros(5, dtype=torch.bool)).item() == 0.0
    assert token_ce(torch.zeros(0, 7), torch.zeros(0, dtype=torch.long)).item() == 0.0


def test_ce_select_keeps_only_selected_positions():
    torch.manual_seed(0)
    logits, targets = torch.randn(6, 5), torch.randint(0, 5, (6,))
    sel = torch.tensor([True, True, False, False, True, False])
    assert abs(token_ce(logits, targets, select=sel).item() - token_ce(logits[sel], targets[sel]).item()) < 1e-6


def test_loss_masks_cover_answer_plus_eos_and_every_lm_position():
    ids = SpecialIds(eos=0, ans=8, pad=9, unk=10)
    rows = [encode_train([1, 2, 3], [4], [5, 6], 11, ids, 32, "t"),
            encode_train([1], [4], [7], 11, ids, 32, "t", is_pseudo=True)]
    b = collate(rows, ids.pad, with_lm=True)
    W = b.inputs.shape[1]
    assert W == 8 and b.inputs.shape[0] == 4  # QA rows stacked over LM rows, padded to gen_X
    assert b.inputs[1].tolist() == [1, 4, 8, 7, 9, 9, 9, 9]  # right-padded with __pad__
    assert b.inputs[2:, 0].tolist() == [11, 11]  # the task token leads every LM row
    # QA: answer + EOS only -> positions of __ans__, 5, 6 in row 0 and of __ans__, 7 in row 1
    assert b.n_qa == 5
    assert b.positions[:5].tolist() == [4, 5, 6, W + 2, W + 3]
    assert b.qa_targets.tolist() == [5, 6, 0, 7, 0]
    # LM: every real position of gen_X (8 and 5 of them), padding excluded
    assert b.positions[5:].tolist() == [2 * W + t for t in range(8)] + [3 * W + t for t in range(5)]
    assert b.lm_targets.tolist() == [1, 2, 3, 4, 8, 5, 6, 0, 1, 4, 8, 7, 0]
    assert b.pseudo_mask("qa").tolist() == [False] * 3 + [True] * 2
    assert b.pseudo_mask("lm").tolist() == [False] * 8 + [True] * 5


def test_target_logits_equal_gpt2_full_logits():
    from transformers import GPT2Config, GPT2LMHeadModel

    from l2kd.model import TargetLogits

    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, n_positions=32, vocab_size=12,
                                      bos_token_id=0, eos_token_id=0)).eval()
    ids = SpecialIds(eos=0, ans=8, pad=9, unk=10)
    b = collate([encode_train([1, 2, 3], [4], [5, 6], 11, ids, 32, "t"),
                 encode_train([1], [4], [7], 11, ids, 32, "t")], ids.pad, with_lm=True)
    full = gpt2(b.inputs).logits.flatten(0, 1)[b.positions]
    assert torch.allclose(TargetLogits(gpt2)(b.inputs, b.positions), full, atol=1e-6)


def _reference_kl(s, t, T, col):  # the unchunked formula, differentiated by autograd
    log_ps = torch.log_softmax(s.float() / T, -1)
    if col is not None:
        log_ps = log_ps.index_select(-1, col)
    log_pt = torch.log_softmax(t.float() / T, -1)
    return (log_pt.exp() * (log_pt - log_ps)).sum(-1) * T * T


@pytest.mark.parametrize("chunk_elements", [1 << 26, 40])  # one chunk; chunks of 3 rows (13 columns)
def test_chunked_token_losses_equal_the_unchunked_ones_in_value_and_gradient(monkeypatch, chunk_elements):
    from l2kd import losses

    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", chunk_elements)
    g = torch.Generator().manual_seed(0)
    n, vs, vt = 10, 13, 11
    s = torch.randn(n, vs, generator=g, dtype=torch.float64) * 3
    t = torch.randn(n, vt, generator=g, dtype=torch.float64) * 3
    col = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 10])  # the teacher's task column -> another one
    targets = torch.randint(0, vs, (n,), generator=g)
    targets[[2, 7]] = IGNORE
    weight = torch.rand(vs, generator=g, dtype=torch.float64) + 0.5
    up = torch.randn(n, generator=g, dtype=torch.float64)  # an upstream gradient per row

    for c in (col, None):
        tt = t if c is not None else torch.randn(n, vs, generator=g, dtype=torch.float64)
        a, b = s.clone().requires_grad_(), s.clone().requires_grad_()
        got, want = losses.kl_each(a, tt, 2.0, c), _reference_kl(b, tt, 2.0, c)
        (got * up).sum().backward(), (want * up).sum().backward()
        assert torch.allclose(got.double(), want.double(), rtol=1e-6, atol=1e-6)
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-6)

    for w in (weight, None):
        a, b = s.clone().requires_grad_(), s.clone().requires_grad_()
        got, got_w = losses.weighted_nll(a, targets, w)
        want = F.cross_entropy(b, targets, weight=w, ignore_index=IGNORE, reduction="none")
        (got * up).sum().backward(), (want * up).sum().backward()
        assert torch.allclose(got.double(), want, rtol=1e-6, atol=1e-6)
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-6)
        assert got[2] == 0 and a.grad[[2, 7]].abs().max() == 0 and got_w[7] == 0


def test_chunked_losses_keep_the_logits_dtype_for_their_gradient():
    s = torch.randn(6, 9, dtype=torch.bfloat16, requires_grad=True)
    t = torch.randn(6, 9, dtype=torch.bfloat16)
    targets = torch.tensor([1, 2, IGNORE, 4, 5, 6])
    from l2kd.losses import kl_each, weighted_nll

    (kl_each(s, t, 2.0).sum() + weighted_nll(s, targets)[0].sum()).backward()
    assert s.grad.dtype == torch.bfloat16 and torch.isfinite(s.grad.float()).all()
