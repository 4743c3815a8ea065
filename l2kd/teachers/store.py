"""The teacher store: single-task LAMOL models, trained once per key and reused by every trial.

The teacher of task t for a trial is a `single` (QA + LM) trial on t with the trial's model,
training, data and evaluation settings and seed. Its key is a content hash of everything that
determines it (l2kd.identity): the task, the hashes of its data files, those settings and the
tokenizer. It lives in
`ROOT/{task}-{key}/`: the single-task trial's own folder (weights, results, predictions) plus a
`manifest.json` written last, so a folder without one is an unfinished teacher (it resumes). A file
lock makes concurrent requests for one key train it once. The teacher's own test scores are the
"Single" rows of the paper's tables.

The manifest records a content hash (sha256) of every file a student reads: the weights' checkpoint,
the results, and each Seq-KD data file once it is made. A teacher on shared storage may be damaged or
half-copied; one whose files no longer match is never used: it is refused with one line naming the
file, or trained again (`on_damaged="retrain"`), as the user chooses. Manifests written before the
hashes were recorded (no `files`) are accepted as they are.

`ready(path, modes)` is the one answer to "is this teacher ready": finished, whole, and with the
Seq-KD data of the decoding modes asked for.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..checkpoint import PackedCheckpoint, latest_checkpoint, pack_checkpoint
from ..config import TrialConfig
from ..trialconfig import trial_config
from ..context import decode_settings, derive_seed
from ..data import load_split
from ..errors import ArtifactError
from ..identity import content_hash, teacher_folder_name, teacher_identity
from ..io import file_in_the_way, read_json, write_json
from ..methods import TEACHER, make_method, method_params
from ..backbone import n_positions
from ..model import TargetLogits
from ..trial import resolve_device, run_trial
from .seqkd import SEQ_KD_SEED, distil_file, teacher_answers

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
ON_DAMAGED = ("refuse", "retrain")  # what a damaged teacher gets: an error naming the file, or retraining


def teacher_config(cfg: TrialConfig, task: str) -> TrialConfig:
    """The single-task LAMOL config of `task`'s teacher, from a student trial's config."""
    student = method_params(cfg.method).model_dump()
    d = cfg.to_dict()
    d.update(name=f"teacher-{task}", tasks=[task],
             method={"name": TEACHER, **{k: student[k] for k in ("lm_lambda", "ans_weight") if k in student}})
    d["eval"].update(every_epoch=False, before_training=False)
    d["data"]["distil_dir"] = None
    return trial_config(d, f"teacher of {task}")


def teacher_files(folder: Path) -> list[Path]:
    """The files of a finished teacher a student reads: its last checkpoint and its results."""
    ckpt = latest_checkpoint(folder)
    files = sorted(p for p in ckpt.path.iterdir() if p.is_file()) if ckpt else []
    return files + [Path(folder) / "results.json"]


def teacher_damage(folder: Path) -> str | None:
    """None when the teacher in `folder` is whole; else one line naming its first damaged file
    (missing, truncated or altered since its manifest recorded it, or an unreadable manifest)."""
    folder = Path(folder)
    try:
        manifest = read_json(folder / MANIFEST)
        files = manifest.get("files", {})
        if not isinstance(files, dict):
            raise ValueError("files is not a mapping")
    except (OSError, ValueError, AttributeError) as e:
        return f"{folder / MANIFEST}: unreadable teacher manifest ({type(e).__name__})"
    for rel, digest in sorted(files.items()):
        f = folder / rel
        if not f.is_file():
            return f"{f}: missing (the teacher manifest lists it)"
        if content_hash(f) != digest:
            return f"{f}: damaged (its content differs from the hash in {MANIFEST}: truncated or altered)"
    return None


def ready(path: Path, modes: tuple[str, ...] | set[str] = ()) -> bool:
    """The one readiness check: the teacher in `path` is finished (its manifest is written last),
    whole (no file fails its recorded hash) and has the Seq-KD data of each decoding mode in `modes`.
    A teacher not ready is trained, or only decoded, by TeacherStore.ensure."""
    path = Path(path)
    return ((path / MANIFEST).is_file() and teacher_damage(path) is None
            and all(distil_file(path, m).is_file() for m in modes))


def _record_hashes(folder: Path, files: list[Path]) -> None:
    """Add the content hashes of `files` to the teacher's manifest (rewritten atomically)."""
    manifest = read_json(folder / MANIFEST)
    recorded = manifest.setdefault("files", {})
    for f in files:
        recorded[os.path.relpath(f, folder)] = content_hash(f)
    write_json(folder / MANIFEST, manifest)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def damaged_error(why: str) -> ArtifactError:
    return ArtifactError(f"{why}; this teacher is not used: --damaged-teachers retrain trains it again")


@dataclass
class TeacherStore:
    root: Path
    hits: int = 0  # requests answered from disk
    trained: int = 0  # teachers trained by this store object
    on_damaged: str = "refuse"  # a teacher whose files fail their hashes: refused, or trained again

    def __post_init__(self):
        self.root = Path(self.root)
        blocking = file_in_the_way(self.root)
        if blocking is not None:
            raise ArtifactError(f"{blocking}: is a file; the teacher store must be a folder")
        if self.on_damaged not in ON_DAMAGED:
            raise ValueError(f"on_damaged: expected one of {ON_DAMAGED}, got {self.on_damaged!r}")

    def folder(self, cfg: TrialConfig, task: str) -> Path:
        return self.root / teacher_folder_name(teacher_config(cfg, task))

    def find(self, cfg: TrialConfig, task: str, modes: tuple[str, ...] = ()) -> Path | None:
        """The teacher's folder where it is ready (see `ready`) with the Seq-KD data of `modes`, or
        None (to train or to decode). A damaged one is refused (ArtifactError naming the file) or,
        with on_damaged="retrain", reported as to train."""
        path = self.folder(cfg, task)
        if ready(path, modes):
            return path
        why = teacher_damage(path) if (path / MANIFEST).is_file() else None
        if why is not None and self.on_damaged == "refuse":
            raise damaged_error(why)
        return None

    def _discard_damaged(self, path: Path) -> bool:
        """Under the lock: a damaged teacher is refused, or removed to be trained again (True)."""
        why = teacher_damage(path)
        if why is None:
            return False
        if self.on_damaged == "refuse":
            raise damaged_error(why)
        log.warning("%s; training the teacher again", why)
        (path / MANIFEST).unlink()  # first: a kill during the removal leaves an unfinished teacher
        shutil.rmtree(path)
        return True

    def ensure(self, cfg: TrialConfig, task: str, on_event: Callable[..., None] | None = None,
               seq_kd_modes: tuple[str, ...] = ()) -> Path:
        """The teacher of `task` for trial config `cfg`: from disk, or trained now (once), with the
        Seq-KD data of each decoding mode in `seq_kd_modes` made beside it (once)."""
        tcfg = teacher_config(cfg, task)
        identity = teacher_identity(tcfg)
        path = self.root / teacher_folder_name(tcfg, identity)
        with _locked(path):
            if (path / MANIFEST).is_file() and not self._discard_damaged(path):
                self.hits += 1
                log.info("teacher cache hit: %s", path)
            else:
                self._train(tcfg, task, identity, path, on_event)
            for mode in seq_kd_modes:
                target = distil_file(path, mode)
                if not target.is_file() or target.name not in read_manifest(path).get("files", {}):
                    # made now, or made before its hash was recorded (killed in between, or an old
                    # manifest): the hash is recorded of what a student will read
                    if not target.is_file():
                        if on_event:
                            on_event("teacher_decode", task=task, mode=mode, path=path)
                        make_seq_kd_data(tcfg, task, path, mode)
                    _record_hashes(path, [target])
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
            "wall_s": time.perf_counter() - t0, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "files": {os.path.relpath(f, path): content_hash(f) for f in teacher_files(path)}})
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
    from .. import diagnostics as D
    from ..context import TrialContext
    from ..decode import amp

    device, _, amp_dtype = resolve_device(tcfg.training)
    ckpt = latest_checkpoint(folder)
    tok = ckpt.tokenizer()
    teacher = TargetLogits.frozen(ckpt.model().to(device), amp_dtype)
    ctx = TrialContext(cfg=tcfg, tokenizer=tok, device=device, amp_dtype=amp_dtype,
                       max_len=n_positions(teacher.gpt2),
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
                    seed=derive_seed(tcfg.seed, SEQ_KD_SEED, task), settings=decode_settings(tcfg))
    return distil_file(folder, mode)


def pack_teacher(folder: Path) -> PackedCheckpoint:
    """A finished, undamaged teacher's weights and tokenizer in memory (for Ray's object store)."""
    if not (Path(folder) / MANIFEST).is_file():
        raise ArtifactError(f"{folder}: no finished teacher here")
    why = teacher_damage(folder)
    if why is not None:
        raise damaged_error(why)
    ckpt = latest_checkpoint(folder)
    if ckpt is None or not ckpt.complete:
        raise ArtifactError(f"{folder}: no finished teacher here")
    return pack_checkpoint(ckpt)


def read_manifest(folder: Path) -> dict[str, Any]:
    return read_json(Path(folder) / MANIFEST)
