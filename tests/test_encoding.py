"""The LAMOL token layout, pinned on hand-made ids and on the real GPT-2 BPE."""

from l2kd.data.encoding import (IGNORE, SpecialIds, encode_prompt, encode_train, join_answers,
                                parse_pseudo, split_answers)

from conftest import GPT2_TOKENIZER, needs_shared

IDS = SpecialIds(eos=0, ans=90, pad=91, unk=92)
G = 93


def test_train_layout_exact():
    C, Q, A = [10, 11, 12], [20, 21], [30, 31]
    row = encode_train(C, Q, A, G, IDS, max_len=64, task="t")
    assert row.cqa == (10, 11, 12, 20, 21, 90, 30, 31)
    assert row.Y == (IGNORE,) * 5 + (30, 31, 0)
    assert row.gen_X == (93, 10, 11, 12, 20, 21, 90, 30, 31)
    assert row.gen_Y == (10, 11, 12, 20, 21, 90, 30, 31, 0)
    assert len(row.Y) == len(row.cqa) and len(row.gen_X) == len(row.gen_Y) == len(row.cqa) + 1


def test_context_cut_from_its_end_by_answer_length():
    C, Q, A = list(range(100, 110)), [20, 21], [30, 31, 32]
    row = encode_train(C, Q, A, G, IDS, max_len=12, task="t")
    # 12 - |Q| - |A| - 2 = 5 context tokens survive, from the front
    assert row.cqa == (100, 101, 102, 103, 104, 20, 21, 90, 30, 31, 32)
    assert len(row.gen_X) == 12
    # the test prompt has no answer, so it keeps more context: 12 - |Q| - 2 = 8
    assert encode_prompt(C, Q, IDS, max_len=12) == list(range(100, 108)) + [20, 21, 90]


def test_overlong_answer_is_cut_to_fit():
    row = encode_train([1, 2], [20, 21], list(range(30, 50)), G, IDS, max_len=10, task="t")
    assert len(row.gen_X) <= 10 and row.cqa[:3] == (20, 21, 90)
    assert row.Y[-1] == IDS.eos


def test_answers_joined_by_pad_and_split_back():
    joined = join_answers([[5, 6], [7]], IDS.pad)
    assert joined == [5, 6, 91, 7]
    assert split_answers(joined, IDS.pad) == [[5, 6], [7]]


def test_pseudo_parsing():
    assert parse_pseudo([20, 21, 90, 30, 0], IDS) == ([20, 21], [30])  # EOS removed
    assert parse_pseudo([20, 21, 90], IDS) == ([20, 21], [])
    assert parse_pseudo([20, 21, 30], IDS) == "no_ans"
    assert parse_pseudo([20, 90, 21, 90, 30], IDS) == "multi_ans"


@needs_shared
def test_gpt2_ids_exact():
    from l2kd.tokenizer import Tokenizer

    tok = Tokenizer.load(str(GPT2_TOKENIZER))
    assert (tok.ids.eos, tok.ids.ans, tok.ids.pad, tok.ids.unk) == (50256, 50257, 50258, 50259)
    assert tok.add_task("e2enlg") == 50260 and tok.add_task("rnnlg.rest") == 50261
    assert tok.add_task("e2enlg") == 50260  # known token: no-op
    C = tok.encode("name[Aromi], food[Chinese]")
    Q = tok.encode("what is the natural language form ?")
    A = tok.encode("Aromi serves Chinese food.")
    assert C == [3672, 58, 32, 398, 72, 4357, 2057, 58, 23604, 60]
    assert Q == [10919, 318, 262, 3288, 3303, 1296, 5633]
    assert A == [32, 398, 72, 9179, 3999, 2057, 13]
    row = encode_train(C, Q, A, 50260, tok.ids, max_len=1024, task="e2enlg")
    assert list(row.cqa) == C + Q + [50257] + A
    assert list(row.gen_X) == [50260] + C + Q + [50257] + A
    assert list(row.gen_Y) == C + Q + [50257] + A + [50256]
    assert list(row.Y) == [-1] * 17 + A + [50256]
