"""Scorers on hand-computed cases."""

import pytest

from l2kd.metrics import ScoreInput, f1_score, normalize_text, rouge_tokens, score
from l2kd.tokenizer import clean_up_tokenization


def run(metrics, preds, refs):
    return score(metrics, ScoreInput(preds, refs, [str(i) for i in range(len(preds))], "t")).aggregate


def test_em_is_raw_and_best_over_references():
    s = run(("em", "nem", "nf1"), ["Sports", "sports", "World"], [["Sports"], ["Sports"], ["Business", "World"]])
    assert s["em"] == pytest.approx(200 / 3)  # "sports" is not a raw match
    assert s["nem"] == pytest.approx(100.0)


def test_normalised_f1_by_hand():
    assert normalize_text("The  Cat, sat!") == "cat sat"
    # "cat sat" vs "cat sat down": P = 1, R = 2/3, F1 = 0.8
    assert f1_score("the cat sat", "a cat sat down") == pytest.approx(0.8)
    s = run(("nf1",), ["the cat sat"], [["zzz", "a cat sat down"]])
    assert s["nf1"] == pytest.approx(80.0)


def test_rouge_single_reference_by_hand():
    s = run(("rouge",), ["the cat sat"], [["the cat sat down"]])
    assert s["rouge1"] == pytest.approx(100 * 2 * 0.75 / 1.75)  # P 3/3, R 3/4
    assert s["rouge2"] == pytest.approx(100 * 0.8)  # P 2/2, R 2/3
    assert s["rougeL"] == pytest.approx(s["rouge1"])  # LCS = 3
    assert s["avg_rouge"] == pytest.approx((s["rouge1"] + s["rouge2"] + s["rougeL"]) / 3)


def test_rouge_pools_two_references_instead_of_taking_the_best():
    # ROUGE-1.5.5 averaging: hits 2 + 0 over 2 + 2 reference words, 2 x 2 hypothesis words -> F = 0.5
    s = run(("rouge",), ["alpha beta"], [["alpha beta", "gamma delta"]])
    assert s["rouge1"] == pytest.approx(50.0)


def test_rouge_stems_and_splits_sentences_at_periods():
    assert rouge_tokens("Running dogs. The cats!") == [["run", "dog"], ["the", "cat"]]
    # summary-level ROUGE-L: each reference sentence matched against every hypothesis sentence
    s = run(("rouge",), ["alpha beta. gamma delta"], [["gamma delta. alpha beta"]])
    assert s["rougeL"] == pytest.approx(100.0)
    assert s["rouge1"] == pytest.approx(100.0)


def test_empty_prediction_scores_zero():
    s = run(("rouge", "em"), [""], [["a full sentence"]])
    assert s["avg_rouge"] == 0.0 and s["em"] == 0.0


def test_lamol_cleanup():
    assert clean_up_tokenization("it is cheap . i do not know , is n't it ?") == "it is cheap. i don't know, isn't it?"
