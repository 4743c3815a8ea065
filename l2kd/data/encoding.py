"""Token layout exactly as LAMOL (`utils.py` concat_example / parse_example of the reference).

With C, Q, A the separately encoded context, question and answer, ANS/EOS the special ids and G
the task's generation token (`max_len` = the model's positions):

    cq    = C[:max_len-|Q|-2]     + Q + [ANS]          test-time prompt
    cqa   = C[:max_len-|Q|-|A|-2] + Q + [ANS] + A      QA input
    Y     = [-1]*(|C'|+|Q|)       + A + [EOS]          QA target, aligned with cqa
    gen_X = [G] + C' + Q + [ANS] + A                   LM input
    gen_Y =       C' + Q + [ANS] + A + [EOS]           LM target, aligned with gen_X

There is no separator between context and question; the context is cut from its end, by an amount
that depends on |A|. Several answers are joined into one target with __pad__ between them and split
back for scoring.
"""

from __future__ import annotations

from dataclasses import dataclass

IGNORE = -1  # the reference's FILL_VAL: target positions that carry no loss


@dataclass(frozen=True)
class SpecialIds:
    eos: int
    ans: int
    pad: int
    unk: int


@dataclass(frozen=True)
class TrainRow:
    """One encoded training example (real or pseudo)."""

    cqa: tuple[int, ...]
    Y: tuple[int, ...]
    gen_X: tuple[int, ...]
    gen_Y: tuple[int, ...]
    task: str
    is_pseudo: bool = False
    index: int = -1  # position in the task's training file (-1 for pseudo samples)

    def __len__(self) -> int:  # the padded length that matters for batching
        return len(self.gen_X)


def join_answers(answers: list[list[int]], pad: int) -> list[int]:
    """a1 __pad__ a2 __pad__ ... (as LAMOL)."""
    out: list[int] = []
    for i, a in enumerate(answers):
        if i:
            out.append(pad)
        out.extend(a)
    return out


def split_answers(ids: list[int], pad: int) -> list[list[int]]:
    parts: list[list[int]] = [[]]
    for t in ids:
        if t == pad:
            parts.append([])
        else:
            parts[-1].append(t)
    return parts


def fit_answer(Q: list[int], A: list[int], max_len: int) -> list[int]:
    """Shorten an answer that cannot fit beside its question.

    Deviation: L2KD cuts a further 128 tokens (`len(A) - overflow - 128`), which would erase whole
    answers on models with few positions; we cut only the overflow. LAMOL crashed here instead.
    """
    overflow = len(Q) + len(A) + 2 - max_len
    return A[: max(0, len(A) - overflow)] if overflow > 0 else A


def encode_train(C: list[int], Q: list[int], A: list[int], G: int, ids: SpecialIds, max_len: int,
                 task: str, *, is_pseudo: bool = False, index: int = -1) -> TrainRow:
    A = fit_answer(Q, A, max_len)
    if len(Q) + 2 > max_len:
        Q = Q[: max_len - 2 - len(A)]
    keep = max(0, max_len - len(Q) - len(A) - 2)
    Cp = C[:keep]
    cqa = Cp + Q + [ids.ans] + A
    Y = [IGNORE] * (len(Cp) + len(Q)) + A + [ids.eos]
    gen_X = [G] + cqa
    gen_Y = cqa + [ids.eos]
    return TrainRow(tuple(cqa), tuple(Y), tuple(gen_X), tuple(gen_Y), task, is_pseudo, index)


def encode_prompt(C: list[int], Q: list[int], ids: SpecialIds, max_len: int) -> list[int]:
    """cq: the test-time prompt. It keeps more context than training's cqa (A is empty here)."""
    if len(Q) + 2 > max_len:
        Q = Q[: max_len - 2]
    return C[: max(0, max_len - len(Q) - 2)] + Q + [ids.ans]


def parse_pseudo(sample: list[int], ids: SpecialIds) -> tuple[list[int], list[int]] | str:
    """Split a generated sample (without its leading task token) at its one __ans__.

    Returns (question_ids, answer_ids), or the reason it is malformed: 'no_ans' or 'multi_ans'.
    As LAMOL: context is empty and everything before __ans__ is the question, since there was
    never a separator; EOS ids are removed from the answer.
    """
    n_ans = sample.count(ids.ans)
    if n_ans == 0:
        return "no_ans"
    if n_ans > 1:
        return "multi_ans"
    cut = sample.index(ids.ans)
    answer = [t for t in sample[cut + 1:] if t != ids.eos]
    return sample[:cut], answer
