"""Word-KD's losses from one pass over the logits (kd_and_nll_each) and the grouped means: equal in
value and gradient to the separate KL and cross-entropy and to masked_mean, in fp32 to 1e-5
relative, in one chunk and in several; the current-task part of a mixed batch is placed right."""

import numpy as np
import pytest
import torch

from l2kd import losses
from l2kd.data.batching import collate
from l2kd.data.encoding import IGNORE, SpecialIds, encode_train

RTOL = 1e-5


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=RTOL, atol=1e-6)


def _case(seed=0, n=12, vs=13, vt=11, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, vs, generator=g, dtype=dtype) * 3
    targets = torch.randint(0, vs, (n,), generator=g)
    targets[[2, 9]] = IGNORE
    weight = torch.rand(vs, generator=g, dtype=dtype) + 0.5
    return g, s, targets, weight


@pytest.mark.parametrize("chunk_elements", [1 << 26, 40])  # one chunk; chunks of 3 rows
@pytest.mark.parametrize("kd_rows", ["all", "mixed", "none_in_a_chunk"])
@pytest.mark.parametrize("mapped", [True, False])
def test_one_pass_equals_kl_and_cross_entropy_in_value_and_gradient(monkeypatch, chunk_elements, kd_rows, mapped):
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", chunk_elements)
    g, s, targets, weight = _case()
    n, vs = s.shape
    col = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 10]) if mapped else None
    kd = {"all": np.arange(n), "mixed": np.array([0, 1, 4, 5, 6, 10]), "none_in_a_chunk": np.array([6, 7, 8, 11])}[kd_rows]
    t = torch.randn(len(kd), len(col) if mapped else vs, generator=g) * 3
    up = torch.randn(n, generator=g)  # an upstream gradient per position
    T = 2.0

    a = s.clone().requires_grad_()
    index = None if kd_rows == "all" else torch.from_numpy(kd)
    got, got_w = losses.kd_and_nll_each(a, targets, weight, t, T, col, index, None if index is None else kd)
    (got * up).sum().backward()

    b = s.clone().requires_grad_()
    is_kd = torch.zeros(n, dtype=torch.bool)
    is_kd[torch.from_numpy(kd)] = True
    t_full = torch.zeros(n, t.shape[1])
    t_full[torch.from_numpy(kd)] = t
    kl = losses.kl_each(b, t_full, T, col)
    if kd_rows == "all":
        want, want_w = kl, torch.ones(n)
    else:
        nll, w = losses.weighted_nll(b, targets, weight)
        want, want_w = torch.where(is_kd, kl, nll), torch.where(is_kd, torch.ones(n), w)
    (want * up).sum().backward()
    _close(got, want)
    _close(got_w, want_w)
    _close(a.grad, b.grad)


def test_one_pass_keeps_the_logits_dtype_for_its_gradient():
    s = torch.randn(6, 9, dtype=torch.bfloat16, requires_grad=True)
    t = torch.randn(3, 9, dtype=torch.bfloat16)
    kd = np.array([0, 2, 3])
    v, _ = losses.kd_and_nll_each(s, torch.tensor([1, 2, IGNORE, 4, 5, 6]), None, t, 2.0, None,
                                  torch.from_numpy(kd), kd)
    v.sum().backward()
    assert v.dtype == torch.float32 and s.grad.dtype == torch.bfloat16 and torch.isfinite(s.grad.float()).all()


def test_grouped_means_equal_masked_means_and_their_gradient():
    g = torch.Generator().manual_seed(1)
    values = torch.randn(20, generator=g, dtype=torch.float64).requires_grad_()
    weights = torch.rand(20, generator=g, dtype=torch.float64)
    groups = torch.randint(0, 3, (20,), generator=g)  # group 3 is empty
    got = losses.grouped_means(values, weights, groups, 4)
    want = torch.stack([losses.masked_mean(values, weights, groups == k) for k in range(4)])
    up = torch.randn(4, generator=g, dtype=torch.float64)
    ga, = torch.autograd.grad((got * up).sum(), values)
    gb, = torch.autograd.grad((want * up).sum(), values)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(ga, gb)
    assert got[3] == 0


def _rows(tok_ids, n_current, n_pseudo):
    rows = [encode_train(list(range(10, 14 + k)), [20, 21], list(range(30, 33 + k % 3)), 5, tok_ids, 64, "a")
            for k in range(n_current)]
    rows += [encode_train([], [40, 41 + k], [50, 51], 6, tok_ids, 64, "b", is_pseudo=True) for k in range(n_pseudo)]
    order = np.random.default_rng(0).permutation(len(rows))
    return [rows[i] for i in order]


@pytest.mark.parametrize("with_lm", [True, False])
def test_a_mixed_batch_places_its_current_task_part(with_lm):
    ids = SpecialIds(eos=0, ans=1, pad=2, unk=3)
    batch = collate(_rows(ids, 3, 2), ids.pad, with_lm=with_lm)
    current = ~batch.pseudo_positions
    assert torch.equal(batch.kd_index, torch.nonzero(current).squeeze(1))
    assert np.array_equal(batch.kd_index_host, batch.kd_index.numpy())
    # the current rows' sub-batch, read at kd_flat, holds the tokens the full batch holds there
    sub = batch.inputs.index_select(0, batch.kd_rows).flatten()
    assert torch.equal(sub[batch.kd_flat], batch.inputs.flatten()[batch.positions[batch.kd_index]])
    assert len(batch.kd_rows) == 3 * (2 if with_lm else 1)
    for only in (_rows(ids, 3, 0), _rows(ids, 0, 2)):
        assert collate(only, ids.pad, with_lm=with_lm).kd_index is None
