"""WOZ 2.0 (neural-belief-tracker's `woz_{train,test}_en.json`) -> `woz.en`, as decaNLP's WOZ class
made it for LAMOL: one example per user turn.

- context: the turn's system acts joined by ", " (an [slot, value] act as "slot: value"), then " -- "
  when there are any, then the user's transcript; runs of whitespace collapsed;
- question: "What is the change in state?";
- answer: the change of belief state against the previous turn: the inform pairs that were not in the
  previous turn's state, "slot: value" joined by ", ", then ";", then the turn's requested slots joined
  by ", " after a space; an empty change is "None";
- id: `en_{dialogue}_{turn}`, both counted in file order (decaNLP enumerates; `dialogue_idx` differs
  from the position in the validate/test files). The gold file holds `[id, answer]` per test turn.

woz_validate_en.json (830 turns) is not converted: the reference never trains or tests on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import DataError
from ...tasks import TASKS
from ..lamol_json import Example
from .base import Converted, ConvertReport, clean, require_input

FILES = {"train": "woz_train_en.json", "test": "woz_test_en.json"}


def turn_context(turn: dict[str, Any]) -> str:
    acts = ", ".join(": ".join(a) if isinstance(a, list) else a for a in turn["system_acts"])
    return clean((acts + " -- " if acts else "") + turn["transcript"])


def turn_change(turn: dict[str, Any], previous: list[list[str]]) -> tuple[str, list[list[str]]]:
    """(the answer string, this turn's inform pairs, which the next turn compares against)."""
    informs: list[list[str]] = []
    new: list[list[str]] = []
    requests: list[str] = []
    for item in turn["belief_state"]:
        for slot in item.get("slots", []):
            if item["act"] == "inform":
                informs.append(slot)
                if slot not in previous:  # a new slot, or a slot with a new value
                    new.append(slot)
            else:  # as decaNLP: any other act is a request, named by its value
                requests.append(slot[1])
    answer = ", ".join(f"{s}: {v}" for s, v in new) + ";"
    if requests:
        answer += " " + ", ".join(requests)
    return (answer if answer != ";" else "None"), informs


def _check(dialogues: Any, path: Path) -> None:
    """Enough structure for the conversion; anything else is a DataError naming the item."""
    if not isinstance(dialogues, list):
        raise DataError(f"{path}: top level: expected a list of dialogues")
    for d, dialogue in enumerate(dialogues):
        turns = dialogue.get("dialogue") if isinstance(dialogue, dict) else None
        if not isinstance(turns, list):
            raise DataError(f"{path}: [{d}]: expected an object with a 'dialogue' list")
        for t, turn in enumerate(turns):
            where = f"[{d}].dialogue[{t}]"
            ok = (isinstance(turn, dict) and isinstance(turn.get("transcript"), str)
                  and isinstance(turn.get("system_acts"), list) and isinstance(turn.get("belief_state"), list)
                  and all(isinstance(b, dict) and "act" in b and all(isinstance(s, list) and len(s) == 2
                                                                    for s in b.get("slots", []))
                          for b in turn["belief_state"]))
            if not ok:
                raise DataError(f"{path}: {where}: expected 'transcript', 'system_acts' and 'belief_state' "
                                "(items {act, slots: [[slot, value]]})")


def convert(task: str, sources: list[Path]) -> Converted:
    question = TASKS.get(task).question
    report = ConvertReport(task, "woz")
    splits: dict[str, list[Example]] = {}
    gold: list[list[str]] = []
    for split, name in FILES.items():
        path = require_input(sources, name, task)
        report.inputs[name] = str(path)
        try:
            dialogues = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON (line {e.lineno}): {e.msg}") from None
        _check(dialogues, path)
        examples = []
        for di, dialogue in enumerate(dialogues):
            previous: list[list[str]] = []
            for ti, turn in enumerate(dialogue["dialogue"]):
                answer, previous = turn_change(turn, previous)
                turn_id = f"en_{di}_{ti}"
                examples.append(Example(turn_id, turn_context(turn), question, (answer,), len(examples)))
                if split == "test":
                    gold.append([turn_id, answer])
        report.read[name] = len(examples)
        report.notes.append(f"{name}: {len(dialogues)} dialogues, {len(examples)} turns")
        report.written[split] = len(examples)
        splits[split] = examples
    report.notes.append("one example per user turn, ids en_{dialogue}_{turn} in file order; "
                        "woz_validate_en.json is not used (the reference never trains or tests on it)")
    return Converted(task, splits["train"], splits["test"], report, gold=gold)
