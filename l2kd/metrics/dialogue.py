"""WOZ dialogue-state metrics (`dsem`): joint goal EM (the paper's dsEM), turn request EM, turn goal EM.

As decaNLP/LAMOL `computeDialogue`: every answer is a state change "slot: value, slot: value; request,
request" (or "None"). Walking the turns of a dialogue in order, the predicted and the gold inform slots
are each accumulated into a state (a later value of a slot replaces the earlier one), and the state
starts empty when the dialogue part of the `en_{dialogue}_{turn}` id changes. Per turn:

- joint goal: the accumulated predicted state equals the accumulated gold state;
- turn request: the turn's request lists are equal, order included;
- turn goal: the turn's inform changes are equal as dicts.

`avg_dialogue` = (joint goal + turn request) / 2, as decaNLP. Turn order: we walk the turns sorted by
(dialogue, turn) read as numbers. That is the order LAMOL's test file had after sorting by qa id and
decaNLP's (it sorted the id strings, which is the same order while turns stay below 10; WOZ has at most
9). Predictions keep their own positions in the per-example figures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .core import SCORERS, ScoreInput, Scored, mean100, produces

_TURN_ID = re.compile(r"^(.+)_(\d+)_(\d+)$")


@dataclass(frozen=True)
class Delta:
    inform: dict[str, str]
    # A list for a parsed answer. The empty answer ("None", "", ";") gives None: as LAMOL's
    # `to_delta_state`, whose empty default is a dict, so "None" and "food: thai;" (request [''])
    # disagree on the request even though neither asks for anything.
    request: list[str] | None


def parse_delta(line: str) -> Delta:
    """A state-change string as LAMOL's `to_delta_state` reads it (its quirks included)."""
    if line.lower() == "none" or line.strip() in ("", ";"):
        return Delta({}, None)
    parts = line.split(";")
    if len(parts) != 2:  # the reference unpacks exactly two parts; anything else is an empty change
        return Delta({}, None)
    inform_part, request_part = ([y.strip() for y in x.strip().split(",")] for x in parts)
    inform: dict[str, str] = {}
    for item in inform_part:
        kv = item.split(":")
        if len(kv) == 2:  # "slot: value"; an item with no colon or several is ignored, as the reference
            inform[kv[0].strip()] = kv[1].strip()
    return Delta(inform, request_part)


def _dialogue_and_turn(turn_id: str) -> tuple[str, int, int] | None:
    m = _TURN_ID.match(turn_id)
    return (m.group(1), int(m.group(2)), int(m.group(3))) if m else None


def turn_order(ids: list[str]) -> list[int]:
    """Positions in dialogue/turn order; the given order when an id is not `{lang}_{d}_{t}`."""
    keys = [_dialogue_and_turn(i) for i in ids]
    if any(k is None for k in keys):
        return list(range(len(ids)))
    return sorted(range(len(ids)), key=lambda i: keys[i])


def dialogue_flags(predictions: list[str], golds: list[str], ids: list[str]) -> dict[str, list[float]]:
    """Per-turn 1/0 for joint goal, turn request and turn goal, at the predictions' own positions."""
    n = len(predictions)
    flags = {"joint_goal_em": [0.0] * n, "turn_request_em": [0.0] * n, "turn_goal_em": [0.0] * n}
    dialogue = None
    state: dict[str, str] = {}
    gold_state: dict[str, str] = {}
    for i in turn_order(ids):
        key = ids[i].rsplit("_", 1)[0]  # the dialogue part of the id
        if key != dialogue:
            dialogue, state, gold_state = key, {}, {}
        pred, gold = parse_delta(predictions[i]), parse_delta(golds[i])
        state.update(pred.inform)
        gold_state.update(gold.inform)
        flags["joint_goal_em"][i] = float(state == gold_state)
        flags["turn_request_em"][i] = float(pred.request == gold.request)
        flags["turn_goal_em"][i] = float(pred.inform == gold.inform)
    return flags


produces("dsem", "joint_goal_em", "turn_request_em", "turn_goal_em", "avg_dialogue")


@SCORERS.register("dsem")
def score_dialogue(inp: ScoreInput) -> Scored:
    """Gold answers and turn ids from the answers file when given, else the references and ids."""
    if inp.gold is not None:
        golds = [g["answer"] for g in inp.gold]
        ids = [g["id"] for g in inp.gold]
    else:
        golds = [refs[0] if refs else "" for refs in inp.references]
        ids = list(inp.ids)
    flags = dialogue_flags(inp.predictions, golds, ids)
    agg = {k: mean100(v) for k, v in flags.items()}
    agg["avg_dialogue"] = (agg["joint_goal_em"] + agg["turn_request_em"]) / 2
    return Scored(agg, flags)
