"""CNN/DailyMail (LFPT5's few-shot pairs, `Summarization/data/cnndm/{seed}/{train,valid}.txt`) ->
`cnn_dailymail`, in decaNLP's form: context = the article, question = "What is the summary?", answer =
the highlights (LFPT5 gives them already joined, each ending in " .").

As decaNLP, text is NFKC-normalised; whitespace runs become one space. The six files overlap (383
distinct pairs in 384 lines): pairs are kept once, by article, in file order. LFPT5's test files are
not available, so the test split is a held-out share drawn with a fixed seed (see base.py).
"""

from __future__ import annotations

from pathlib import Path

from ...tasks import TASKS
from .base import (HELD_OUT_FRACTION, HELD_OUT_SEED, Converted, ConvertReport, clean, held_out, nfkc,
                   numbered, require_input)

ROOT = "Summarization/data/cnndm"
SEEDS = ("0_42", "1_142", "2_242")
SPLITS = ("train", "valid")


def convert(task: str, sources: list[Path]) -> Converted:
    question = TASKS.get(task).question
    report = ConvertReport(task, "cnn_dailymail")
    first = require_input(sources, f"{ROOT}/{SEEDS[0]}/{SPLITS[0]}.txt", task)
    base = first.parents[1]  # the cnndm folder of the source that has the first file
    pairs: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for seed in SEEDS:
        for split in SPLITS:
            path = base / seed / f"{split}.txt"
            if not path.is_file():
                report.notes.append(f"{seed}/{split}.txt not found; converted without it")
                continue
            name = f"cnndm/{seed}/{split}.txt"
            report.inputs[name] = str(path)
            lines = [ln for ln in path.read_text(encoding="utf-8").split("\n") if ln.strip()]
            report.read[name] = len(lines)
            for line in lines:
                parts = line.split("\t")
                if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
                    report.skip("not 'article<TAB>summary'")
                    continue
                article, summary = clean(nfkc(parts[0])), clean(nfkc(parts[1]))
                if article in seen:
                    report.skip("duplicate article")
                    continue
                seen.add(article)
                pairs.append((article, question, summary))
    train, test = held_out(pairs)
    report.written = {"train": len(train), "test": len(test)}
    report.notes += [
        f"{len(pairs)} distinct pairs; test = a held-out {HELD_OUT_FRACTION:.0%} (random.Random({HELD_OUT_SEED}) "
        "shuffle), since LFPT5's test files are not available",
        f"the paper: {TASKS.get(task).paper_sizes[0]:,} train / {TASKS.get(task).paper_sizes[1]:,} test",
    ]
    return Converted(task, numbered(task, "train", train), numbered(task, "test", test), report)
