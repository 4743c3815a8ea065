"""WOZ dsEM (joint goal), turn request and turn goal EM on hand-computed dialogues."""

import pytest

from l2kd.metrics import ScoreInput, score
from l2kd.metrics.dialogue import Delta, parse_delta, turn_order


def dsem(preds, golds, ids, use_gold_file=True):
    gold = [{"id": i, "answer": g} for i, g in zip(ids, golds)] if use_gold_file else None
    inp = ScoreInput(preds, [[g] for g in golds], ids, "woz.en", gold=gold)
    return score(("em", "dsem"), inp)


def test_parse_delta_as_lamol():
    assert parse_delta("food: chinese, area: north; address, phone") == Delta(
        {"food": "chinese", "area": "north"}, ["address", "phone"])
    assert parse_delta("food: chinese;") == Delta({"food": "chinese"}, [""])
    assert parse_delta("; address") == Delta({}, ["address"])
    for empty in ("None", "none", "", " ; "):
        assert parse_delta(empty) == Delta({}, None)
    assert parse_delta("food: chinese") == Delta({}, None)  # no ';': not two parts, an empty change
    assert parse_delta("time: 10:30;") == Delta({}, [""])  # two colons: the item is ignored


# Two dialogues. Hand-computed per turn: (joint goal, turn request, turn goal)
TURNS = [
    ("en_0_0", "food: chinese;", "food: chinese;", (1, 1, 1)),
    ("en_0_1", "None", "None", (1, 1, 1)),  # a turn with no change
    ("en_0_2", "; address, phone", "; address, phone", (1, 1, 1)),  # requests only
    ("en_0_3", "area: north;", "area: south;", (0, 1, 0)),  # a wrong slot value
    ("en_0_4", "None", "None", (0, 1, 1)),  # the wrong value stays in the state: joint goal fails on
    ("en_1_0", "food: thai;", "None", (0, 0, 0)),  # "None" has no request list, "x: y;" has ['']
    ("en_1_1", "price range: cheap;", "food: thai, price range: cheap;", (1, 1, 0)),  # caught up
]


def test_hand_computed_dialogues():
    ids, golds, preds, expect = zip(*[(i, g, p, e) for i, g, p, e in TURNS])
    s = dsem(list(preds), list(golds), list(ids))
    joint, request, goal = ([e[k] for e in expect] for k in range(3))
    assert s.per_example["joint_goal_em"] == joint
    assert s.per_example["turn_request_em"] == request
    assert s.per_example["turn_goal_em"] == goal
    assert s.aggregate["joint_goal_em"] == pytest.approx(400 / 7)
    assert s.aggregate["turn_request_em"] == pytest.approx(600 / 7)
    assert s.aggregate["turn_goal_em"] == pytest.approx(400 / 7)
    assert s.aggregate["avg_dialogue"] == pytest.approx(500 / 7)
    assert s.aggregate["em"] == pytest.approx(400 / 7)  # raw string match: turns 0, 1, 2, 4


def test_turn_order_comes_from_the_ids_not_the_input_order():
    order = [4, 0, 6, 2, 5, 1, 3]
    ids, golds, preds, expect = zip(*[TURNS[k] for k in order])
    s = dsem(list(preds), list(golds), list(ids))
    assert s.aggregate["joint_goal_em"] == pytest.approx(400 / 7)
    assert s.per_example["joint_goal_em"] == [e[0] for e in expect]  # at the input's positions
    # dialogue 10 sorts after dialogue 2 and turn 10 after turn 9 (numbers, not strings)
    assert turn_order(["en_10_0", "en_2_10", "en_2_9"]) == [2, 1, 0]


def test_state_resets_between_dialogues():
    # the same change in two dialogues: without the reset the second state would already hold it
    s = dsem(["food: thai;", "area: east;"], ["food: thai;", "food: thai, area: east;"],
             ["en_3_0", "en_4_0"])
    assert s.per_example["joint_goal_em"] == [1.0, 0.0]


def test_gold_file_and_references_agree():
    ids, golds, preds, _ = zip(*TURNS)
    a = dsem(list(preds), list(golds), list(ids), use_gold_file=True)
    b = dsem(list(preds), list(golds), list(ids), use_gold_file=False)
    assert a.aggregate == b.aggregate
