"""What each method is, for those who ask without building one: the part its trials play (a lifelong
method, or a single-task / multitask reference), the paper's name for it, whether it learns from
L2KD teachers, and what the L2KD paper reports for it.

The one home of these facts. It imports nothing heavy, so `report/` (pandas only) and the grid
spec read it; the registered class exposes the same facts as properties (`Method.kind`,
`.display_name`, `.needs_teachers`, ...), and registering a method without an entry here fails.
Nothing outside `l2kd/methods/` spells a method's name: it asks these facts, or names the methods a
claim of the paper is about through the constants at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

# The part a trial plays in a report (and how a grid treats its method).
LIFELONG = "lifelong"  # tasks one after another: the methods the paper compares
SINGLE = "single"  # one task alone: a reference, and what an L2KD teacher is
MULTITASK = "multitask"  # every task at once: the upper bound (a reference)

PaperAvg = tuple[float | None, float | None, float | None]  # Table 3 Avg, Table 4 L->R Avg, R->L Avg


@dataclass(frozen=True)
class MethodFacts:
    display_name: str  # the paper's name (or ours, for methods the paper has not)
    kind: str = LIFELONG
    teachers: bool = False  # learns each task from its L2KD teacher (the KD methods)
    paper_rank: int | None = None  # row order in the paper's tables (others follow alphabetically)
    reference_row: str | None = None  # a reference's row in the paper's tables ("Single (QA+LM)")
    # What the paper reports: Table 3 (WOZ/CNN/WikiSQL, mean over six orders) and Table 4 (the NLG
    # tasks, left-to-right / right-to-left averages; Table 4 has no Finetune and no STD rows).
    paper_avg: PaperAvg | None = None
    paper_std: float | None = None  # Table 3, STD Avg
    # its step can be one CUDA graph (training.step_graph): static-shape tensor ops only, no hook
    # between backward and the optimiser (GEM projects there), no sampler reading the model between steps
    graph_step: bool = False


FACTS: dict[str, MethodFacts] = {
    "finetune": MethodFacts("Finetune", paper_rank=0, graph_step=True, paper_avg=(23.4, None, None)),
    "ewc": MethodFacts("EWC", paper_rank=1, graph_step=True),
    "mas": MethodFacts("MAS", paper_rank=2, graph_step=True),
    "gem": MethodFacts("GEM", paper_rank=3),
    "lamol": MethodFacts("LAMOL", paper_rank=4, graph_step=True, paper_avg=(54.9, 63.2, 66.7), paper_std=3.3),
    "word_kd": MethodFacts("Word-KD", teachers=True, paper_rank=5, graph_step=True, paper_avg=(57.0, 63.5, 68.0),
                           paper_std=2.1),
    "seq_kd_soft": MethodFacts("Seq-KDsoft", teachers=True, paper_rank=6, graph_step=True, paper_avg=(57.1, 63.7, 67.6),
                               paper_std=1.9),
    "seq_kd": MethodFacts("Seq-KD", teachers=True, paper_rank=7, graph_step=True, paper_avg=(56.5, 65.5, 67.7),
                          paper_std=2.5),
    "o_lora": MethodFacts("O-LoRA"),
    "o_lora_lamol": MethodFacts("O-LoRA+LAMOL"),
    "single": MethodFacts("Single", kind=SINGLE, reference_row="Single", graph_step=True),
    "multitask": MethodFacts("Multi", kind=MULTITASK, reference_row="Multi", paper_avg=(57.8, 65.9, 65.9),
                             graph_step=True),  # its uncertainty sampler is refused there (multitask.py)
    # a stronger, task-aware bound the paper has not: its rows keep the grid's label
    "multitask_ca": MethodFacts("Multi-CA", kind=MULTITASK),
}


def facts(name: str) -> MethodFacts | None:
    """The facts of method `name`; None for a name no method has (a result from elsewhere)."""
    return FACTS.get(name)


def kind_of(name: str) -> str:
    """The part a trial of method `name` plays; a name no method has counts as lifelong."""
    f = FACTS.get(name)
    return f.kind if f else LIFELONG


def paper_order() -> list[str]:
    """The methods of the paper's tables, in its row order."""
    return sorted((n for n, f in FACTS.items() if f.paper_rank is not None), key=lambda n: FACTS[n].paper_rank)


def kd_methods() -> tuple[str, ...]:
    """The methods that learn from L2KD teachers, in the paper's row order."""
    return tuple(n for n in paper_order() if FACTS[n].teachers)


def display_name(name: str) -> str:
    f = FACTS.get(name)
    return f.display_name if f else name


# The methods the paper's claims name (report/claims.py): sequential fine-tuning, the lower bound;
# LAMOL, the lifelong baseline that L2KD improves on; Seq-KDsoft, the variant the paper says narrows
# the gap to the multitask bound; and the method an L2KD teacher is (single-task QA+LM LAMOL).
LOWER_BOUND = "finetune"
BASELINE = "lamol"
GAP_CLOSER = "seq_kd_soft"
TEACHER = "single"
