"""The built-in synthetic benchmark: three small generated tasks in the LAMOL format.

It is the embedded default for the demo and for tests on machines without the real data. The tasks
differ in kind, so a lifelong model visibly forgets when it only fine-tunes:

- synth.nlg       slot-value meaning representation -> a templated sentence (ROUGE; like E2E).
                  Test items carry two references, like RNNLG.
- synth.sentiment a short review -> positive / negative (exact match; like the classification tasks).
- synth.state     a user request -> "slot: value, ..." (exact match; like WOZ's state changes).

Everything is drawn from one `random.Random(seed)` per task and split, so the files are identical
on every machine. Files are generated on first use into a cache folder and reused.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from ..io import file_sha256, write_json
from ..tasks import NLG_QUESTION, TASKS
from .lamol_json import Example, to_lamol

VERSION = 1  # bump when the generators change, so cached files are rebuilt
SIZES = {"train": 1000, "test": 200}

NAMES = ["Blue Spice", "The Punter", "Aromi", "The Eagle", "Cotto", "Zizzi", "The Mill", "Loch Fyne",
         "Fitzbillies", "The Phoenix", "Bibimbap House", "The Golden Palace", "Wildwood", "Alimentum"]
FOODS = ["Chinese", "Italian", "French", "Indian", "Japanese", "English", "Fast food", "Thai"]
AREAS = ["city centre", "riverside", "north", "south"]
PRICES = ["cheap", "moderate", "expensive"]
RATINGS = ["low", "average", "high"]

NLG_TEMPLATES = [
    "{name} serves {food} food in the {area} area .",
    "{name} is a {food} restaurant in the {area} .",
    "in the {area} there is a {food} place called {name} .",
]
NLG_EXTRAS = {
    "price": ["prices are {price} .", "it is {price} ."],
    "rating": ["it has a {rating} customer rating .", "customers rate it {rating} ."],
}

POSITIVE = ["the food was great", "the staff were friendly", "i loved the desserts",
            "a lovely evening", "the service was quick", "excellent value for money",
            "the pasta was delicious", "we will come back"]
NEGATIVE = ["the food was cold", "the staff were rude", "i hated the desserts",
            "a terrible evening", "the service was slow", "far too expensive",
            "the pasta was bland", "we will never come back"]
NEUTRAL = ["we went on a tuesday", "the place was busy", "we ordered two starters",
           "it is near the station", "we sat by the window"]


def _nlg_example(rng: random.Random, i: int, split: str) -> Example:
    slots = {"name": rng.choice(NAMES), "food": rng.choice(FOODS), "area": rng.choice(AREAS)}
    extras = [k for k in NLG_EXTRAS if rng.random() < 0.5]
    if "price" in extras:
        slots["price"] = rng.choice(PRICES)
    if "rating" in extras:
        slots["rating"] = rng.choice(RATINGS)
    mr = ", ".join(f"{k}[{v}]" for k, v in slots.items())

    def sentence(template: str) -> str:
        parts = [template.format(**slots)]
        parts += [rng.choice(NLG_EXTRAS[k]).format(**slots) for k in extras]
        return " ".join(parts)

    n_refs = 2 if split == "test" else 1
    templates = rng.sample(NLG_TEMPLATES, n_refs)
    return Example(f"nlg-{split}-{i}", mr, NLG_QUESTION, tuple(sentence(t) for t in templates), i)


def _sentiment_example(rng: random.Random, i: int, split: str) -> Example:
    label = rng.choice(["positive", "negative"])
    polar = POSITIVE if label == "positive" else NEGATIVE
    phrases = rng.sample(polar, 2) + rng.sample(NEUTRAL, rng.randint(0, 2))
    rng.shuffle(phrases)
    spec = TASKS.get("synth.sentiment")
    return Example(f"sent-{split}-{i}", " , ".join(phrases) + " .", spec.question, (label,), i)


def _state_example(rng: random.Random, i: int, split: str) -> Example:
    food, area, price = rng.choice(FOODS).lower(), rng.choice(AREAS), rng.choice(PRICES)
    wanted = [k for k in ("food", "area", "price") if rng.random() < 0.7] or ["food"]
    values = {"food": food, "area": area, "price": price}
    bits = {"food": f"serving {food} food", "area": f"in the {area}", "price": f"that is {price}"}
    opener = rng.choice(["i am looking for a restaurant", "find me a place", "i want somewhere to eat"])
    order = list(wanted)
    rng.shuffle(order)
    context = " ".join([opener] + [bits[k] for k in order])
    answer = ", ".join(f"{k}: {values[k]}" for k in wanted)  # canonical slot order
    spec = TASKS.get("synth.state")
    return Example(f"state-{split}-{i}", context, spec.question, (answer,), i)


GENERATORS = {"synth.nlg": _nlg_example, "synth.sentiment": _sentiment_example,
              "synth.state": _state_example}


def generate(task: str, split: str, seed: int = 0) -> list[Example]:
    """The examples of one synthetic task split; test and train never share a random stream."""
    rng = random.Random(f"{task}/{split}/{seed}/{VERSION}")
    return [GENERATORS[task](rng, i, split) for i in range(SIZES[split])]


def default_cache_dir() -> Path:
    root = os.environ.get("L2KD_CACHE") or Path.home() / ".cache" / "l2kd"
    return Path(root) / f"builtin-v{VERSION}"


def ensure_builtin_files(folder: Path | None = None) -> Path:
    """Write every synthetic task's train/test files into `folder` (default: the cache) once."""
    folder = Path(folder) if folder else default_cache_dir()
    for task in GENERATORS:
        for split in SIZES:
            path = folder / TASKS.get(task).file(split)
            if not path.exists():
                write_json(path, to_lamol(generate(task, split)))
    return folder


def builtin_corpus() -> list[str]:
    """Every text of the benchmark's training splits: the corpus of the builtin tokenizer."""
    texts: list[str] = []
    for task in GENERATORS:
        for ex in generate(task, "train"):
            texts += [ex.context, ex.question, *ex.answers]
    return texts


def fingerprint(folder: Path) -> str:
    return file_sha256(folder / TASKS.get("synth.nlg").file("train"))[:12]
