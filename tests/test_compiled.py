"""`training.compile`: GPT-2's blocks through torch.compile give GPT-2's values, train, and are
compiled once for every block and model (CPU inductor here; the GPU is where it pays)."""

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from l2kd.config import TrainingConfig, TrialConfig
from l2kd.engine import Engine
from l2kd.losses import token_ce
from l2kd.model import TargetLogits, compiled_block, hidden_states
from l2kd.identity import config_hash

CPU = torch.device("cpu")


def gpt2(vocab=50, seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=vocab,
                     bos_token_id=0, eos_token_id=0)
    cfg._attn_implementation = "sdpa"
    return GPT2LMHeadModel(cfg)


def graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def test_compiled_blocks_give_gpt2s_values_and_gradients():
    eager, compiled = gpt2().eval(), gpt2().eval()  # eval: no dropout, the same function
    x = torch.randint(1, 50, (3, 11), generator=torch.Generator().manual_seed(1))
    positions = torch.tensor([0, 4, 12, 20, 32])
    a = TargetLogits(eager)(x, positions)
    b = TargetLogits(compiled, compile_blocks=True)(x, positions)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    a.pow(2).sum().backward()
    b.pow(2).sum().backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        scale = p.grad.abs().max().clamp(min=1e-6)
        assert ((q.grad - p.grad).abs().max() / scale) < 1e-4, name
    before = graphs()
    # another model, another vocabulary, another batch shape: the same compiled graph
    other = gpt2(vocab=53, seed=3).eval()
    y = torch.randint(1, 53, (5, 17))
    torch.testing.assert_close(hidden_states(other, y, compile_blocks=True),
                               hidden_states(other, y), rtol=1e-5, atol=1e-5)
    assert graphs() == before


def test_engine_trains_with_compiled_blocks():
    engine = Engine(gpt2(), TrainingConfig(lr=1e-2, compile=True), "fp32", CPU)
    x = torch.randint(1, 50, (4, 12), generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(6):
        loss = token_ce(engine.logits(x[:, :-1], torch.arange(4 * 11)), x[:, 1:].flatten())
        engine.backward(loss)
        engine.step(1e-2)
        losses.append(loss.item())
    assert losses[-1] < losses[0] and compiled_block() is compiled_block()
    engine.close()


def test_compile_joins_a_trials_identity_only_when_on():
    base = {"tasks": ["e2enlg"], "method": {"name": "finetune"}}
    off = TrialConfig.model_validate(base)
    on = TrialConfig.model_validate({**base, "training": {"compile": True}})
    d = off.to_dict()
    d["training"].pop("compile")  # a config written before the setting existed
    assert config_hash(off) == config_hash(TrialConfig.model_validate(d)) != config_hash(on)


def test_padded_head_gives_the_heads_values_and_gradients():
    """On a GPU the head's product runs over a vocabulary padded to a multiple of 64 (fast GEMM
    kernels); the logits and every gradient are the unpadded head's."""
    from l2kd.model import head_logits

    a, b = gpt2(vocab=53).eval(), gpt2(vocab=53).eval()
    hidden = torch.randn(7, 32, requires_grad=True)
    hidden2 = hidden.detach().clone().requires_grad_(True)
    plain, padded = a.lm_head(hidden), head_logits(b, hidden2, align=64)
    assert padded.shape == plain.shape == (7, 53)
    torch.testing.assert_close(padded, plain)
    weights = torch.randn(7, 53)
    (plain * weights).sum().backward()
    (padded * weights).sum().backward()
    torch.testing.assert_close(hidden2.grad, hidden.grad)
    torch.testing.assert_close(b.lm_head.weight.grad, a.lm_head.weight.grad)
    assert head_logits(b, hidden2).is_contiguous()  # on a CPU: no padding unless asked


def weight_casts(fn) -> list[tuple]:
    """The input shapes of every dtype conversion `fn` runs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fn()
    return [tuple(e.input_shapes[0]) for e in prof.events() if e.name == "aten::_to_copy"]


def test_a_frozen_model_gives_autocasts_values_without_casting_its_weights_each_call():
    """A Word-KD teacher runs forward only, under autocast, in every step. Autocast keeps the casts
    of parameters that require grad only, so a frozen fp32 teacher was cast whole at every call;
    `TargetLogits.frozen` keeps its products' weights cast, with the very same logits."""
    x = torch.randint(1, 53, (3, 11), generator=torch.Generator().manual_seed(1))
    positions = torch.tensor([0, 4, 12, 20, 32])
    plain = TargetLogits(gpt2(vocab=53).eval().requires_grad_(False))
    frozen = TargetLogits.frozen(gpt2(vocab=53), torch.bfloat16)
    assert not any(p.requires_grad for p in frozen.parameters()) and not frozen.gpt2.training
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        expected = plain(x, positions)
        assert torch.equal(frozen(x, positions), expected)
        weight_shapes = {tuple(p.shape) for p in plain.parameters() if p.dim() == 2}
        assert weight_shapes & set(weight_casts(lambda: plain(x, positions)))  # the check can fail
        assert not weight_shapes & set(weight_casts(lambda: frozen(x, positions)))
    # without autocast nothing is cast, and the values are the plain model's
    fp32 = TargetLogits.frozen(gpt2(vocab=53), None)
    with torch.no_grad():
        assert torch.equal(fp32(x, positions), TargetLogits(gpt2(vocab=53).eval())(x, positions))
