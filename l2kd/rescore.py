"""Metrics again, without training: every stored prediction scored with today's scorers.

A trial writes each evaluation's answers and references to `predictions/stage-NN/{task}.jsonl`
(NN counts from 0: the folder of stage 1 is `stage-00`) and, since rescoring exists, the untrained
model's to `predictions/initial/`. `rescore_run(RUN_DIR)` scores them with the metric lists and
primary metrics the tasks name now (a new or fixed metric included) and writes
`results.rescored.json` beside each `results.json`, which it leaves as it is. Gold records (WOZ,
WikiSQL) are read from the trial's data folder, aligned by example index. What has no stored
predictions (per-epoch curves; the untrained model of older runs) keeps its original figures, and
the rescored file says so.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from .config import DataConfig
from .data import load_split
from .errors import ArtifactError, UserError
from .io import write_json
from .metrics import ScoreInput, score
from .results import RESULTS_FILE, TrialResult, find_result_files
from .tasks import TASKS

log = logging.getLogger(__name__)
RESCORED_FILE = "results.rescored.json"
PREDICTIONS = "predictions"
INITIAL = "initial"  # the folder of the untrained model's predictions


def predictions_dir(workdir: Path, stage: int | None) -> Path:
    """Where the predictions of stage index `stage` (0 = stage 1), or of the untrained model, live."""
    return Path(workdir) / PREDICTIONS / (INITIAL if stage is None else f"stage-{stage:02d}")


@dataclass
class Rescored:
    folder: Path
    scored: int = 0  # (stage, task) evaluations scored again
    kept: list[str] = field(default_factory=list)  # what kept its original figures, and why


def _read_records(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path}: unreadable predictions ({type(e).__name__}: {e})"[:300]) from None


def _gold(task: str, data: DataConfig, records: list[dict], cache: dict) -> list[dict] | None:
    if not TASKS.get(task).gold:
        return None
    if task not in cache:
        cache[task] = {ex.index: ex.gold for ex in load_split(task, "test", data)}
    by_index = cache[task]
    try:
        return [by_index[r["index"]] for r in records]
    except KeyError as e:
        raise ArtifactError(f"{task}: prediction of example {e} has no gold record in the data folder") from None


def _score_file(path: Path, task: str, data: DataConfig, cache: dict) -> dict[str, float]:
    records = _read_records(path)
    inp = ScoreInput([r["prediction"] for r in records], [list(r["references"]) for r in records],
                     [r["id"] for r in records], task, _gold(task, data, records, cache))
    return score(TASKS.get(task).metrics, inp).aggregate


def rescore_trial(folder: Path) -> Rescored:
    """Score a trial's stored predictions again; writes RESCORED_FILE beside its results.json."""
    folder = Path(folder)
    result = TrialResult.load(folder)
    data = DataConfig(**result.config.get("data", {}))
    out = Rescored(folder)
    cache: dict = {}
    result.primary = {t: TASKS.get(t).primary_metric for t in result.tasks}
    for s in range(result.stages_done):
        for task in result.tasks:
            path = predictions_dir(folder, s) / f"{task}.jsonl"
            if path.is_file():
                result.metrics[s][task] = _score_file(path, task, data, cache)
                out.scored += 1
            else:
                out.kept.append(f"stage {s + 1} {task}: no stored predictions")
        result.R[s] = [result.metrics[s][t].get(result.primary[t], result.R[s][j])
                       for j, t in enumerate(result.tasks)]
    if result.baseline:
        for task in result.tasks:
            path = predictions_dir(folder, None) / f"{task}.jsonl"
            if path.is_file():
                result.baseline[task] = _score_file(path, task, data, cache)
                out.scored += 1
            else:
                out.kept.append(f"untrained model {task}: no stored predictions")
    if result.curves:
        out.kept.append("per-epoch curves: their predictions are not stored")
    d = result.to_dict()
    d["rescored"] = {"kept_original": out.kept}
    write_json(folder / RESCORED_FILE, d)
    return out


def rescore_run(run_dir: str | Path, skip: tuple[Path, ...] = ()) -> list[Rescored]:
    """Rescore every trial under `run_dir` (not below hidden folders or `skip`)."""
    run_dir = Path(run_dir)
    files = find_result_files(run_dir, skip)
    if not files:
        raise ArtifactError(f"{run_dir}: no {RESULTS_FILE} under this folder (is it a run folder?)")
    done = []
    for f in files:
        try:
            done.append(rescore_trial(f.parent))
        except UserError as e:
            raise type(e)(f"rescoring {f.parent}: {e}") from None
    return done
