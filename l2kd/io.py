"""Atomic file writes and content hashes. A crash never leaves half a result or checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


# The process's umask, read once at import (reading it means setting it). mkstemp and mkdtemp create
# owner-only files and folders; results on shared storage must be readable as any file written there.
_UMASK = os.umask(0)
os.umask(_UMASK)

# what `_tmp_sibling` and `atomic_dir` name their temporaries: .NAME.<8 random characters>[.tmp]
_LEFTOVER_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_LEFTOVER_DIR = re.compile(r"^\..+\.([a-z0-9_]{8}|old)$")


def file_in_the_way(folder: str | os.PathLike) -> Path | None:
    """The file (not a folder) at `folder` or at its nearest existing parent, which would stop the
    folder from being created; None when there is none."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None


def writable_problem(folder: str | os.PathLike) -> str | None:
    """None when files can be created in `folder` (or, while it does not exist, in its nearest
    existing parent); else why not (a read-only mount, no permission). Tried by creating a file:
    os.access misses a read-only network or bind mount for root and answers for the caller only."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        return None  # file_in_the_way's case, reported where the folder is made
    try:
        fd, probe = tempfile.mkstemp(prefix=".l2kd-write-check.", suffix=".tmp", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"{existing}: cannot write here ({e.strerror or type(e).__name__})"
    return None


def looks_like_path(spec: str) -> bool:
    """A setting that may name a local folder or a hub model and is spelled as a path."""
    return spec.startswith((".", "/", "~"))


def _tmp_sibling(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    return Path(tmp)


def remove_leftovers(folder: str | os.PathLike, dirs_in: tuple[str, ...] = ()) -> list[Path]:
    """Remove what atomic writes killed half-way (SIGKILL, a lost node) left under `folder`: their
    temporary files anywhere below it, and their temporary folders in the subfolders `dirs_in`.
    Nothing else matches their names. Only for a folder no other process is writing into."""
    folder = Path(folder)
    gone = [p for p in folder.rglob(".*.tmp") if p.is_file() and _LEFTOVER_FILE.match(p.name)]
    for sub in dirs_in:
        gone += [p for p in (folder / sub).glob(".*") if p.is_dir() and _LEFTOVER_DIR.match(p.name)]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return gone


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)`, fsync, then rename onto `path` (atomic on POSIX)."""
    path = Path(path)
    tmp = _tmp_sibling(path)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=1, ensure_ascii=False, default=_jsonable) + "\n")


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> Path:
    text = "".join(json.dumps(r, ensure_ascii=False, default=_jsonable) + "\n" for r in rows)
    return write_text(path, text)


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _jsonable(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_dir(final: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """Build a directory under a temporary name with `fill(tmp_dir)`, then rename it into place.

    An existing directory at `final` is replaced only after the new one is complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        fill(tmp)
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any, length: int = 16) -> str:
    """A content hash of a JSON-able object, independent of dict key order."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
