"""Causal-LM pretraining of a GPT-2 built from a config, on plain text: a base for `model.pretrained`.

A pretrained GPT-2 cannot be downloaded everywhere, and a teacher trained from scratch on a few
hundred rows is degenerate (see l2kd.diagnostics): this builds the base the paper's regime assumes.

    run_pretrain(load_pretrain_config(path, overrides), out)

- Corpus: files, or folders (every `*.txt` below them, sorted). Each non-empty line is a document,
  duplicates dropped (the few-shot samples repeat lines across seeds), each followed by EOS; the
  token stream is cut into blocks of `seq_len + 1` tokens (a block's last token is the next one's
  first). Blocks are drawn in a seeded permutation per pass over the corpus.
- `disjoint_from`: folders of LAMOL JSON files whose texts must not be in the corpus; the share of
  the corpus's word 8-grams found in them is measured and the run refused above MAX_OVERLAP.
- Training goes through the trial's engine (l2kd.engine: DeepSpeed, bf16 on a GPU that has it),
  AdamW with linear warm-up and linear decay to 10% of the peak rate.
- Resume: every `save_every` steps the weights, optimiser and RNG state go to OUT/resume/ (written
  atomically); the same command continues from there, on the same batches. A folder of a run with
  other settings is refused.
- Output: OUT/ holds config.json + model.safetensors (Hugging Face layout, as `model.pretrained`
  loads), tokenizer.json, and manifest.json (the corpus files' hashes, what the base saw: tokens,
  steps, passes, the loss); built under a temporary name and renamed into place.

The model's vocabulary is the tokenizer's base vocabulary (EOS included): LAMOL's added tokens and
task tokens get fresh N(0, 0.02) rows when a trial grows the embeddings, as on top of OpenAI's GPT-2.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from pydantic import Field

from .config import ModelConfig, Strict, TrainingConfig, apply_overrides, load_yaml, validate
from .errors import ArtifactError, ConfigError, DataError
from .io import atomic_dir, file_sha256, read_json, remove_leftovers, stable_hash, write_json
from .results import library_versions
from .tokenizer import Tokenizer

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
RESUME = "resume"
NGRAM = 8  # words: long enough that a shared 8-gram is copied text, not a common phrase
MAX_OVERLAP = 1e-3  # most corpus 8-grams allowed in the `disjoint_from` texts


class PretrainTraining(Strict):
    steps: int = Field(1000, ge=1, description="optimiser steps")
    batch_size: int = Field(16, ge=1, description="sequences (blocks) per step")
    seq_len: int = Field(128, ge=8, description="tokens per sequence (at most the model's n_positions)")
    lr: float = Field(1e-3, gt=0, description="peak AdamW learning rate")
    warmup_steps: int = Field(50, ge=0, description="linear warm-up, in steps")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="the rate at the last step / the peak")
    weight_decay: float = Field(0.01, ge=0, description="decoupled weight decay (not on biases/LayerNorms)")
    adam_eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="'auto': bf16 on a GPU that has it")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where it runs")
    threads: int | None = Field(None, ge=1, description="torch CPU threads")
    save_every: int = Field(200, ge=1, description="steps between resume points")
    log_every: int = Field(20, ge=1, description="steps between progress events")


class PretrainConfig(Strict):
    corpus: list[str] = Field(..., min_length=1, description="text files or folders (their *.txt files)")
    disjoint_from: list[str] = Field(
        default_factory=list, description="folders of LAMOL JSON files whose texts must not be in the corpus")
    model: ModelConfig = Field(default_factory=ModelConfig,
                               description="the GPT-2 shape (`config`) and `tokenizer`; `pretrained` unset")
    training: PretrainTraining = Field(default_factory=PretrainTraining)
    seed: int = Field(0, description="seeds the init, the block order and dropout")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def load_pretrain_config(path: str | Path, overrides: list[str] = ()) -> PretrainConfig:
    data = apply_overrides(load_yaml(path), list(overrides))
    cfg = validate(PretrainConfig, data, str(path))
    if cfg.model.pretrained:
        raise ConfigError(f"{path}: model.pretrained: pretraining builds its model from model.config")
    return cfg


def identity(cfg: PretrainConfig) -> dict[str, Any]:
    """What determines the base (progress display settings excluded)."""
    d = cfg.to_dict()
    for volatile in ("log_every", "threads", "save_every", "device"):
        d["training"].pop(volatile)
    return d


# --------------------------------------------------------------------------- corpus
def corpus_files(specs: list[str]) -> list[Path]:
    files: list[Path] = []
    for spec in specs:
        p = Path(spec).expanduser()
        if p.is_dir():
            found = sorted(p.rglob("*.txt"))
            if not found:
                raise ConfigError(f"corpus: {spec}: the folder holds no .txt file")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"corpus: {spec}: no such file or folder")
    return list(dict.fromkeys(files))


def read_documents(files: list[Path]) -> tuple[list[str], int]:
    """(unique non-empty lines in file order, lines read)."""
    docs: dict[str, None] = {}
    n = 0
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{f}: not a UTF-8 text file (byte {e.start})") from None
        for line in text.splitlines():
            line = line.strip()
            if line:
                n += 1
                docs.setdefault(line, None)
    return list(docs), n


def _ngrams(text: str) -> set[int]:
    w = text.lower().split()
    return {hash(tuple(w[i:i + NGRAM])) for i in range(len(w) - NGRAM + 1)}


def lamol_texts(folder: Path) -> list[str]:
    from .data.lamol_json import read_lamol

    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise ConfigError(f"disjoint_from: {folder}: no LAMOL JSON file there")
    out = []
    for f in files:
        for ex in read_lamol(f):
            out += [ex.context, *ex.answers]
    return out


def overlap(docs: list[str], folders: list[str]) -> dict[str, Any]:
    """The share of the corpus's word 8-grams that occur in the `folders`' texts."""
    banned: set[int] = set()
    for folder in folders:
        for text in lamol_texts(Path(folder).expanduser()):
            banned |= _ngrams(text)
    total = shared = 0
    for d in docs:
        grams = _ngrams(d)
        total += len(grams)
        shared += len(grams & banned)
    return {"folders": [str(Path(f).expanduser().resolve()) for f in folders], "ngram": NGRAM,
            "corpus_ngrams": total, "shared_ngrams": shared, "share": shared / max(total, 1)}


def token_blocks(tok: Tokenizer, docs: list[str], seq_len: int) -> np.ndarray:
    """(N, seq_len + 1) int64: the documents' tokens, each followed by EOS, cut into blocks."""
    stream: list[int] = []
    for ids in tok.encode_batch(docs):
        stream += ids
        stream.append(tok.ids.eos)
    arr = np.asarray(stream, dtype=np.int64)
    n = (len(arr) - 1) // seq_len
    if n < 1:
        raise DataError(f"corpus: {len(arr)} tokens, fewer than one sequence of {seq_len + 1}")
    idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
    return arr[idx]


def batch_indices(n_blocks: int, step: int, batch_size: int, seed: int) -> np.ndarray:
    """Block indices of `step`'s batch: sample i = step * B + j is block perm_p[i % N] of pass
    p = i // N, each pass a fresh seeded permutation (so a resumed run draws the same batches)."""
    out = []
    for i in range(step * batch_size, (step + 1) * batch_size):
        p, k = divmod(i, n_blocks)
        out.append(np.random.default_rng([seed, p]).permutation(n_blocks)[k])
    return np.asarray(out)


def lr_at(step: int, t: PretrainTraining) -> float:
    """Step is 0-based; warm-up reaches the peak at step warmup_steps, then linear decay."""
    if t.warmup_steps and step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    span = max(1, t.steps - t.warmup_steps)
    frac = min(1.0, (step - t.warmup_steps) / span)
    return t.lr * (1 - (1 - t.min_lr_ratio) * frac)


# --------------------------------------------------------------------------- the run
def _save_state(folder: Path, model, optimizer, state: dict[str, Any]) -> None:
    from .model import save_weights

    def fill(tmp: Path) -> None:
        save_weights(model, tmp)
        torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()},
                   tmp / "optimizer.pt")
        write_json(tmp / "state.json", state)

    atomic_dir(folder, fill)


def _read_state(folder: Path, cfg_hash: str, out: Path) -> dict[str, Any] | None:
    path = folder / "state.json"
    if not path.is_file():
        return None
    try:
        state = read_json(path)
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path}: damaged resume state ({e}); start afresh (--fresh)") from None
    if state.get("config_hash") != cfg_hash:
        raise ArtifactError(f"{out}: holds a pretraining run with other settings; start afresh (--fresh) "
                            "or write to another folder")
    return state


def run_pretrain(cfg: PretrainConfig, out: str | Path, *, fresh: bool = False,
                 on_event: Callable[..., None] | None = None) -> dict[str, Any]:
    """Pretrain (or continue) into `out`; returns the manifest."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from .engine import Engine
    from .losses import token_ce
    from .model import save_weights
    from .trial import resolve_device

    out = Path(out)
    emit = on_event or (lambda *a, **k: None)
    t = cfg.training
    cfg_hash = stable_hash(identity(cfg))
    if (out / MANIFEST).is_file() and not fresh:
        manifest = read_json(out / MANIFEST)
        if manifest.get("config_hash") != cfg_hash:
            raise ArtifactError(f"{out}: holds a base pretrained with other settings; start afresh "
                                "(--fresh) or write to another folder")
        emit("done_already", out=out)
        return manifest
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"{out}: is a file; the base must be a folder")

    # every input is read and checked before anything is written
    files = corpus_files(cfg.corpus)
    docs, n_lines = read_documents(files)
    disjoint = overlap(docs, cfg.disjoint_from) if cfg.disjoint_from else None
    if disjoint and disjoint["share"] > MAX_OVERLAP:
        raise DataError(f"corpus: {disjoint['shared_ngrams']} of its {disjoint['corpus_ngrams']} word "
                        f"{NGRAM}-grams occur in {', '.join(cfg.disjoint_from)} (more than "
                        f"{MAX_OVERLAP:.1%}): the corpus is not disjoint from those tasks")
    tok = Tokenizer.load(cfg.model.tokenizer, None, cfg.model.builtin_vocab_size)
    blocks = token_blocks(tok, docs, t.seq_len)
    if int(blocks.max()) >= tok.base_size:
        raise DataError("corpus: holds the text of a LAMOL special token (__ans__, __pad__, __unk__)")
    kwargs = cfg.model.gpt2_kwargs()
    if t.seq_len > kwargs.get("n_positions", 1024):
        raise ConfigError(f"training.seq_len: {t.seq_len} is more than model n_positions "
                          f"({kwargs.get('n_positions', 1024)})")
    device, precision, _ = resolve_device(TrainingConfig(device=t.device, precision=t.precision))
    if t.threads:
        torch.set_num_threads(t.threads)

    if fresh and out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_leftovers(out, dirs_in=(".",))
    state = _read_state(out / RESUME, cfg_hash, out)

    torch.manual_seed(cfg.seed)
    try:
        config = GPT2Config(vocab_size=tok.base_size, bos_token_id=tok.ids.eos, eos_token_id=tok.ids.eos, **kwargs)
    except TypeError as e:
        raise ConfigError(f"model.config: {e}") from None
    config._attn_implementation = "sdpa"
    model = GPT2LMHeadModel(config).float()
    engine_cfg = TrainingConfig(lr=t.lr, adam_eps=t.adam_eps, weight_decay=t.weight_decay,
                                max_grad_norm=t.max_grad_norm, precision=precision, device=device.type)
    step, history = 0, []
    if state:
        from .model import read_weights

        _, weights = read_weights(out / RESUME)
        model.load_state_dict(weights, strict=False)
        model.tie_weights()
        step, history = int(state["step"]), list(state["history"])
        log.info("resuming pretraining in %s at step %d of %d", out, step, t.steps)
        emit("resume", step=step)
    model.to(device).train()
    engine = Engine(model, engine_cfg, precision, device)
    if state:
        saved = torch.load(out / RESUME / "optimizer.pt", map_location=device, weights_only=False)
        engine.optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
    n_blocks = len(blocks)
    emit("start", out=out, steps=t.steps, step=step, blocks=n_blocks, device=str(device),
         precision=precision, params=sum(p.numel() for p in model.parameters()))
    B, L = t.batch_size, t.seq_len
    positions = torch.arange(B * L, device=device)
    t0, window, window_t = time.perf_counter(), 0.0, time.perf_counter()
    wall_before = float(state["wall_s"]) if state else 0.0
    while step < t.steps:
        batch = torch.from_numpy(blocks[batch_indices(n_blocks, step, B, cfg.seed)]).to(device)
        logits = engine.logits(batch[:, :-1].contiguous(), positions)
        loss = token_ce(logits, batch[:, 1:].reshape(-1))
        del logits
        engine.backward(loss)
        engine.step(lr_at(step, t))
        step += 1
        window += loss.detach()
        if step % t.log_every == 0 or step == t.steps:
            n = t.log_every if step % t.log_every == 0 else step % t.log_every
            value = float(window) / n
            dt = max(time.perf_counter() - window_t, 1e-9)
            history.append({"step": step, "loss": value})
            emit("step", step=step, steps=t.steps, loss=value, lr=lr_at(step - 1, t),
                 tokens_per_s=n * B * L / dt)
            window, window_t = 0.0, time.perf_counter()
        if step % t.save_every == 0 and step < t.steps:
            _save_state(out / RESUME, engine.module, engine.optimizer,
                        {"step": step, "config_hash": cfg_hash, "history": history,
                         "wall_s": wall_before + time.perf_counter() - t0})
            emit("saved", step=step)
    model = engine.module
    engine.close()
    passes = t.steps * B / n_blocks
    manifest = {
        "config_hash": cfg_hash, "config": cfg.to_dict(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "corpus": {"files": [{"path": str(f.resolve()), "bytes": f.stat().st_size, "sha256": file_sha256(f)}
                             for f in files],
                   "lines": n_lines, "documents": len(docs), "tokens": int(n_blocks * L + 1),
                   "blocks": n_blocks, "disjoint_from": disjoint},
        "tokenizer": {"source": tok.source, "fingerprint": tok.base_fingerprint(), "base_size": tok.base_size},
        "seen": {"steps": t.steps, "sequences": t.steps * B, "tokens": t.steps * B * L, "passes": passes},
        "loss": {"first": history[0]["loss"] if history else None,
                 "last": history[-1]["loss"] if history else None, "history": history},
        "device": str(device), "precision": precision,
        "wall_s": wall_before + time.perf_counter() - t0, "versions": library_versions(),
    }

    def fill(tmp: Path) -> None:
        save_weights(model, tmp)
        (tmp / "tokenizer.json").write_text(tok.to_json())
        write_json(tmp / MANIFEST, manifest)

    atomic_dir(out, fill)
    emit("done", out=out, manifest=manifest)
    return manifest


