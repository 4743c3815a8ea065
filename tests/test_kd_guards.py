"""Guards on Word-KD's plumbing at a stage where the student's and the teacher's task-token ids
differ (the student has an earlier task's token, the teacher only its own), with the builtin BPE and
with the real GPT-2 BPE: the input and column maps, teacher logits through the map, targets,
positions; and a tiny case where a T = 1 student learns a fixed teacher's top-1."""

from types import SimpleNamespace

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from l2kd import diagnostics as D
from l2kd.config import MethodSpec
from l2kd.data.batching import IGNORE, collate
from l2kd.data.encoding import encode_train
from l2kd.losses import kl_each
from l2kd.methods import make_method
from l2kd.methods.kd import vocabulary_maps
from l2kd.model import TargetLogits
from l2kd.tokenizer import Tokenizer

from conftest import GPT2_TOKENIZER, needs_shared

SPECS = ["builtin", pytest.param(str(GPT2_TOKENIZER), marks=[needs_shared, pytest.mark.realdata],
                                 id="gpt2-bpe")]
OLD, NEW = "e2enlg", "rnnlg.rest"  # the student trains NEW after OLD; the teacher knows only NEW
TEXT = [("name[The Eagle], food[French]", "what is the natural language form ?", "The Eagle serves French food."),
        ("inform(name='red door cafe';area='soma')", "what is the natural language form ?", "red door cafe is in soma.")]


def setup(spec: str):
    s_tok, t_tok = Tokenizer.load(spec), Tokenizer.load(spec)
    s_tok.add_task(OLD)
    s_tok.add_task(NEW)
    t_tok.add_task(NEW)
    torch.manual_seed(0)
    teacher = GPT2LMHeadModel(GPT2Config(vocab_size=len(t_tok), n_layer=1, n_embd=16, n_head=2, n_positions=128))
    return s_tok, t_tok, TargetLogits.frozen(teacher)


def rows_for(tok: Tokenizer, task: str, pseudo_task: str | None = None):
    enc = lambda s: tok.encode(s)  # noqa: E731
    rows = [encode_train(enc(c), enc(q), enc(a), tok.task_id(task), tok.ids, 128, task) for c, q, a in TEXT]
    if pseudo_task:
        rows.append(encode_train([], enc("a pseudo question"), enc("an answer"), tok.task_id(pseudo_task),
                                 tok.ids, 128, pseudo_task, is_pseudo=True))
    return rows


@pytest.mark.parametrize("spec", SPECS)
def test_maps_are_exactly_as_documented(spec):
    s_tok, t_tok, _ = setup(spec)
    s_new, s_old, t_new = s_tok.task_id(NEW), s_tok.task_id(OLD), t_tok.task_id(NEW)
    assert s_new != t_new and s_new == t_new + 1  # the stage where the ids differ
    in_map, col_map = vocabulary_maps(s_tok, t_tok, NEW, "teacher")
    shared = s_tok.ids.unk + 1
    assert len(in_map) == len(s_tok) and len(col_map) == len(t_tok)
    assert torch.equal(in_map[:shared], torch.arange(shared))  # base vocabulary + __ans__ __pad__ __unk__
    assert in_map[s_new] == t_new and in_map[s_old] == t_tok.ids.unk
    assert torch.equal(col_map[:shared], torch.arange(shared)) and col_map[t_new] == s_new
    assert len(set(col_map.tolist())) == len(col_map) and s_old not in col_map.tolist()


@pytest.mark.parametrize("spec", SPECS)
def test_teacher_logits_through_the_map_equal_the_teacher_on_its_own_encoding(spec):
    s_tok, t_tok, teacher = setup(spec)
    in_map, col_map = vocabulary_maps(s_tok, t_tok, NEW, "teacher")
    s_batch = collate(rows_for(s_tok, NEW, pseudo_task=OLD), s_tok.ids.pad, with_lm=True)
    t_batch = collate(rows_for(t_tok, NEW), t_tok.ids.pad, with_lm=True)
    current = ~s_batch.pseudo_positions
    # the same flat positions and targets for the current rows (the pseudo row only adds its own)
    B, W = len(TEXT), s_batch.inputs.shape[1]
    assert t_batch.inputs.shape[1] == W
    s_rows = torch.cat([s_batch.inputs[:B], s_batch.inputs[B + 1: 2 * B + 1]])
    assert torch.equal(in_map[s_rows], t_batch.inputs)  # the mapped input is the teacher's own encoding
    mapped = teacher(in_map[s_batch.inputs], s_batch.positions)[current]
    own = teacher(t_batch.inputs, t_batch.positions)
    torch.testing.assert_close(mapped, own, rtol=0, atol=0)
    torch.testing.assert_close(s_batch.targets[current], t_batch.targets.where(
        t_batch.targets != t_tok.task_id(NEW), torch.tensor(s_tok.task_id(NEW))), rtol=0, atol=0)

    # targets: on the student's columns, sum to 1, 0 on the other task's column; the KD loss uses them
    q = D.teacher_targets(mapped, 2.0, col_map, len(s_tok))
    torch.testing.assert_close(q.sum(-1), torch.ones(len(q)))
    assert q[:, s_tok.task_id(OLD)].abs().max().item() == 0.0
    s_logits = torch.randn(len(q), len(s_tok), generator=torch.Generator().manual_seed(1))
    log_ps = torch.log_softmax(s_logits / 2.0, -1)
    by_hand = 4.0 * (q * (q.clamp_min(1e-30).log() - log_ps)).where(q > 0, torch.zeros(())).sum(-1)
    torch.testing.assert_close(kl_each(s_logits, mapped, 2.0, col_map), by_hand, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("spec", SPECS)
def test_positions_and_targets_line_up(spec):
    s_tok, _, _ = setup(spec)
    rows = rows_for(s_tok, NEW)
    batch = collate(rows, s_tok.ids.pad, with_lm=True)
    flat = batch.inputs.flatten()
    ids = s_tok.ids
    for b, (c, q, a) in enumerate(TEXT):
        A = s_tok.encode(a)
        cq = s_tok.encode(c) + s_tok.encode(q)
        at_qa = (batch.row == b) & batch.qa_positions
        # QA: the inputs __ans__ a_1 .. a_n predict a_1 .. a_n EOS
        assert flat[batch.positions[at_qa]].tolist() == [ids.ans] + A
        assert batch.targets[at_qa].tolist() == A + [ids.eos]
        # LM: the inputs G c q __ans__ a predict c q __ans__ a EOS, every position
        at_lm = (batch.row == b) & ~batch.qa_positions
        assert flat[batch.positions[at_lm]].tolist() == [s_tok.task_id(NEW)] + cq + [ids.ans] + A
        assert batch.targets[at_lm].tolist() == cq + [ids.ans] + A + [ids.eos]
    assert (batch.targets != IGNORE).all()


def test_a_t1_student_reaches_90_percent_top1_agreement_with_a_fixed_teacher():
    torch.manual_seed(0)
    V, pad = 48, 47
    shape = dict(vocab_size=V, n_layer=1, n_embd=32, n_head=2, n_positions=32)
    teacher_gpt2 = GPT2LMHeadModel(GPT2Config(**shape))
    # an untied random head, scaled: peaky targets whose top-1 is not the input token (which a
    # fresh tied GPT-2 tends to repeat, so an untrained student would already agree)
    teacher_gpt2.lm_head.weight = torch.nn.Parameter(torch.randn(V, 32) * 3)
    teacher = TargetLogits.frozen(teacher_gpt2)
    torch.manual_seed(1)
    student = TargetLogits(GPT2LMHeadModel(GPT2Config(**shape)))
    ids = SimpleNamespace(eos=0, ans=45, pad=pad, unk=46)
    g = torch.Generator().manual_seed(2)
    rand = lambda n: torch.randint(1, 44, (n,), generator=g).tolist()  # noqa: E731
    rows = [encode_train(rand(6), rand(3), rand(4), 44, ids, 32, "t") for _ in range(12)]
    batch = collate(rows, pad, with_lm=True)

    method = make_method(MethodSpec(name="word_kd", params={"temperature": 1.0}))
    method.teacher, method.input_map, method.col_map = teacher, torch.arange(V), torch.arange(V)
    ctx = SimpleNamespace(device=torch.device("cpu"), amp_dtype=None, tokenizer=SimpleNamespace(ids=ids))
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    before = D.measure(teacher, rows, pad, D.seen_ids(rows, V), 1.0, device=torch.device("cpu"),
                       student=student)["agreement"]
    for _ in range(150):
        terms = method.loss_terms(ctx, batch, student(batch.inputs, batch.positions))
        opt.zero_grad()
        sum(terms.values()).backward()
        opt.step()
    student.eval()
    assert before < 0.3, before
    seen = D.seen_ids(rows, V)
    out = D.measure(teacher, rows, pad, seen, 1.0, device=torch.device("cpu"), student=student)
    assert out["agreement"] >= 0.9, out
