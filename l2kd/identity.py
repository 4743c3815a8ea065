"""What identifies a trial, a teacher and a result: the one place with these rules.

Three identities, each read from the marks on the config's fields (l2kd.config: `outside`,
`added_later`, `stored_as`), so a new setting is placed by marking it where it is defined:
- a trial's: its config hash, which a run folder's results and checkpoints carry; a cell or a trial
  started again with other settings is refused (the settings that differ are named);
- a teacher's: its key, the content hash in its folder's name `<task>-<key>` (l2kd.teachers);
- a result's: the fields that must agree for results to share one report table (l2kd.report.load).
Settings added after identities were first stored leave them while unset, so the hashes and keys of
folders users already have stay the same (tests/test_identity.py holds some, recorded before).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel

from .config import RESULT, TEACHER, TRIAL, TrialConfig
from .data import split_path
from .io import file_sha256, read_json, stable_hash
from .tokenizer import Tokenizer


# --------------------------------------------------------------------------- the marks
def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The config model a field holds (through `X | None`), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _section_model(arg)
        if found is not None:
            return found
    return None


def _marked(model: type[BaseModel] = TrialConfig, prefix: tuple[str, ...] = ()) -> Iterator[tuple]:
    """(path, default, mark) of every field of `model` and of the config sections inside it."""
    for name, info in model.model_fields.items():
        path = prefix + (name,)
        yield path, info.default, info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        section = _section_model(info.annotation)
        if section is not None and section is not model:
            yield from _marked(section, path)


def _in(mark: dict[str, Any], identity: str) -> bool:
    part = mark.get("identity", True)
    return part if isinstance(part, bool) else part.get(identity, True)


@functools.lru_cache(maxsize=None)
def fields_outside(identity: str) -> frozenset[tuple[str, ...]]:
    """The field paths that are not part of `identity` (TRIAL, TEACHER or RESULT)."""
    return frozenset(path for path, _, mark in _marked() if not _in(mark, identity))


@functools.lru_cache(maxsize=None)
def _later() -> tuple[tuple[tuple[str, ...], Any], ...]:
    return tuple((path, default) for path, default, mark in _marked() if mark.get("added_later"))


@functools.lru_cache(maxsize=None)
def _stored() -> tuple[tuple[tuple[str, ...], Any, Any], ...]:
    return tuple((path, default, mark["stored_as"]) for path, default, mark in _marked()
                 if "stored_as" in mark)


def _parent(config: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    node: Any = config
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def as_stored(config: dict[str, Any]) -> dict[str, Any]:
    """A config dict as it joins an identity, changed in place: a setting added later is left out
    while it holds its default (or is missing); a setting whose default changed after identities
    were stored joins at the stored default while it holds today's."""
    for path, default in _later():
        part = _parent(config, path)
        if part is not None and part.get(path[-1], default) == default:
            part.pop(path[-1], None)
    for path, default, stored in _stored():
        part = _parent(config, path)
        if part is not None and part.get(path[-1]) == default:
            part[path[-1]] = stored
    return config


def _identity_dict(config: dict[str, Any], identity: str) -> dict[str, Any]:
    d = copy.deepcopy(config)
    for path in fields_outside(identity):
        part = _parent(d, path)
        if part is not None:
            part.pop(path[-1], None)
    return as_stored(d)


# --------------------------------------------------------------------------- a trial
def trial_identity(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """What identifies a trial's work (its name and display settings excluded)."""
    return _identity_dict(cfg_dict, TRIAL)


def config_hash(cfg: TrialConfig) -> str:
    return stable_hash(trial_identity(cfg.to_dict()))


def changed_settings(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two trial identities."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_settings(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} ({a!r} -> {b!r})")
    return out


def settings_diff(old_config: dict[str, Any], new_config: dict[str, Any]) -> str:
    """The settings that tell two trial configs apart, up to three, for an error message."""
    changed = changed_settings(trial_identity(old_config), trial_identity(new_config))
    return "; ".join(changed[:3]) + ("; ..." if len(changed) > 3 else "")


# --------------------------------------------------------------------------- a teacher
@functools.lru_cache(maxsize=256)
def _sha(path: Path, mtime: float, size: int | None = None) -> str:
    return file_sha256(path)


def content_hash(path: Path) -> str:
    """sha256 of a file, hashed once while its size and modification time stay the same."""
    st = Path(path).stat()
    return _sha(Path(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _tokenizer_fingerprint(spec: str, pretrained: str | None, vocab: int) -> str:
    return Tokenizer.load(spec, pretrained, vocab).base_fingerprint()


def teacher_identity(tcfg: TrialConfig) -> dict[str, Any]:
    """Everything that determines a teacher's weights and scores, from its single-task config
    (l2kd.teachers.store.teacher_config): its settings, its data files by content and its
    tokenizer by vocabulary."""
    d = _identity_dict(tcfg.to_dict(), TEACHER)
    (task,) = d.pop("tasks")
    m = tcfg.model
    out = {"task": task, "files": {split: content_hash(split_path(task, split, tcfg.data))
                                   for split in ("train", "test")},
           **d, "tokenizer": _tokenizer_fingerprint(m.tokenizer, m.pretrained, m.builtin_vocab_size)}
    base_manifest = Path(m.pretrained).expanduser() / "manifest.json" if m.pretrained else None
    if base_manifest is not None and base_manifest.is_file():
        # a base made by `cli.py pretrain`: identified by its settings too, so a base pretrained
        # again into the same folder with other settings does not reuse the old one's teachers
        out["base"] = read_json(base_manifest).get("config_hash")
    return out


def teacher_key(tcfg: TrialConfig, identity: dict[str, Any] | None = None) -> str:
    """The teacher's key, from its identity (computed here unless given)."""
    return stable_hash(teacher_identity(tcfg) if identity is None else identity, 12)


def teacher_folder_name(tcfg: TrialConfig, identity: dict[str, Any] | None = None) -> str:
    """`<task>-<key>`: the teacher's folder in a store."""
    (task,) = tcfg.tasks
    return f"{task}-{teacher_key(tcfg, identity)}"


# --------------------------------------------------------------------------- a result
def result_identity(flat_config: dict[str, Any]) -> dict[str, Any]:
    """From a result's flattened config (dotted keys, plus its tasks' `primary.<task>` metrics): the
    fields that must agree for results to share a table. A field of a config section takes part
    unless marked outside RESULT; the order, method and seed are the table's own keys."""
    sections, ignored = _result_fields()
    return {k: v for k, v in flat_config.items() if k.split(".", 1)[0] in sections and k not in ignored}


@functools.lru_cache(maxsize=None)
def _result_fields() -> tuple[frozenset[str], frozenset[str]]:
    """(the top-level keys whose fields take part, the dotted fields that do not)."""
    outside = fields_outside(RESULT)
    top = {path[0] for path, _, _ in _marked() if len(path) == 1}
    sections = top - {p[0] for p in outside if len(p) == 1}
    return frozenset(sections | {"primary"}), frozenset(".".join(p) for p in outside)
