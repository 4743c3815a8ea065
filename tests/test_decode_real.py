"""The static-cache GPT-2 decoder on real prompts (GPT-2 BPE, E2E and RNNLG test sets): the same greedy
answers as the Hugging Face forward with its dynamic cache (the path evaluation and Seq-KD answers
took before) and as the reference's one-sequence decoder; the same top-k samples for the same keys."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from l2kd.config import DataConfig
from l2kd.data import load_split
from l2kd.data.encoding import encode_prompt
from l2kd.decode import DecodeSettings, DecodeStats, decode, decode_reference, row_keys
from l2kd.model import TargetLogits
from l2kd.tokenizer import Tokenizer

from conftest import GPT2_TOKENIZER, NLG_DIR, needs_shared

pytestmark = [needs_shared, pytest.mark.realdata]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def setting():
    tok = Tokenizer.load(str(GPT2_TOKENIZER), None, 0)
    ids = tok.ids
    data = DataConfig(dir=str(NLG_DIR), max_test_examples=150)
    prompts = []
    for task in ("e2enlg", "rnnlg.rest"):
        for ex in load_split(task, "test", data):
            prompts.append(encode_prompt(tok.encode(ex.context), tok.encode(ex.question), ids, 128))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=160,
                                       vocab_size=len(tok), bos_token_id=ids.eos, eos_token_id=ids.eos))
    model.config._attn_implementation = "sdpa"
    with torch.no_grad():  # EOS wins at varied steps, so rows finish at many lengths
        model.transformer.wte.weight[ids.eos] *= 4.0
    return tok, model.eval(), prompts


def test_real_prompts_of_mixed_lengths_give_the_same_greedy_answers(setting):
    tok, model, prompts = setting
    ids = tok.ids
    assert len(prompts) == 300 and len({len(p) for p in prompts}) > 20
    s = DecodeSettings("greedy", tokens_per_batch=6000, check_every=2)  # several batches
    stats = DecodeStats()
    fast = decode(model, prompts, 30, eos=ids.eos, pad=ids.pad, max_total=160, settings=s, device=CPU,
                  stats=stats)
    generic = decode(model, prompts, 30, eos=ids.eos, pad=ids.pad, max_total=160, settings=s, device=CPU,
                     generic=True)
    assert fast == generic
    assert len({len(a) for a in fast}) > 5 and stats.batches > 1
    alone = [decode_reference(model, p, 30, eos=ids.eos, max_total=160, settings=s, device=CPU)
             for p in prompts[::15]]
    assert fast[::15] == alone


def test_a_frozen_teacher_decodes_as_it_did(setting):
    """Seq-KD answers come from a frozen teacher (TargetLogits.frozen): the same greedy answers."""
    tok, model, prompts = setting
    ids = tok.ids
    import copy

    teacher = TargetLogits.frozen(copy.deepcopy(model)).gpt2
    s = DecodeSettings("greedy")
    got = decode(teacher, prompts[:120], 30, eos=ids.eos, pad=ids.pad, max_total=160, settings=s, device=CPU)
    was = decode(model, prompts[:120], 30, eos=ids.eos, pad=ids.pad, max_total=160, settings=s, device=CPU,
                 generic=True)
    assert got == was


def test_top_k_samples_agree_across_paths_for_the_same_keys(setting):
    tok, model, prompts = setting
    ids = tok.ids
    s = DecodeSettings("top_k", top_k=20)
    keys = row_keys(5, 100, CPU)
    fast = decode(model, prompts[:100], 25, eos=ids.eos, pad=ids.pad, max_total=160, settings=s,
                  device=CPU, keys=keys)
    generic = decode(model, prompts[:100], 25, eos=ids.eos, pad=ids.pad, max_total=160, settings=s,
                     device=CPU, keys=keys, generic=True)
    assert fast == generic
