"""The tokenizer: a byte-level BPE (Hugging Face `tokenizers`) plus LAMOL's added tokens.

Sources: GPT-2's own files (a folder with encoder.json + vocab.bpe), a Hugging Face name or folder,
or 'builtin': a small BPE trained on the built-in benchmark (deterministic, so every process builds
the same one). As LAMOL, `__ans__`, `__pad__`, `__unk__` are added in that order after the base
vocabulary, then one `__{task}__` token per task. EOS is GPT-2's `<|endoftext|>` for GPT-2's files and
the builtin BPE; a Hugging Face tokenizer's own EOS (its `eos_token`) for any other model.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from .data.encoding import SpecialIds
from .errors import ConfigError
from .io import looks_like_path

EOS = "<|endoftext|>"
ADDED = ("__ans__", "__pad__", "__unk__")  # in this order, as LAMOL's settings.py

# LAMOL decodes with pytorch-transformers 1.2, whose clean_up_tokenization makes these swaps on
# predictions and gold alike (all tasks but WOZ/WikiSQL).
_CLEANUP = [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
            (" 'm", "'m"), (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]


def clean_up_tokenization(text: str) -> str:
    for a, b in _CLEANUP:
        text = text.replace(a, b)
    return text


def task_token(task: str) -> str:
    return f"__{task}__"


class Tokenizer:
    """Encode/decode without special-token handling; LAMOL's added tokens appended in order."""

    def __init__(self, hf: HFTokenizer, source: str, eos_token: str = EOS):
        self.hf = hf
        self.source = source
        self.eos_token = eos_token
        self.base_size = hf.get_vocab_size(with_added_tokens=False)
        eos = hf.token_to_id(eos_token)
        if eos is None:
            raise ConfigError(f"tokenizer {source}: has no {eos_token} token")
        for tok in ADDED:
            self._add(tok)
        v = hf.token_to_id
        self.ids = SpecialIds(eos=eos, ans=v("__ans__"), pad=v("__pad__"), unk=v("__unk__"))

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, spec: str, pretrained: str | None = None, vocab_size: int = 1024) -> "Tokenizer":
        if spec == "auto":
            spec = pretrained if pretrained else "builtin"
        if spec == "builtin":
            return cls(HFTokenizer.from_str(_builtin_json(vocab_size)), f"builtin-{vocab_size}")
        path = Path(spec).expanduser()
        if (path / "encoder.json").is_file() and (path / "vocab.bpe").is_file():
            return cls(_gpt2_from_files(path), f"gpt2-bpe:{path.resolve()}")
        if (path / "tokenizer.json").is_file():
            return cls(HFTokenizer.from_file(str(path / "tokenizer.json")), str(path.resolve()),
                       _configured_eos(path))
        if path.is_dir() and not (path / "tokenizer_config.json").is_file():
            raise ConfigError(f"model.tokenizer: {spec}: the folder holds neither GPT-2's encoder.json "
                              "+ vocab.bpe nor a tokenizer.json")
        if not path.exists() and looks_like_path(spec):
            raise ConfigError(f"model.tokenizer: {spec}: no such folder")
        try:  # a Hugging Face name or folder (fetched from the hub only when the user names one)
            from transformers import AutoTokenizer

            auto = AutoTokenizer.from_pretrained(spec)
            return cls(auto.backend_tokenizer, spec, auto.eos_token or EOS)
        except Exception as e:  # noqa: BLE001 - any failure here is a bad tokenizer setting
            raise ConfigError(f"model.tokenizer: cannot load {spec!r} "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:160]})") from None

    @classmethod
    def from_json(cls, text: str, source: str, eos_token: str = EOS) -> "Tokenizer":
        """Rebuild a saved tokenizer (added tokens included) exactly."""
        return cls(HFTokenizer.from_str(text), source, eos_token)

    def to_json(self) -> str:
        return self.hf.to_str()

    # ------------------------------------------------------------------ tokens
    def _add(self, token: str) -> int:
        if self.hf.token_to_id(token) is None:
            self.hf.add_special_tokens([token])
        return self.hf.token_to_id(token)

    def add_task(self, task: str) -> int:
        """The id of `__{task}__`, added if new (a no-op for a known task, as LAMOL)."""
        return self._add(task_token(task))

    @property
    def lamol_start(self) -> int:
        """The first of LAMOL's rows: ids below it are the base vocabulary's (a pretrained model's)."""
        return min(self.ids.ans, self.ids.pad, self.ids.unk)

    def task_id(self, task: str) -> int | None:
        return self.hf.token_to_id(task_token(task))

    def __len__(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=False)

    def base_fingerprint(self) -> str:
        """Identifies the base vocabulary + LAMOL tokens: teachers and students must share it."""
        vocab = sorted((t, i) for t, i in self.hf.get_vocab(with_added_tokens=True).items()
                       if not (t.startswith("__") and t.endswith("__") and t not in ADDED))
        return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]


def _configured_eos(folder: Path) -> str:
    """The EOS a Hugging Face tokenizer folder names in its tokenizer_config.json (else GPT-2's)."""
    f = folder / "tokenizer_config.json"
    if not f.is_file():
        return EOS
    try:
        eos = json.loads(f.read_text(encoding="utf-8")).get("eos_token")
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"model.tokenizer: {f}: not valid JSON") from None
    if isinstance(eos, dict):  # {"content": "</s>", ...} in older files
        eos = eos.get("content")
    return eos if isinstance(eos, str) and eos else EOS


def _gpt2_from_files(folder: Path) -> HFTokenizer:
    """GPT-2's BPE from OpenAI's encoder.json + vocab.bpe (byte-identical to HF's gpt2 files)."""
    tok = HFTokenizer(models.BPE.from_file(str(folder / "encoder.json"), str(folder / "vocab.bpe")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS])  # already id 50256 in the vocabulary; marks it special
    return tok


@functools.lru_cache(maxsize=4)
def _builtin_json(vocab_size: int) -> str:
    from .data.synthetic import builtin_corpus

    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(builtin_corpus(), trainer=trainer)
    return tok.to_str()
