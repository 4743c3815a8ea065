"""L2KD teachers: single-task LAMOL models, trained once per key and reused by every trial.

The teacher of task t for a trial is a `single` (QA + LM) trial on t with the trial's model,
training, data and evaluation settings and seed. Its key is a content hash of everything that
determines it: the task, the hashes of its data files, those settings and the tokenizer. It lives in
`ROOT/{task}-{key}/`: the single-task trial's own folder (weights, results, predictions) plus a
`manifest.json` written last, so a folder without one is an unfinished teacher (it resumes). A file
lock makes concurrent requests for one key train it once. The teacher's own test scores are the
"Single" rows of the paper's tables.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from .checkpoint import PackedCheckpoint, latest_checkpoint, pack_checkpoint
from .config import TrialConfig, drop_unset_later_settings
from .trialconfig import trial_config
from .context import decode_settings, derive_seed
from .data import load_split, split_path
from .errors import ArtifactError
from .io import file_in_the_way, file_sha256, read_json, stable_hash, write_json
from .methods import make_method, method_params
from .methods.kd import distil_file, teacher_answers
from .model import TargetLogits
from .tokenizer import Tokenizer
from .trial import resolve_device, run_trial

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


def teacher_config(cfg: TrialConfig, task: str) -> TrialConfig:
    """The single-task LAMOL config of `task`'s teacher, from a student trial's config."""
    student = method_params(cfg.method).model_dump()
    d = cfg.to_dict()
    d.update(name=f"teacher-{task}", tasks=[task],
             method={"name": "single", **{k: student[k] for k in ("lm_lambda", "ans_weight") if k in student}})
    d["eval"].update(every_epoch=False, before_training=False)
    d["data"]["distil_dir"] = None
    return trial_config(d, f"teacher of {task}")


@functools.lru_cache(maxsize=16)
def _tokenizer_fingerprint(spec: str, pretrained: str | None, vocab: int) -> str:
    return Tokenizer.load(spec, pretrained, vocab).base_fingerprint()


@functools.lru_cache(maxsize=64)
def _sha(path: Path, mtime: float) -> str:
    return file_sha256(path)


def teacher_identity(tcfg: TrialConfig) -> dict[str, Any]:
    """Everything that determines a teacher's weights and scores."""
    (task,) = tcfg.tasks
    files = {split: split_path(task, split, tcfg.data) for split in ("train", "test")}
    d = tcfg.to_dict()
    for volatile in ("log_every", "threads"):
        d["training"].pop(volatile)
    drop_unset_later_settings(d)
    data = {k: v for k, v in d["data"].items() if k != "dir"}  # files are identified by content
    m = tcfg.model
    d["model"].pop("tokenizer")  # identified by its vocabulary's fingerprint, not by how its path is spelled
    out = {"task": task, "files": {s: _sha(p, p.stat().st_mtime) for s, p in files.items()},
           "data": data, "model": d["model"], "training": d["training"], "eval": d["eval"],
           "method": d["method"], "seed": tcfg.seed,
           "tokenizer": _tokenizer_fingerprint(m.tokenizer, m.pretrained, m.builtin_vocab_size)}
    base_manifest = Path(m.pretrained).expanduser() / "manifest.json" if m.pretrained else None
    if base_manifest is not None and base_manifest.is_file():
        # a base made by `cli.py pretrain`: identified by its settings too, so a base pretrained
        # again into the same folder with other settings does not reuse the old one's teachers
        out["base"] = read_json(base_manifest).get("config_hash")
    return out


def teacher_key(tcfg: TrialConfig) -> str:
    return stable_hash(teacher_identity(tcfg), 12)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclass
class TeacherStore:
    root: Path
    hits: int = 0  # requests answered from disk
    trained: int = 0  # teachers trained by this store object

    def __post_init__(self):
        self.root = Path(self.root)
        blocking = file_in_the_way(self.root)
        if blocking is not None:
            raise ArtifactError(f"{blocking}: is a file; the teacher store must be a folder")

    def folder(self, cfg: TrialConfig, task: str) -> Path:
        tcfg = teacher_config(cfg, task)
        return self.root / f"{task}-{teacher_key(tcfg)}"

    def find(self, cfg: TrialConfig, task: str) -> Path | None:
        path = self.folder(cfg, task)
        return path if (path / MANIFEST).is_file() else None

    def ensure(self, cfg: TrialConfig, task: str, on_event: Callable[..., None] | None = None,
               seq_kd_modes: tuple[str, ...] = ()) -> Path:
        """The teacher of `task` for trial config `cfg`: from disk, or trained now (once), with the
        Seq-KD data of each decoding mode in `seq_kd_modes` made beside it (once)."""
        tcfg = teacher_config(cfg, task)
        identity = teacher_identity(tcfg)
        path = self.root / f"{task}-{stable_hash(identity, 12)}"
        with _locked(path):
            if (path / MANIFEST).is_file():
                self.hits += 1
                log.info("teacher cache hit: %s", path)
            else:
                self._train(tcfg, task, identity, path, on_event)
            for mode in seq_kd_modes:
                if not distil_file(path, mode).is_file():
                    if on_event:
                        on_event("teacher_decode", task=task, mode=mode, path=path)
                    make_seq_kd_data(tcfg, task, path, mode)
        return path

    def _train(self, tcfg: TrialConfig, task: str, identity: dict, path: Path,
               on_event: Callable[..., None] | None) -> None:
        log.info("training teacher: %s", path)
        if on_event:
            on_event("teacher", task=task, path=path)
        t0 = time.perf_counter()
        result = run_trial(tcfg, path, on_event=on_event)
        write_json(path / MANIFEST, {
            "key": path.name.rsplit("-", 1)[1], "task": task, "identity": identity,
            "scores": result.metrics[-1][task], "primary": result.primary[task],
            "diagnostics": teacher_diagnostics(tcfg, task, path),
            "train_s": sum(s["timing"]["train_s"] for s in result.stage_info),
            "wall_s": time.perf_counter() - t0, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self.trained += 1

    def ensure_all(self, cfg: TrialConfig, on_event: Callable[..., None] | None = None) -> dict[str, Path]:
        """Every teacher the trial's method needs (and its Seq-KD data), keyed by task."""
        method = make_method(cfg.method)
        modes = method.seq_kd_modes(cfg)
        return {t: self.ensure(cfg, t, on_event, modes) for t in method.teachers_needed(cfg)}


DIAGNOSTIC_TEMPERATURES = (1.0, 2.0)  # T = 1: Seq-KD's view; T = 2: Word-KD's default


def teacher_diagnostics(tcfg: TrialConfig, task: str, folder: Path) -> dict[str, Any]:
    """A finished teacher's targets over a sample of its own training rows at each temperature of
    DIAGNOSTIC_TEMPERATURES, and the spread of its test predictions (see l2kd.diagnostics)."""
    from . import diagnostics as D
    from .context import TrialContext
    from .decode import amp

    device, _, amp_dtype = resolve_device(tcfg.training)
    ckpt = latest_checkpoint(folder)
    tok = ckpt.tokenizer()
    teacher = TargetLogits.frozen(ckpt.model().to(device), amp_dtype)
    ctx = TrialContext(cfg=tcfg, tokenizer=tok, device=device, amp_dtype=amp_dtype,
                       max_len=int(teacher.gpt2.config.n_positions),
                       train={task: load_split(task, "train", tcfg.data)}, test={})
    rows = ctx.train_rows(task)
    seen = D.seen_ids(rows, len(tok))
    sample = D.sample_rows(rows, D.SAMPLE_ROWS, derive_seed(tcfg.seed, "diagnostics", task))
    out: dict[str, Any] = {"by_temperature": {
        f"{T:g}": D.measure(teacher, sample, tok.ids.pad, seen, T, device=device,
                            amp_ctx=amp(device, amp_dtype)) for T in DIAGNOSTIC_TEMPERATURES}}
    out.update(D.teacher_test_spread(folder, task))
    out["flags"] = {T: D.degenerate_flags({**fig, **out}) for T, fig in out["by_temperature"].items()}
    return out


def make_seq_kd_data(tcfg: TrialConfig, task: str, folder: Path, mode: str) -> Path:
    """Decode the teacher's answers to its training set once, exactly as a student trial would."""
    device, _, amp_dtype = resolve_device(tcfg.training)
    train = load_split(task, "train", tcfg.data)
    teacher_answers(folder, train, mode, device=device, amp_dtype=amp_dtype,
                    seed=derive_seed(tcfg.seed, "seq_kd", task), settings=decode_settings(tcfg))
    return distil_file(folder, mode)


def pack_teacher(folder: Path) -> PackedCheckpoint:
    """A finished teacher's weights and tokenizer in memory (for Ray's object store)."""
    ckpt = latest_checkpoint(folder)
    if ckpt is None or not ckpt.complete or not (Path(folder) / MANIFEST).is_file():
        raise ArtifactError(f"{folder}: no finished teacher here")
    return pack_checkpoint(ckpt)


def read_manifest(folder: Path) -> dict[str, Any]:
    return read_json(Path(folder) / MANIFEST)
