"""Task records: what each task's files are called, how it is scored, how long answers may be.

File names follow the reference (`{task}_to_squad-{split}-v2.0.json`, L2KD `settings.py`
TASK_DICT). The reference evaluates on the test file for every task of the paper (its "eval" split
is never used in training), so there is no dev split here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .registry import Registry

Family = Literal["decanlp", "nlg", "classification", "synthetic"]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    family: Family
    primary_metric: str  # the figure the paper's tables report for this task
    question: str  # the question string of the LAMOL files (used by converters and docs)
    # Extra scorers beyond em/nf1/nem, which every task gets.
    extra_metrics: tuple[str, ...] = ()
    # Answers may be at most as long as the longest gold answer of the test set (multiple references
    # joined by __pad__), as the reference's `max_a_len`; `answer_len_cap` bounds it further.
    answer_len_cap: int | None = None
    # LAMOL's `clean_up_tokenization` on predictions and gold; WOZ/WikiSQL gold comes raw from
    # their answers files in the reference, so they skip it.
    cleanup: bool = True
    label_words: tuple[str, ...] = ()  # classification: the answer vocabulary
    # The metric needs `{task}_answers.json` beside the test file (l2kd/data/gold.py): WOZ's turn ids
    # ('dialogue'), WikiSQL's gold SQL and table header ('sql'); as the reference's answers files.
    gold: Literal["dialogue", "sql"] | None = None
    paper_sizes: tuple[int, int] | None = None  # (train, test) of the paper's Table 1
    converter: str | None = None  # `cli.py data convert` source kind producing this task
    notes: str = ""

    def file(self, split: Literal["train", "test", "distil"]) -> str:
        return f"{self.name}_to_squad-{split}-v2.0.json"

    @property
    def metrics(self) -> tuple[str, ...]:
        return ("em", "nf1", "nem") + self.extra_metrics


TASKS: Registry[TaskSpec] = Registry("task")


def _add(spec: TaskSpec) -> None:
    TASKS.register(spec.name, spec)


NLG_QUESTION = "what is the natural language form ?"

# --- sequence generation for different tasks (decaNLP, via LAMOL) ----------------------------
_add(TaskSpec("woz.en", "decanlp", "joint_goal_em", "What is the change in state?",
              extra_metrics=("dsem",), cleanup=False, gold="dialogue", paper_sizes=(2536, 1646),
              converter="woz",
              notes="dsEM = joint goal EM over each dialogue's turns (decaNLP/LAMOL); also "
                    "turn_request_em, turn_goal_em, avg_dialogue"))
_add(TaskSpec("cnn_dailymail", "decanlp", "avg_rouge", "What is the summary?",
              extra_metrics=("rouge",), paper_sizes=(6604, 2250), converter="cnn_dailymail",
              notes="avg_rouge = mean of ROUGE-1/2/L F (decaNLP's CNN metric)"))
_add(TaskSpec("wikisql", "decanlp", "lfem_lamol", "What is the translation from English to SQL?",
              extra_metrics=("lfem",), cleanup=False, gold="sql", paper_sizes=(6525, 15878),
              converter="wikisql",
              notes="lfEM: primary lfem_lamol (LAMOL's fuzzy parse, as published); lfem = decaNLP's "
                    "exact parse"))

# --- sequence generation for different domains (L2KD's NLG files) ----------------------------
for _name, _sizes in [("e2enlg", (6000, 2000)), ("rnnlg.rest", (6228, 1039)),
                      ("rnnlg.hotel", (6446, 1075)), ("rnnlg.tv", (8442, 1407)),
                      ("rnnlg.laptop", (7944, 2649))]:
    _add(TaskSpec(_name, "nlg", "avg_rouge", NLG_QUESTION, extra_metrics=("rouge",),
                  paper_sizes=_sizes, converter="lamol",
                  notes="primary = avg_rouge (mean of ROUGE-1/2/L F, x100)"))

# --- text classification (MbPA++ subsets via LAMOL) -----------------------------------------
_add(TaskSpec("ag", "classification", "em", "Is this sentence World, Sports, Business, or Sci/Tech?",
              label_words=("World", "Sports", "Business", "Sci/Tech"),
              paper_sizes=(115000, 7600), converter="classification"))
_add(TaskSpec("dbpedia", "classification", "em",
              "Is this sentence Company, EducationalInstitution, Artist, Athlete, OfficeHolder, "
              "MeanOfTransportation, Building, NaturalPlace, Village, Animal, Plant, Album, Film, "
              "or WrittenWork?",
              label_words=("Company", "EducationalInstitution", "Artist", "Athlete", "OfficeHolder",
                           "MeanOfTransportation", "Building", "NaturalPlace", "Village", "Animal",
                           "Plant", "Album", "Film", "WrittenWork"),
              paper_sizes=(115000, 7600), converter="classification"))
_STARS = ("very negative", "negative", "neutral", "positive", "very positive")
_add(TaskSpec("yelp", "classification", "em",
              "Is this review very negative, negative, neutral, positive, or very positive?",
              label_words=_STARS, paper_sizes=(115000, 7600), converter="classification",
              notes="LAMOL's question string for yelp is not public; ours names the label words"))
_add(TaskSpec("amazon", "classification", "em",
              "Is this review very negative, negative, neutral, positive, or very positive?",
              label_words=_STARS, paper_sizes=(115000, 7600), converter="classification",
              notes="LAMOL's question string for amazon is not public; ours names the label words"))
_add(TaskSpec("yahoo", "classification", "em",
              "Is this question about Society & Culture, Science & Mathematics, Health, "
              "Education & Reference, Computers & Internet, Sports, Business & Finance, "
              "Entertainment & Music, Family & Relationships, or Politics & Government?",
              label_words=("Society & Culture", "Science & Mathematics", "Health",
                           "Education & Reference", "Computers & Internet", "Sports",
                           "Business & Finance", "Entertainment & Music",
                           "Family & Relationships", "Politics & Government"),
              paper_sizes=(115000, 7600), converter="classification",
              notes="LAMOL's question string for yahoo is not public; ours names the label words"))

# --- the built-in synthetic benchmark (generated by l2kd.data.synthetic) -------------------
_add(TaskSpec("synth.nlg", "synthetic", "avg_rouge", NLG_QUESTION, extra_metrics=("rouge",),
              notes="template restaurant descriptions from slot-value meaning representations"))
_add(TaskSpec("synth.sentiment", "synthetic", "em", "Is this review positive or negative?",
              label_words=("positive", "negative"),
              notes="two-class reviews built from polar phrases"))
_add(TaskSpec("synth.state", "synthetic", "em", "What is the change in state?",
              notes="slot-value extraction from a user request (a toy dialogue-state task)"))

SYNTHETIC_TASKS = tuple(n for n in TASKS if n.startswith("synth."))


# Short names make readable, stable order ids ("woz-cnn-sql") for grid cells and report columns.
_SHORT = {"woz.en": "woz", "cnn_dailymail": "cnn", "wikisql": "sql", "e2enlg": "e2e",
          "synth.sentiment": "sent"}


def short_name(task: str) -> str:
    """'rnnlg.hotel' -> 'hotel', 'woz.en' -> 'woz', 'ag' -> 'ag'."""
    return _SHORT.get(task) or task.rsplit(".", 1)[-1]
