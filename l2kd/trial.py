"""One lifelong trial: a task order, a method and a seed, trained stage by stage and evaluated.

`run_trial(cfg, workdir)` is the whole job as a library call; it knows nothing of Ray. Everything a
user supplied is loaded and validated before anything is written. After every stage it evaluates
every task of the order (future ones too), writes the predictions, a checkpoint and `results.json`
(atomically), and emits a `stage_end` event carrying the checkpoint, which a scheduler may report.
A trial started again on the same folder resumes after its last finished stage.
"""

from __future__ import annotations

import contextlib
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
import yaml

from .compute import ComputeMeter
from .checkpoint import CHECKPOINTS, Checkpoint, latest_checkpoint, read_checkpoint, save_checkpoint
from .config import TrainingConfig, TrialConfig
from .context import TrialContext
from .data import load_split
from .engine import Engine
from .errors import ArtifactError, ConfigError
from .evaluate import evaluate_all
from .identity import config_hash, settings_diff
from .io import remove_leftovers, write_jsonl, write_text
from .methods import Method, make_method
from .backbone import check_pretrained, n_positions, use_gelu
from .model import build_model, grow_embeddings
from .rescore import predictions_dir
from .results import TrialResult, library_versions
from .tasks import TASKS
from .tokenizer import Tokenizer
from .training import train_stage
from .tracking import fan_out, tensorboard_listener

log = logging.getLogger(__name__)

EventFn = Callable[..., None]


# --------------------------------------------------------------------------- set-up
def resolve_device(training: TrainingConfig) -> tuple[torch.device, str, torch.dtype | None]:
    """(device, precision, autocast dtype) from the settings and the machine."""
    want = training.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device: 'cuda' asked for, but no GPU is visible")
    device = torch.device("cuda" if want == "cuda" or (want == "auto" and torch.cuda.is_available()) else "cpu")
    precision = training.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("training.precision: fp16 needs a GPU (use bf16 or fp32 on a CPU)")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return device, precision, dtype


@contextmanager
def trial_log(workdir: Path) -> Iterator[None]:
    handler = logging.FileHandler(workdir / "trial.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("l2kd")
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(min(old_level or logging.INFO, logging.INFO))
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


def describe_eval(tag: str) -> str:
    """An evaluation's tag (which also seeds its sampling, so it stays as it is) as people read it:
    stages counted from 1, as in the R table and the resume messages."""
    if tag == "initial":
        return "untrained model"
    stage, _, epoch = tag.removeprefix("stage").partition("-epoch")
    return f"stage {int(stage) + 1}, epoch {epoch}" if epoch else f"after stage {int(stage) + 1}"


def _logged(emit: EventFn) -> EventFn:
    """Events on to `emit`, and what a person reading trial.log needs of them (its lines carry the
    time): each evaluation with its scores, pseudo samples kept."""
    def on_event(name: str, **e: Any) -> None:
        if name == "eval":
            log.info("eval (%s) %s: %s", describe_eval(e["tag"]), e["task"],
                     ", ".join(f"{k} {v:.2f}" for k, v in e["scores"].items()))
        elif name == "replay":
            log.info("stage %d: pseudo samples kept %d of %d", e["stage"] + 1, e["kept"], e["requested"])
        emit(name, **e)
    return on_event


# --------------------------------------------------------------------------- the trial
def _load_data(cfg: TrialConfig) -> tuple[dict, dict]:
    train = {t: load_split(t, "train", cfg.data) for t in cfg.tasks}
    test = {t: load_split(t, "test", cfg.data) for t in cfg.tasks}
    return train, test


def _new_result(cfg: TrialConfig, method: Method) -> TrialResult:
    return TrialResult(
        name=cfg.name or "trial", tasks=list(cfg.tasks), method=cfg.method.name,
        method_params=method.p.model_dump(mode="json"), seed=cfg.seed,
        stages=[list(s) for s in method.stages(cfg.tasks)],
        primary={t: TASKS.get(t).primary_metric for t in cfg.tasks},
        config=cfg.to_dict(), config_hash=config_hash(cfg), versions=library_versions())


def _results_on_disk_match(workdir: Path, result: TrialResult) -> bool:
    try:
        saved = TrialResult.load(workdir)
    except (ArtifactError, ValueError, OSError):  # missing or damaged
        return False
    return saved.complete == result.complete and saved.R == result.R


def _resume_point(cfg: TrialConfig, workdir: Path, resume_from: Path | None) -> Checkpoint | None:
    ckpt = read_checkpoint(resume_from) if resume_from else latest_checkpoint(workdir)
    if ckpt and ckpt.result.config_hash != config_hash(cfg):
        diff = settings_diff(ckpt.result.config, cfg.to_dict())
        what = f" ({diff})" if diff else ""
        raise ArtifactError(f"{ckpt.path}: this checkpoint belongs to a trial with other settings{what}; "
                            "start afresh (--fresh) or write to another folder")
    return ckpt


@dataclass
class TrialSetup:
    """What a trial has read and checked before it writes anything: its device, method, data,
    tokenizer and model (fresh, or its checkpoint's) and the result so far. `run_trial` trains from
    it; `cli.py bench` measures the same step on it."""

    cfg: TrialConfig
    device: torch.device
    precision: str
    amp_dtype: torch.dtype | None
    method: Method
    stages: list[tuple[str, ...]]
    train: dict
    test: dict
    tokenizer: Tokenizer
    model: torch.nn.Module
    result: TrialResult
    ckpt: Checkpoint | None = None

    def context(self, teachers: Mapping[str, Any], emit: EventFn) -> TrialContext:
        return TrialContext(cfg=self.cfg, tokenizer=self.tokenizer, device=self.device,
                            amp_dtype=self.amp_dtype, max_len=n_positions(self.model), train=self.train,
                            test=self.test, teachers=teachers, emit=emit, model=self.model)


def set_up_trial(cfg: TrialConfig, workdir: str | Path | None = None, *, resume: bool = True,
                 resume_from: str | Path | None = None) -> TrialSetup:
    """Read and check every input of the trial in `workdir` (data, the checkpoint it resumes from,
    tokenizer, model); nothing is written. Without `workdir`: a fresh trial's set-up."""
    device, precision, amp_dtype = resolve_device(cfg.training)
    if cfg.training.threads:
        torch.set_num_threads(cfg.training.threads)
    method = make_method(cfg.method)
    train, test = _load_data(cfg)
    ckpt = None
    if resume and (workdir is not None or resume_from):
        ckpt = _resume_point(cfg, Path(workdir or "."), Path(resume_from) if resume_from else None)
    if ckpt:
        tokenizer, model, result = ckpt.tokenizer(), ckpt.model(), ckpt.result
    else:
        if cfg.model.pretrained:  # before the tokenizer, which would retry an unreachable hub too
            check_pretrained(cfg.model.pretrained)
        tokenizer = Tokenizer.load(cfg.model.tokenizer, cfg.model.pretrained, cfg.model.builtin_vocab_size)
        model = build_model(cfg.model, tokenizer, cfg.seed)
        result = _new_result(cfg, method)
    use_gelu(model, cfg.model.gelu)  # a resumed model too: its folder may predate the setting
    return TrialSetup(cfg, device, precision, amp_dtype, method, method.stages(cfg.tasks), train, test,
                      tokenizer, model, result, ckpt)


def check_teachers(setup: TrialSetup, teachers: Mapping[str, Any]) -> None:
    missing = [t for t in setup.method.teachers_needed(setup.cfg) if t not in teachers]
    if missing and not (setup.ckpt and setup.ckpt.complete):  # a finished trial needs no teachers
        raise ArtifactError(f"method {setup.cfg.method.name}: no teacher for {', '.join(missing)}; "
                            "train teachers first (cli.py train does so itself)")


def _prepare_folder(workdir: Path, cfg: TrialConfig) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    remove_leftovers(workdir, dirs_in=(CHECKPOINTS,))  # of a run killed while writing
    write_text(workdir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _announce_resume(setup: TrialSetup, workdir: Path, emit: EventFn) -> None:
    ckpt, n = setup.ckpt, len(setup.stages)
    if ckpt and ckpt.complete:
        log.info("%s: already complete (%d stages)", workdir, ckpt.stages_done)
        emit("resume", stages_done=ckpt.stages_done, stages=n, complete=True)
    elif ckpt:
        setup.method.load_state_dict(ckpt.method_state())
        log.info("resuming %s after stage %d of %d", workdir, ckpt.stages_done, n)
        emit("resume", stages_done=ckpt.stages_done, stages=n, complete=False)


def _evaluate_untrained(ctx: TrialContext, setup: TrialSetup, meter: ComputeMeter, workdir: Path) -> None:
    result = setup.result
    if result.baseline is None and setup.cfg.eval.before_training and not setup.ckpt:
        with meter.phase("eval"):
            result.baseline, preds = evaluate_all(ctx, setup.model, "initial")
        for task, records in preds.items():  # kept for rescoring (l2kd.rescore)
            write_jsonl(predictions_dir(workdir, None) / f"{task}.jsonl", records)


def _run_stage(s: int, ctx: TrialContext, setup: TrialSetup, meter: ComputeMeter, workdir: Path) -> None:
    """Stage `s`: replay, train, evaluate every task, then predictions, checkpoint and results."""
    cfg, method, tokenizer, result, stages = setup.cfg, setup.method, setup.tokenizer, setup.result, setup.stages
    device, precision, model, emit = setup.device, setup.precision, setup.model, ctx.emit
    tasks = stages[s]
    ctx.stage = s
    torch.manual_seed(ctx.seed("dropout", s))
    emit("stage_start", stage=s, stages=len(stages), tasks=list(tasks))
    log.info("stage %d/%d (%s): started", s + 1, len(stages), "+".join(tasks))
    stage_t0 = time.perf_counter()
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    with meter.phase("pseudo"):
        replay_rows, replay_info = method.replay(ctx, tasks)
    timing["replay_s"] = time.perf_counter() - t0
    for task in tasks:
        tokenizer.add_task(task)
    grow_embeddings(model, len(tokenizer), cfg.seed)
    model.to(device)
    # Seq-KD swaps in its teacher's answers here (decoded now unless precomputed)
    with meter.phase("teacher" if method.teachers_needed(cfg) else "train"):
        rows = method.train_rows(ctx, tasks) + replay_rows
    if replay_info:
        emit("replay", stage=s, **{k: v for k, v in replay_info.items() if k != "samples"})

    t0 = time.perf_counter()
    epoch_t0 = [t0]
    with meter.phase("train"):
        method.prepare_model(ctx, model)
        engine = Engine(model, cfg.training, precision, device)
        ctx.model = engine.module
        method.begin_training(ctx, tasks)

        def epoch_end(epoch: int) -> None:
            log.info("stage %d/%d, epoch %d/%d: done in %.1f s", s + 1, len(stages), epoch,
                     cfg.training.epochs, time.perf_counter() - epoch_t0[0])
            if cfg.eval.every_epoch:
                with meter.phase("eval"):
                    scores, _ = evaluate_all(ctx, engine.module, f"stage{s}-epoch{epoch}")
                result.curves.append({"stage": s, "epoch": epoch, "scores": scores})
            epoch_t0[0] = time.perf_counter()

        train_info = train_stage(ctx, method, engine, rows, tasks, epoch_end)
        info = {"tasks": list(tasks), "train": train_info, **method.end_stage(ctx, tasks)}
        model = setup.model = engine.module
        engine.close()
    timing["train_s"] = time.perf_counter() - t0
    meter.trained(train_info["tokens"])

    t0 = time.perf_counter()
    with meter.phase("eval"):
        scores, preds = evaluate_all(ctx, model, f"stage{s}")
    timing["eval_s"] = time.perf_counter() - t0
    info["timing"] = timing
    if replay_info:
        info["replay"] = {k: v for k, v in replay_info.items() if k != "samples"}
        write_jsonl(workdir / "pseudo" / f"stage-{s:02d}.jsonl", replay_info.get("samples", []))
    for task, records in preds.items():
        write_jsonl(predictions_dir(workdir, s) / f"{task}.jsonl", records)
    result.add_stage(scores, info)
    result.complete = result.stages_done == len(stages)
    path = save_checkpoint(workdir, model, tokenizer, method.state_dict(), result)
    log.info("checkpoint after stage %d written: %s", s + 1, path)
    result.save(workdir)
    log.info("stage %d/%d (%s): finished in %.1f s; R row %s", s + 1, len(stages), "+".join(tasks),
             time.perf_counter() - stage_t0, ", ".join(f"{v:.2f}" for v in result.R[-1]))
    emit("stage_end", stage=s, stages=len(stages), tasks=list(tasks), scores=scores,
         R_row=result.R[-1], checkpoint=path, result=result)


def run_trial(cfg: TrialConfig, workdir: str | Path, *, teachers: Mapping[str, Any] | None = None,
              on_event: EventFn | None = None, resume: bool = True,
              resume_from: str | Path | None = None, tensorboard: bool = True,
              setup: TrialSetup | None = None) -> TrialResult:
    """Run (or continue) one trial in `workdir` and return its result.

    `setup`: the trial's inputs as `set_up_trial` read and checked them (`cli.py train` checks them
    first, then starts the teachers, then runs the trial); read here when not given. `tensorboard`:
    write TensorBoard event files under WORKDIR/tensorboard (l2kd.tracking)."""
    workdir = Path(workdir)
    emit = _logged(on_event or (lambda *a, **k: None))
    teachers = {} if teachers is None else teachers  # not `or {}`: an empty mapping may still be filling
    # every input is read and checked (data, checkpoint, teachers, tokenizer, model) before anything
    # is written
    setup = setup or set_up_trial(cfg, workdir, resume=resume, resume_from=resume_from)
    check_teachers(setup, teachers)
    result, stages, ckpt = setup.result, setup.stages, setup.ckpt
    emit("start", trial=cfg.name, method=cfg.method.name, tasks=list(cfg.tasks), seed=cfg.seed,
         workdir=workdir, device=str(setup.device), precision=setup.precision)
    _prepare_folder(workdir, cfg)
    board = None
    if tensorboard and result.stages_done < len(stages):
        board = tensorboard_listener(workdir, sum(i["train"]["steps"] for i in result.stage_info))
        emit = fan_out(emit, board)
    with trial_log(workdir), contextlib.closing(board) if board else contextlib.nullcontext():
        _announce_resume(setup, workdir, emit)
        setup.model.to(setup.device)
        ctx = setup.context(teachers, emit)
        log.info("trial %s: %s on %s, %s, %s", result.name, cfg.method.name, " -> ".join(cfg.tasks),
                 setup.device, setup.precision)
        meter = ComputeMeter(result.compute, setup.device, ctx.decode_stats)
        _evaluate_untrained(ctx, setup, meter, workdir)
        for s in range(result.stages_done, len(stages)):
            _run_stage(s, ctx, setup, meter, workdir)
        if result.stages_done == (ckpt.stages_done if ckpt else 0):
            # nothing left to run: the checkpoint holds the truth, and results.json, written after
            # it, may lag it (a run killed between the two writes): rewritten only then
            result.complete = True
            if not _results_on_disk_match(workdir, result):
                result.save(workdir)
        log.info("trial %s finished: R = %s", result.name, result.R)
    return result
