"""A trial's result file (`results.json`): the accuracy matrix with all metrics, and provenance.

R[i][j] is the primary score of task j after training stage i (a lifelong stage trains one task;
a multitask run has one stage over all tasks). `metrics[i][task]` holds every figure of that
evaluation, `baseline[task]` the scores of the model before any training (b_j, for FWT), and
`curves` the per-epoch evaluations when `eval.every_epoch` is on. The file is rewritten atomically
after every stage, so it always describes the finished stages; `complete` says whether all ran.
"""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .errors import ArtifactError
from .io import read_json, write_json

FORMAT = "l2kd.trial/1"
RESULTS_FILE = "results.json"


@dataclass
class TrialResult:
    name: str
    tasks: list[str]  # the order
    method: str
    method_params: dict[str, Any]
    seed: int
    stages: list[list[str]]  # tasks trained in each stage
    primary: dict[str, str]  # task -> primary metric name
    config: dict[str, Any]
    config_hash: str
    R: list[list[float]] = field(default_factory=list)
    metrics: list[dict[str, dict[str, float]]] = field(default_factory=list)
    baseline: dict[str, dict[str, float]] | None = None
    curves: list[dict[str, Any]] = field(default_factory=list)
    stage_info: list[dict[str, Any]] = field(default_factory=list)  # pseudo counts, timings, steps
    versions: dict[str, str] = field(default_factory=dict)
    # trained/generated tokens, device-seconds per phase, peak memory (l2kd.compute); empty in
    # results written before it was recorded
    compute: dict[str, Any] = field(default_factory=dict)
    complete: bool = False
    format: str = FORMAT

    def add_stage(self, scores: dict[str, dict[str, float]], info: dict[str, Any]) -> None:
        self.metrics.append(scores)
        self.R.append([scores[t][self.primary[t]] for t in self.tasks])
        self.stage_info.append(info)

    @property
    def stages_done(self) -> int:
        return len(self.R)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, folder: Path) -> Path:
        return write_json(Path(folder) / RESULTS_FILE, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<results>") -> "TrialResult":
        """The result `d` holds, its shape checked (a report reads files it did not write)."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ArtifactError(f"{source}: not an l2kd trial result (format {found!r})")
        known = cls.__dataclass_fields__
        required = [k for k, f in known.items()
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise ArtifactError(f"{source}: a trial result without {', '.join(missing)}")
        _check_shape(d, source)
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def load(cls, folder_or_file: str | Path) -> "TrialResult":
        p = Path(folder_or_file)
        p = p / RESULTS_FILE if p.is_dir() else p
        if not p.is_file():
            raise ArtifactError(f"{p}: no such result file")
        return cls.from_dict(read_json(p), str(p))


def _check_shape(d: dict[str, Any], source: str) -> None:
    """The fields the tables compute with: tasks and stages as lists of names, and R one row of
    numbers per finished stage, each with one score per task."""
    tasks, stages, R = d["tasks"], d["stages"], d.get("R", [])
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise ArtifactError(f"{source}: tasks: expected a list of task names, got {tasks!r}"[:300])
    if not isinstance(stages, list) or not all(isinstance(s, list) for s in stages):
        raise ArtifactError(f"{source}: stages: expected a list of task lists"[:300])
    if not isinstance(R, list) or len(R) > len(stages) or not all(
            isinstance(row, list) and len(row) == len(tasks)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in row) for row in R):
        raise ArtifactError(f"{source}: R: expected at most {len(stages)} rows of {len(tasks)} scores "
                            f"(one per task), got {str(R)[:120]}")
    if not isinstance(d.get("primary"), dict) or not isinstance(d.get("config"), dict):
        raise ArtifactError(f"{source}: primary and config must be JSON objects")


def find_result_files(run_dir: Path, skip=(), name: str = RESULTS_FILE) -> list[Path]:
    """Every result file called `name` under `run_dir`, except in hidden folders and below the
    folders `skip`."""
    run_dir = Path(run_dir)
    files = sorted(p for p in run_dir.glob(f"**/{name}")
                   if not any(part.startswith(".") for part in p.relative_to(run_dir).parts))
    skipped = {Path(s).resolve() for s in skip}
    return [p for p in files if not skipped & set(p.resolve().parents)]


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("l2kd", "torch", "transformers", "deepspeed", "tokenizers", "rouge-metric", "ray"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out
