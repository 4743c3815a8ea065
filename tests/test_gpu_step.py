"""On a GPU only (skipped elsewhere): the one-pass Word-KD losses, the cached teacher and the
one-kernel GELU keep the formulas' values in bf16, and none of them makes the host wait."""

import numpy as np
import pytest
import torch
from transformers.activations import ACT2FN

from l2kd import losses
from l2kd.bench.run import fast_path
from l2kd.bench.setup import BenchOptions, BenchSetup
from l2kd.data.encoding import IGNORE
from l2kd.methods.teacher_cache import TeacherCache
from l2kd.model import TargetLogits
from l2kd.trialconfig import trial_config

from conftest import tiny_trial

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")


def test_one_kernel_gelu_keeps_gelu_news_values_under_bf16_autocast():
    x = torch.randn(4096, 3072, device=CUDA, dtype=torch.bfloat16)
    with torch.autocast("cuda", torch.bfloat16):
        fast, chain = ACT2FN["gelu_pytorch_tanh"](x), ACT2FN["gelu_new"](x)
    torch.testing.assert_close(fast.float(), chain.float(), rtol=1.6e-2, atol=1e-2)  # bf16's resolution


def test_one_pass_word_kd_losses_keep_the_formulas_values_in_bf16():
    g = torch.Generator().manual_seed(0)
    n, v = 512, 50264
    s = (torch.randn(n, v, generator=g) * 2).to(CUDA, torch.bfloat16)
    t = (torch.randn(n, v, generator=g) * 2).to(CUDA, torch.bfloat16)
    targets = torch.randint(0, v, (n,), generator=g).to(CUDA)
    targets[:3] = IGNORE
    kd = np.arange(0, n, 3)
    a, b = s.clone().requires_grad_(), s.clone().requires_grad_()
    got, _ = losses.kd_and_nll_each(a, targets, None, t[kd], 2.0, None, torch.from_numpy(kd).to(CUDA), kd)
    is_kd = torch.zeros(n, dtype=torch.bool, device=CUDA)
    is_kd[kd] = True
    want = torch.where(is_kd, losses.kl_each(b, t, 2.0), losses.weighted_nll(b, targets)[0])
    up = torch.rand(n, device=CUDA)
    (got * up).sum().backward()
    (want * up).sum().backward()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # both in fp32 from the same bf16 logits
    torch.testing.assert_close(a.grad.float(), b.grad.float(), rtol=1.6e-2, atol=1e-6)  # stored in bf16


def _setup(**over):
    return BenchSetup(trial_config(tiny_trial(**{"training.device": "cuda", "training.batch_policy": "tokens",
                                             "training.tokens_per_batch": 512, **over})))


def test_a_cached_teacher_gives_the_teachers_logits_and_its_step_never_waits():
    s = _setup()
    teacher = TargetLogits.frozen(s.fresh_model(), s.amp)
    ids = torch.arange(len(s.tok), device=CUDA)
    cache = TeacherCache(teacher, ids, s.rows, pad=s.tok.ids.pad, with_lm=s.with_lm, device=CUDA,
                         amp_dtype=s.amp, tokens_per_batch=256)
    from l2kd.data.batching import collate
    from l2kd.decode import amp

    for idx in s.plan("tokens", 3):
        batch = collate([s.rows[i] for i in idx], s.tok.ids.pad, with_lm=s.with_lm).to(CUDA)
        with torch.no_grad(), amp(CUDA, s.amp):
            want = teacher(batch.inputs, batch.positions)
        torch.testing.assert_close(cache.logits(batch).float(), want.float(), rtol=1.6e-2, atol=2e-2)
    figures, _ = fast_path(s, s.plan("tokens", 4), s.precision, BenchOptions(steps=2, warmup=2), teacher=cache)
    assert figures.syncs_per_step == 0, figures.sync_sites
    assert figures.peak_mib is not None and figures.peak_mib > 0
