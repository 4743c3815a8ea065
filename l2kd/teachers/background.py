"""The teachers of one trial (`cli.py train`): found on disk, or trained first, or in the background.

`start()`, which `cli.py train` calls once the trial has checked every input (so a bad input
trains nothing), trains the teachers not yet on disk: with `workers=0` all of them, in this process,
before it returns; with `workers=N`, in task order, N at a time, each in a spawned process of its own (its own
DeepSpeed group on its own port; CUDA does not survive a fork), while the student runs. A KD student
needs task t's teacher only when its stage t begins (Word-KD's teacher, Seq-KD's decoded answers),
so a lookup waits for that teacher only. Where one process leaves the device partly idle (a small
model on a GPU, whose step the bench shows bound by the host's kernel launches), the later
teachers' time hides behind the student's; on a CPU that one process already fills, it does not
(README, "Speed").

Nothing trained changes: each process trains exactly what it would alone (teachers are keyed by
content; `threads`, the one setting adjusted here, is not part of a teacher's identity), and the
store's file lock still makes concurrent requests for one teacher train it once.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
import traceback
from collections.abc import Mapping
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable, Iterator

from .. import errors
from ..config import TrialConfig
from ..errors import ArtifactError, UserError
from ..methods import make_method
from ..trial import resolve_device
from .store import TeacherStore

WORKER_OUTPUT = "worker.out"  # a background teacher's console output, in its folder
EXIT_GRACE_S = 60  # how long a teacher process that has reported may take to exit before it is stopped


def _train_in_worker(root: str, cfg_dict: dict, task: str, modes: tuple[str, ...], output: str,
                     conn, on_damaged: str = "refuse") -> None:
    """A spawned process: the teacher of `task` (and its Seq-KD data), found or trained by the store."""
    # its console output (DeepSpeed's banner, warnings, a traceback) goes to a file in the teacher's
    # folder instead of over the student's progress display
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        from ..trialconfig import trial_config

        cfg = trial_config(cfg_dict, f"teacher of {task}")
        path = TeacherStore(Path(root), on_damaged=on_damaged).ensure(cfg, task, seq_kd_modes=modes)
        conn.send(("ok", str(path)))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it there
        traceback.print_exc()
        conn.send(("error", type(e).__name__, str(e)))
    finally:
        conn.close()


def _as_error(task: str, kind: str, message: str, output: Path) -> Exception:
    """The parent's exception for a teacher that failed in its process: a user error keeps its type
    (a malformed file is still a DataError, exit 2); anything else names the output to read."""
    cls = getattr(errors, kind, None)
    if isinstance(cls, type) and issubclass(cls, UserError):
        return cls(message)
    return ArtifactError(f"the teacher of {task} failed in its process: {kind}: {message} "
                         f"(its output: {output})")


class TrialTeachers(Mapping):
    """task -> teacher folder, for `run_trial(teachers=t)` once `t.start()` has run.

    Use as a context manager: leaving stops background teachers still running (after an error in the
    student), so a failed or interrupted run exits at once; a teacher stopped mid-training is
    trained again by the next run (its folder has no manifest)."""

    def __init__(self, store: TeacherStore, cfg: TrialConfig, workers: int,
                 on_event: Callable[..., None] | None = None):
        if workers < 0:
            raise ValueError("workers must be 0 or more")
        self.store, self.workers = store, workers
        self._emit = on_event or (lambda *a, **k: None)
        method = make_method(cfg.method)
        self._tasks = method.teachers_needed(cfg)
        self._modes = tuple(method.seq_kd_modes(cfg))
        self._cfg_dict = self._worker_config(cfg, workers) if workers else None
        self._cfg = cfg
        self._paths: dict[str, Path] = {}
        self._errors: dict[str, Exception] = {}
        self._done = {t: threading.Event() for t in self._tasks}
        self._to_train = []
        for task in self._tasks:
            found = store.find(cfg, task, self._modes)
            if found:
                self._paths[task] = found
                self._done[task].set()
            else:
                self._to_train.append(task)
        self._stop = threading.Event()
        self._started = False
        self._thread = threading.Thread(target=self._schedule, name="background-teachers", daemon=True)

    @staticmethod
    def _worker_config(cfg: TrialConfig, workers: int) -> dict[str, Any]:
        d = cfg.to_dict()
        # On a CPU, torch's default is a thread per core in every process; the student and the
        # teachers would then fight over the cores. Each teacher gets its share (the student keeps
        # its own setting: `threads` is part of a trial's identity, not of a teacher's).
        device, _, _ = resolve_device(cfg.training)
        if device.type == "cpu" and not cfg.training.threads:
            d["training"]["threads"] = max(1, (os.cpu_count() or 1) // (workers + 1))
        return d

    # ------------------------------------------------------------------ the mapping
    def __getitem__(self, task: str) -> Path:
        if task not in self._done:
            raise KeyError(task)
        if not self._done[task].is_set():
            self._emit("teacher_wait", task=task)
            while not self._done[task].wait(0.5):
                if not self._thread.is_alive() and not self._done[task].is_set():  # not started, or stopped
                    raise ArtifactError(f"the teacher of {task} is not being trained (start() first)")
        if task in self._errors:
            raise self._errors[task]
        return self._paths[task]

    def __contains__(self, task: object) -> bool:  # without waiting (Mapping's default looks it up)
        return task in self._done

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def training(self) -> list[str]:
        """Tasks whose teachers this object trains (those not found on disk)."""
        return list(self._to_train)

    # ------------------------------------------------------------------ lifetime
    def start(self) -> None:
        """Train the missing teachers: here and now (workers=0), or start them in the background."""
        if not self._to_train or self._started or self._stop.is_set():
            return
        self._started = True
        if self.workers:
            self._thread.start()
            return
        for task in self._to_train:
            self._paths[task] = self.store.ensure(self._cfg, task, self._emit, self._modes)
            self._done[task].set()

    def __enter__(self) -> TrialTeachers:
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _schedule(self) -> None:
        ctx = mp.get_context("spawn")
        pending = list(self._to_train)  # task order: the student needs the first one first
        running: dict[Any, tuple[str, Any, Path, float]] = {}  # connection -> (task, process, output, t0)
        try:
            while (pending or running) and not self._stop.is_set():
                while pending and len(running) < self.workers:
                    task = pending.pop(0)
                    folder = self.store.folder(self._cfg, task)
                    folder.mkdir(parents=True, exist_ok=True)
                    output = folder / WORKER_OUTPUT
                    receive, send = ctx.Pipe(duplex=False)
                    proc = ctx.Process(target=_train_in_worker, name=f"teacher-{task}",
                                       args=(str(self.store.root), self._cfg_dict, task, self._modes,
                                             str(output), send, self.store.on_damaged))
                    proc.start()
                    send.close()  # the child holds the only sending end: its exit reads as EOF here
                    running[receive] = (task, proc, output, time.perf_counter())
                    self._emit("teacher", task=task, path=folder, background=True)
                for conn in wait(list(running), timeout=0.5):
                    task, proc, output, t0 = running.pop(conn)
                    try:  # it has said its outcome, or died
                        outcome = conn.recv()
                    except EOFError:  # killed, or died before it could say
                        proc.join()
                        outcome = ("error", "exit", f"the process ended with code {proc.exitcode}")
                    else:  # said: a process hanging on its way out (a device or group teardown) must
                        proc.join(EXIT_GRACE_S)  # not keep the student waiting for a finished teacher
                        if proc.is_alive():
                            proc.terminate()
                            proc.join()
                    if outcome[0] == "ok":
                        self._paths[task] = Path(outcome[1])
                        self._emit("teacher_ready", task=task, path=self._paths[task],
                                   seconds=time.perf_counter() - t0)
                    else:
                        self._errors[task] = _as_error(task, outcome[1], outcome[2], output)
                    self._done[task].set()
        finally:
            for _, proc, _, _ in running.values():  # the student stopped: so do its teachers
                proc.terminate()
            for _, proc, _, _ in running.values():
                proc.join()
